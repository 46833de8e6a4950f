"""Weight-only quantization: int8 per-row and int4 group-wise linears (`int_linear`), and quantization-aware
training with a straight-through estimator (`qat`)."""
