"""SFTConfig: every knob of a supervised fine-tuning run (`lmforge sft`) as one frozen, validated dataclass,
loadable from TOML: the run at the top, then the chat data, the LoRA / QLoRA adapter and the sections every trainer
shares (config_sections.py), which map onto the pretraining TrainConfig whose Trainer runs the loop. Torch-free, so
the CLI builds its flags from it without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.common.config_fields import leaves, section, setting
from lmforge.common.config_io import ConfigIO, flat_dict
from lmforge.common.errors import ConfigError
from lmforge.data.mixing import parse_mix_entry
from lmforge.train.config import PRECISIONS, TrainConfig
from lmforge.train.config_sections import (
    BatchConfig,
    CheckpointConfig,
    LoggingConfig,
    OptimConfig,
    ScheduleConfig,
    check_between,
    check_device,
    check_ints,
    device_setting,
)
from lmforge.train.post.sft_data import FORMATS

TRUNCATIONS = ("right", "drop")


@dataclass(frozen=True)
class ChatDataConfig:
    """Chat data files (messages JSONL, Alpaca, ShareGPT) or the embedded instruction task, and how rows are made."""

    data: tuple[str, ...] = setting((), "Chat data file (repeatable): JSON lines or a JSON array. Default: the "
                                    "embedded instruction task.", short="-d")
    format: str = setting("auto", "auto | messages | alpaca | sharegpt (auto detects it per file).")
    seq_len: int = setting(256, "Tokens per row; a longer conversation is truncated (see --truncation).")
    pack: bool = setting(True, "Pack several conversations per row (attention stays inside each) or one per row.")
    truncation: str = setting("right", "right: keep a long conversation's first seq_len + 1 tokens | drop: skip it.")
    mix: tuple[str, ...] = setting((), "Mix in another chat data file: FILE:WEIGHT (repeatable); the run's own data "
                                   "gets 1 - the weights. Deterministic and resumable.", flag="--mix")
    train_examples: int = setting(4000, "Embedded task: training conversations.")
    task_seed: int = setting(0, "Embedded task: generator seed.")

    def __post_init__(self) -> None:
        if isinstance(self.data, str | list):
            object.__setattr__(self, "data", (self.data,) if isinstance(self.data, str) else tuple(self.data))
        object.__setattr__(self, "mix", tuple(self.mix))  # a TOML list -> the frozen tuple
        weights = [parse_mix_entry(entry)[1] for entry in self.mix]
        if sum(weights) >= 1:
            raise ConfigError(f"mix weights {list(self.mix)} sum to {sum(weights):g}; they must leave a share (< 1 in "
                              f"total) for the run's own data")
        check_ints(self, 1, "train_examples", "seq_len")
        check_ints(self, 0, "task_seed")
        for name, allowed in (("format", FORMATS), ("truncation", TRUNCATIONS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"ChatDataConfig.{name}={getattr(self, name)!r}; allowed: {', '.join(allowed)}")


@dataclass(frozen=True)
class AdapterConfig:
    """LoRA (lora_r > 0) trains low-rank updates of lora_targets only; base_bits 8 or 4 first quantizes the frozen
    base to int8 / int4 (QLoRA-style). lora_r 0: full fine-tuning of every weight."""

    lora_r: int = setting(0, "LoRA rank; 0 fine-tunes every weight. The adapter is saved in PEFT format in "
                          "out/adapter, the merged model in out/hf.")
    lora_alpha: float = setting(16.0, "LoRA scale numerator (update = alpha/r BA).")
    lora_dropout: float = setting(0.0, "Dropout on the LoRA input.")
    lora_targets: tuple[str, ...] = setting(("q_proj", "k_proj", "v_proj", "o_proj"), "Module name to adapt "
                                            "(repeatable; all-linear for every one).", flag="--lora-target")
    base_bits: int = setting(0, "QLoRA-style: quantize the frozen base to 8 or 4 bits (int4 group 32) before adding "
                             "LoRA; only out/adapter is written.")

    def __post_init__(self) -> None:
        if isinstance(self.lora_targets, str | list):
            targets = (self.lora_targets,) if isinstance(self.lora_targets, str) else tuple(self.lora_targets)
            object.__setattr__(self, "lora_targets", targets)
        check_ints(self, 0, "lora_r")
        if self.base_bits not in (0, 8, 4):
            raise ConfigError(f"AdapterConfig.base_bits must be 0, 8 or 4, got {self.base_bits!r}")
        if self.base_bits and not self.lora_r:
            raise ConfigError("base_bits quantizes a frozen base for LoRA: set lora_r > 0 as well")


@dataclass(frozen=True)
class SFTConfig(ConfigIO):
    model: str = setting(help="Model to fine-tune: a run's hf/ dir, a Hugging Face dir, a .gguf file or an embedded "
                         "name (smollm2-135m).", short="-m")
    out: str = setting("runs/sft", "Run directory (metrics, curves, report.md, checkpoints, hf/).", short="-o")
    seed: int = setting(0, "Seed of the data order, shuffles and held-out split.")
    resume: bool = setting(False, "Continue from the newest checkpoint in --out (only corrupt ones: refused, see "
                           "--fresh).")
    fresh: bool = setting(False, "Start from step 0 even where --out holds checkpoints: they move to "
                          "OUT/checkpoints.old (nothing is deleted).")
    threads: int | None = setting(None, "torch CPU threads (default: torch's).")
    device: str = device_setting()
    precision: str = setting("auto", "auto | fp32 | bf16 | fp16.")
    neftune_alpha: float = setting(0.0, "NEFTune embedding noise (e.g. 5); 0 disables it.")
    # evaluation: exact match of greedy answers on held-out conversations, before and after
    eval_examples: int = setting(100, "Held-out conversations for exact match (own data: taken from it, at most a "
                                 "fifth).")
    max_new_tokens: int = setting(32, "Answer length limit in evaluation.")
    export_hf: bool = setting(True, "Write out/hf (a Hugging Face directory `lmforge generate` loads) at the end.")
    data: ChatDataConfig = section(ChatDataConfig)
    lora: AdapterConfig = section(AdapterConfig)
    optim: OptimConfig = section(OptimConfig, lr=1e-4, weight_decay=0.0)
    schedule: ScheduleConfig = section(ScheduleConfig, max_steps=200, warmup_steps=10)
    batch: BatchConfig = section(BatchConfig)
    checkpoint: CheckpointConfig = section(CheckpointConfig, checkpoint_every=1000, keep_checkpoints=1)
    logging: LoggingConfig = section(LoggingConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError("SFTConfig.model is required: a model directory, .gguf file or embedded model name")
        check_ints(self, 1, "eval_examples", "max_new_tokens")
        check_ints(self, 0, "seed")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"SFTConfig.precision={self.precision!r}; allowed: {', '.join(PRECISIONS)}")
        check_device(self)
        check_between(self, "neftune_alpha", 0)
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"SFTConfig.threads must be >= 1 or unset, got {self.threads!r}")
        if self.resume and self.fresh:
            raise ConfigError("SFTConfig.resume and fresh exclude each other: continue the run, or start over")

    def train_config(self) -> TrainConfig:
        """The pretraining Trainer's view of this run (no sample generations; the hf export is done by sft)."""
        knobs = flat_dict(self)
        own = ("export_hf", "mix")  # sft exports itself; its mix is of chat files (sft_mix.py), not packed shards
        shared = {name: knobs[name] for name in leaves(TrainConfig) if name in knobs and name not in own}
        return TrainConfig.from_dict({**shared, "eval_batches": 10**6, "sample_prompts": (),
                                      "sample_every": self.schedule.max_steps, "export_hf": False})
