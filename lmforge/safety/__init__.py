"""Safety layer: input/output rails, moderation, red-team probes."""
