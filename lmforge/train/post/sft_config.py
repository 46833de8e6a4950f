"""SFTConfig: every knob of a supervised fine-tuning run (`lmforge sft`) as one frozen, validated dataclass,
loadable from TOML; the optimisation fields map onto the pretraining TrainConfig, whose Trainer runs the loop.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.common.config_io import ConfigIO
from lmforge.common.errors import ConfigError
from lmforge.train.config import DEVICES, PRECISIONS, SCHEDULES, TrainConfig
from lmforge.train.post.sft_data import FORMATS
from lmforge.train.post.sft_mask import TRUNCATIONS


@dataclass(frozen=True)
class SFTConfig(ConfigIO):
    model: str = ""  # the model to fine-tune: a run's hf/ dir, a Hugging Face dir, a .gguf, or an embedded name
    data: tuple[str, ...] = ()  # chat data files; empty: the embedded instruction task (lmforge.data.tasks)
    format: str = "auto"  # auto | messages | alpaca | sharegpt (auto: detected per file)
    out: str = "runs/sft"  # run directory: metrics.jsonl, PNG curves, report.md, checkpoints, hf/ export
    seed: int = 0
    resume: bool = False
    fresh: bool = False  # start from step 0 even over existing checkpoints (moved aside to out/checkpoints.old)
    threads: int | None = None
    device: str = "auto"
    precision: str = "auto"
    # optimisation (full fine-tuning of every weight)
    max_steps: int = 200
    batch_size: int = 16  # rows per micro-batch
    grad_accum: int = 1
    seq_len: int = 256  # tokens per row (a longer conversation is truncated: see truncation)
    lr: float = 1e-4
    min_lr_ratio: float = 0.1
    schedule: str = "cosine"
    warmup_steps: int = 10
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    # parameter-efficient: LoRA (lora_r > 0) trains only low-rank updates of lora_targets; base_bits 8 or 4 first
    # quantizes the frozen base to int8 / int4 (QLoRA-style). 0 / 0: full fine-tuning of every weight.
    lora_r: int = 0
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")  # module names, or ("all-linear",)
    base_bits: int = 0  # 0 (float base) | 8 | 4 (group 32); needs lora_r > 0
    # data handling
    pack: bool = True  # several conversations per row, attention kept inside each (segment ids)
    truncation: str = "right"  # right: keep a long conversation's first seq_len + 1 tokens | drop: skip it
    neftune_alpha: float = 0.0  # NEFTune noise scale (e.g. 5); 0 disables it
    train_examples: int = 4000  # embedded task: training conversations generated
    task_seed: int = 0  # embedded task: the generator's stream
    # evaluation: exact match of greedy answers on held-out conversations, before and after
    eval_examples: int = 100  # held out (embedded task: its eval split; own data: taken from the files)
    max_new_tokens: int = 32
    eval_every: int = 50  # held-out loss on the assistant tokens every this many steps
    # logging and output
    log_every: int = 5
    checkpoint_every: int = 1000
    keep_checkpoints: int = 1
    progress: bool = True
    export_hf: bool = True  # write out/hf (a Hugging Face directory `lmforge generate` loads)

    def __post_init__(self) -> None:
        if isinstance(self.data, str | list):
            object.__setattr__(self, "data", (self.data,) if isinstance(self.data, str) else tuple(self.data))
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError("SFTConfig.model is required: a model directory, .gguf file or embedded model name")
        for name in ("max_steps", "batch_size", "grad_accum", "seq_len", "train_examples", "eval_examples",
                     "max_new_tokens", "eval_every", "log_every", "checkpoint_every", "keep_checkpoints"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"SFTConfig.{name} must be a positive integer, got {value!r}")
        for name in ("seed", "warmup_steps", "task_seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"SFTConfig.{name} must be an integer >= 0, got {value!r}")
        for name, allowed in (("format", FORMATS), ("truncation", TRUNCATIONS), ("schedule", SCHEDULES),
                              ("precision", PRECISIONS), ("device", DEVICES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"SFTConfig.{name}={getattr(self, name)!r}; allowed: {', '.join(allowed)}")
        if not self.lr > 0:
            raise ConfigError(f"SFTConfig.lr must be > 0, got {self.lr!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"SFTConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("SFTConfig.weight_decay and grad_clip must be >= 0")
        if self.neftune_alpha < 0:
            raise ConfigError(f"SFTConfig.neftune_alpha must be >= 0 (0 disables NEFTune), got {self.neftune_alpha!r}")
        if isinstance(self.lora_targets, str | list):
            targets = (self.lora_targets,) if isinstance(self.lora_targets, str) else tuple(self.lora_targets)
            object.__setattr__(self, "lora_targets", targets)
        if isinstance(self.lora_r, bool) or not isinstance(self.lora_r, int) or self.lora_r < 0:
            raise ConfigError(f"SFTConfig.lora_r must be an integer >= 0 (0: full fine-tuning), got {self.lora_r!r}")
        if self.base_bits not in (0, 8, 4):
            raise ConfigError(f"SFTConfig.base_bits must be 0, 8 or 4, got {self.base_bits!r}")
        if self.base_bits and not self.lora_r:
            raise ConfigError("SFTConfig.base_bits quantizes a frozen base for LoRA: set lora_r > 0 as well")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"SFTConfig.threads must be >= 1 or unset, got {self.threads!r}")
        if self.resume and self.fresh:
            raise ConfigError("SFTConfig.resume and fresh exclude each other: continue the run, or start over")

    def train_config(self) -> TrainConfig:
        """The pretraining Trainer's view of this run (no sample generations; the hf export is done by sft)."""
        shared = ("out", "seed", "resume", "fresh", "threads", "device", "precision", "max_steps", "batch_size",
                  "grad_accum", "seq_len", "lr", "min_lr_ratio", "schedule", "warmup_steps", "weight_decay",
                  "grad_clip", "eval_every", "log_every", "checkpoint_every", "keep_checkpoints", "progress")
        return TrainConfig(**{k: getattr(self, k) for k in shared}, eval_batches=10**6, sample_prompts=(),
                           sample_every=self.max_steps, export_hf=False)

