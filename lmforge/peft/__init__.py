"""Parameter-efficient fine-tuning: LoRA (also over an int8/int4 frozen base, QLoRA-style), prompt tuning,
P-tuning v2 prefixes and bottleneck adapters, applied to an lmforge model from outside, with PEFT-format I/O.
Both the trainers and the engine may use them, so this layer sits below both.
"""
