"""Parameter-efficient fine-tuning: LoRA (also over an int8/int4 frozen base, QLoRA-style), prompt tuning,
P-tuning v2 prefixes and bottleneck adapters, applied to an lmforge model from outside, with PEFT-format I/O.
Both the trainers and the engine may use them, so this layer sits below both.
"""

from lmforge.peft.adapters import BottleneckAdapter, adapter_modules, apply_adapters, remove_adapters
from lmforge.peft.lora import (
    LoraConfig,
    LoraLinear,
    apply_lora,
    lora_disabled,
    lora_layers,
    lora_state_dict,
    merge_lora,
    unload_lora,
    unmerge_lora,
)
from lmforge.peft.peft_io import load_adapter, read_adapter_config, save_adapter
from lmforge.peft.prefix_tuning import PrefixCache, PrefixTuning
from lmforge.peft.prompt_tuning import PromptTuning

__all__ = ["BottleneckAdapter", "LoraConfig", "LoraLinear", "PrefixCache", "PrefixTuning", "PromptTuning",
           "adapter_modules", "apply_adapters", "apply_lora", "load_adapter", "lora_disabled", "lora_layers",
           "lora_state_dict", "merge_lora", "read_adapter_config", "remove_adapters", "save_adapter", "unload_lora",
           "unmerge_lora"]
