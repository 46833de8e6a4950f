"""TrainConfig: every knob of a pretraining run as one frozen, validated dataclass, loadable from TOML.

Each `lmforge pretrain` flag maps to one field (`--set FIELD=VALUE` reaches the rest); the config is saved
next to the run's checkpoints so a resumed run can check it is the same run.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass

from lmforge.common.config_io import ConfigIO, check_fields
from lmforge.common.errors import ConfigError

SCHEDULES = ("cosine", "wsd", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
PARALLEL = ("none", "ddp", "fsdp")


@dataclass(frozen=True)
class TrainConfig(ConfigIO):
    # run
    out: str = "runs/pretrain"  # run directory: checkpoints, metrics.jsonl, plots, report, hf export
    seed: int = 0
    resume: bool = False  # continue from the newest valid checkpoint in out/checkpoints
    fresh: bool = False  # start from step 0 even over existing checkpoints (moved aside to out/checkpoints.old)
    threads: int | None = None  # torch CPU threads (None: torch's default)
    device: str = "auto"  # auto | cpu | cuda
    # model
    preset: str = "pretrain-1m"  # a model preset name (lmforge info lists them); vocab comes from the tokenizer
    model_config: str | None = None  # a ModelConfig JSON file, instead of the preset
    # data: the embedded synthetic corpus unless data_dir points at packed shards (lmforge data pack)
    data_dir: str | None = None
    tokenizer_dir: str | None = None  # needed with data_dir; else a byte-BPE is trained and cached in out/
    corpus_documents: int = 40_000
    corpus_seed: int = 0
    vocab_size: int = 2048  # of the byte-level BPE trained on the embedded corpus
    seq_len: int = 128
    val_fraction: float = 0.01
    # optimisation
    batch_size: int = 16  # sequences per micro-batch (per rank)
    grad_accum: int = 1  # micro-batches per optimizer step
    max_steps: int = 200
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # final lr = lr * min_lr_ratio
    schedule: str = "cosine"  # cosine | wsd | constant (all after linear warmup)
    warmup_steps: int = 20
    decay_fraction: float = 0.2  # WSD: share of the steps spent in the final linear decay
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping (the norm is still logged)
    # fp32 | bf16 (autocast, CPU or GPU) | fp16 (autocast + loss scaling, GPU only) | auto: bf16 where the
    # hardware has it (CUDA with bf16, or a CPU with AMX / AVX512-BF16), else fp32
    precision: str = "auto"
    activation_checkpointing: bool = False  # recompute each block in backward (torch.utils.checkpoint)
    compile: bool = False  # torch.compile the model
    # objectives beside next-token loss (objectives.py), switched on by the model config: the MoE balance loss
    # (ModelConfig.moe.aux_loss_coef), MTP (n_mtp_modules), masked LM (encoder presets) and, for routers with a
    # correction bias (DeepSeek-V3), the aux-loss-free update bias_e += rate * sign(mean load - load_e)
    router_bias_rate: float = 1e-3
    mlm_probability: float = 0.15  # share of tokens that become masked-LM targets (encoders)
    max_nonfinite: int = 5  # abort after this many non-finite steps in a row (each is skipped)
    # evaluation, logging, checkpoints
    eval_every: int = 50
    eval_batches: int = 10
    sample_every: int = 100
    sample_tokens: int = 48
    sample_prompts: tuple[str, ...] = ("Once upon a time", "Q: What is 7 + 5?\nA:", "def add_3(x):")
    log_every: int = 5
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    progress: bool = True  # a progress bar with ETA (rich)
    tensorboard: bool = False  # also write TensorBoard scalars (needs the `tensorboard` package)
    peak_tflops: float | None = None  # for MFU; None measures a matmul peak at start
    export_hf: bool = True  # write out/hf (config.json, model.safetensors, tokenizer) at the end
    # data parallelism under torchrun: none | ddp (replicated weights) | fsdp (FSDP2, sharded weights and state)
    parallel: str = "none"
    # continued pretraining: start from a model's weights and tokenizer (instead of preset / model_config)
    init_from: str | None = None  # embedded model name, Hugging Face directory or .gguf file
    add_tokens: str | None = None  # with init_from: file of new tokens, one a line (embeddings: sub-token mean)
    train_text: str | None = None  # with init_from: UTF-8 text (documents split at blank lines) instead of the corpus

    def __post_init__(self) -> None:
        positive = ("corpus_documents", "vocab_size", "seq_len", "batch_size", "grad_accum", "max_steps",
                    "eval_every", "eval_batches", "sample_every", "log_every", "checkpoint_every",
                    "keep_checkpoints", "max_nonfinite")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"TrainConfig.{name} must be a positive integer, got {value!r}")
        for name in ("warmup_steps", "sample_tokens", "seed", "corpus_seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"TrainConfig.{name} must be an integer >= 0, got {value!r}")
        for name, allowed in (("schedule", SCHEDULES), ("precision", PRECISIONS), ("device", DEVICES),
                               ("parallel", PARALLEL)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"TrainConfig.{name}={getattr(self, name)!r}; allowed: {', '.join(allowed)}")
        if not self.lr > 0:
            raise ConfigError(f"TrainConfig.lr must be > 0, got {self.lr!r}")
        for name in ("min_lr_ratio", "decay_fraction", "beta1", "beta2"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"TrainConfig.{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.router_bias_rate < 0:
            raise ConfigError(f"TrainConfig.router_bias_rate must be >= 0, got {self.router_bias_rate!r}")
        if not 0 < self.mlm_probability < 1:
            raise ConfigError(f"TrainConfig.mlm_probability must be in (0, 1), got {self.mlm_probability!r}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"TrainConfig.val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if self.weight_decay < 0 or self.grad_clip < 0 or self.eps <= 0:
            raise ConfigError("TrainConfig.weight_decay and grad_clip must be >= 0 and eps > 0")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"TrainConfig.threads must be >= 1 or unset, got {self.threads!r}")
        if self.peak_tflops is not None and self.peak_tflops <= 0:
            raise ConfigError(f"TrainConfig.peak_tflops must be > 0 or unset, got {self.peak_tflops!r}")
        if self.resume and self.fresh:
            raise ConfigError("TrainConfig.resume and fresh exclude each other: continue the run, or start over")
        if self.data_dir is not None and self.tokenizer_dir is None:
            raise ConfigError("TrainConfig.data_dir needs tokenizer_dir (the tokenizer the shards were packed with)")
        for name in ("add_tokens", "train_text"):
            if getattr(self, name) is not None and self.init_from is None:
                raise ConfigError(f"TrainConfig.{name} needs init_from (the model whose tokenizer it extends/uses)")
        if isinstance(self.sample_prompts, list):
            object.__setattr__(self, "sample_prompts", tuple(self.sample_prompts))


def parse_assignment(text: str) -> tuple[str, object]:
    """`FIELD=VALUE` from the command line, VALUE parsed as a TOML value (bare words are strings)."""
    if "=" not in text:
        raise ConfigError(f"--set expects FIELD=VALUE, got {text!r}")
    key, value = (s.strip() for s in text.split("=", 1))
    check_fields(TrainConfig, {key: None})
    try:
        return key, tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return key, value
