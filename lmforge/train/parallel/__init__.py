"""Parallelism applied from outside the model (torchtitan's shape): a device mesh (pp, dp_replicate, dp_shard, tp),
tensor / sequence / expert parallelism with DTensor, pipeline stages with torch.distributed.pipelining, and FSDP2
or DDP for the data-parallel part, ZeRO stages and CPU offload picked by config (config.py)."""
