"""The one decode core: prefill, decode step, logits processors, the sampler, beam search, speculative decoding and
the caches with their attention backends. Below `train` and `engine`, so rollouts, evaluation and serving share it."""
