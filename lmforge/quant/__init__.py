"""Quantization and compression: int8 per-row and int4 / int3 group-wise linears (`int_linear`, `group_grid`),
quantization-aware training (`qat`), the calibrated methods AWQ (`awq`), GPTQ (`gptq`) and SmoothQuant W8A8
(`smoothquant`) driven by `calibrated` over `calibration` data, and pruning (`prune`, `prune_recover`)."""
