"""The one decode core: prefill / decode step (step.py), the decode loop (generate.py), logits processors and the
one sampler (sampling.py), stop handling, beam search and speculative decoding built on the same step, and the
caches with their attention backends. Below `train` and `engine`, so rollouts, evaluation and serving share it."""
