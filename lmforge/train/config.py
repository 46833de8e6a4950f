"""TrainConfig: every knob of a pretraining run as one frozen, validated dataclass, loadable from TOML.

The run-wide knobs sit at the top; the rest nest by concern: data (the corpus or packed shards), the sections every
trainer shares (optim, schedule, batch, checkpoint, logging; config_sections.py) and the sample generations.
Each knob is an `lmforge pretrain` flag (generated from this class); the config is saved next to the run's
checkpoints so a resumed run can check it is the same run.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.common.config_fields import section, setting
from lmforge.common.config_io import ConfigIO
from lmforge.common.errors import ConfigError
from lmforge.data.mixing import parse_mix_entry
from lmforge.train.config_sections import (
    SCHEDULES,
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
from lmforge.train.parallel.config import PARALLEL, ParallelConfig

__all__ = ["SCHEDULES", "PRECISIONS", "DEVICES", "PARALLEL", "TrainConfig", "CorpusDataConfig", "SampleConfig",
           "TrainLoggingConfig"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda", "cuda:N")  # check_device (config_sections.py) validates


@dataclass(frozen=True)
class CorpusDataConfig:
    """Pretraining data: the embedded synthetic corpus (and a byte-BPE trained on it), packed shards, or a text."""

    data_dir: str | None = setting(None, "Packed shards (lmforge data pack) instead of the embedded corpus; needs "
                                   "--tokenizer.")
    tokenizer_dir: str | None = setting(None, "Tokenizer the shards were packed with.", flag="--tokenizer")
    corpus_documents: int = setting(40_000, "Documents of the embedded corpus.")
    corpus_seed: int = setting(0, "Seed of the embedded corpus and of the shard packing.")
    vocab_size: int = setting(2048, "Byte-BPE vocabulary trained on the embedded corpus.")
    seq_len: int = setting(128, "Tokens per training sequence.")
    val_fraction: float = setting(0.01, "Share of the packed rows held out for validation.")
    train_text: str | None = setting(None, "With --init: UTF-8 text file to train on (documents split at blank "
                                     "lines) instead of the embedded corpus.")
    mix: tuple[str, ...] = setting((), "Mix in another source: PATH:WEIGHT, PATH a packed directory or 'corpus' (the "
                                   "embedded corpus, as replay during continued pretraining); repeatable; the run's "
                                   "own data gets 1 - the weights.", flag="--mix")

    def __post_init__(self) -> None:
        check_ints(self, 1, "corpus_documents", "vocab_size", "seq_len")
        check_ints(self, 0, "corpus_seed")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"CorpusDataConfig.val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if self.data_dir is not None and self.tokenizer_dir is None:
            raise ConfigError("data_dir needs tokenizer_dir (--tokenizer: the tokenizer the shards were packed with)")
        object.__setattr__(self, "mix", tuple(self.mix))  # a TOML list -> the frozen tuple
        weights = [parse_mix_entry(entry)[1] for entry in self.mix]
        if sum(weights) >= 1:
            raise ConfigError(f"mix weights {list(self.mix)} sum to {sum(weights):g}; they must leave a share (< 1 in "
                              f"total) for the run's own data")


@dataclass(frozen=True)
class TrainLoggingConfig(LoggingConfig):
    """The shared logging knobs, plus how much of the validation split an evaluation reads and the MFU's peak."""

    eval_batches: int = setting(10, "Held-out batches per evaluation.")
    peak_tflops: float | None = setting(None, "Peak TFLOP/s for MFU (default: a matmul peak measured at start).")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ints(self, 1, "eval_batches")
        if self.peak_tflops is not None and self.peak_tflops <= 0:
            raise ConfigError(f"TrainLoggingConfig.peak_tflops must be > 0 or unset, got {self.peak_tflops!r}")


@dataclass(frozen=True)
class SampleConfig:
    """Greedy generations from a few prompts during the run (in metrics.jsonl and the report)."""

    sample_every: int = setting(100, "Generate the sample prompts' continuations every N steps.")
    sample_tokens: int = setting(48, "Tokens per sample.")
    sample_prompts: tuple[str, ...] = setting(("Once upon a time", "Q: What is 7 + 5?\nA:", "def add_3(x):"),
                                              "Prompt to sample from (repeatable).", flag="--sample-prompt")

    def __post_init__(self) -> None:
        check_ints(self, 1, "sample_every")
        check_ints(self, 0, "sample_tokens")
        if isinstance(self.sample_prompts, list | str):
            prompts = (self.sample_prompts,) if isinstance(self.sample_prompts, str) else tuple(self.sample_prompts)
            object.__setattr__(self, "sample_prompts", prompts)


@dataclass(frozen=True)
class TrainConfig(ConfigIO):
    # run
    out: str = setting("runs/pretrain", "Run directory: checkpoints, metrics.jsonl, plots, report, hf export.",
                       short="-o")
    seed: int = setting(0, "Seed of the weights and the data order.")
    resume: bool = setting(False, "Continue from the newest valid checkpoint in --out (none yet: start; only corrupt "
                           "ones: refused, see --fresh).")
    fresh: bool = setting(False, "Start from step 0 even where --out holds checkpoints: they move to "
                          "OUT/checkpoints.old (nothing is deleted).")
    threads: int | None = setting(None, "torch CPU threads (default: torch's).")
    device: str = device_setting()
    # fp32 | bf16 (autocast, CPU or GPU) | fp16 (autocast + loss scaling; on a CPU emulated) | auto: bf16 where the
    # hardware has it (CUDA with bf16, or a CPU with AMX / AVX512-BF16), else fp32
    precision: str = setting("auto", "auto | fp32 | bf16 (autocast) | fp16 (autocast + GradScaler loss scaling; "
                             "for GPUs); auto: bf16 where the hardware has it, else fp32.")
    activation_checkpointing: bool = setting(False, "Recompute each block in backward (torch.utils.checkpoint).")
    compile: bool = setting(False, "torch.compile the model.")
    # model
    preset: str = setting("pretrain-1m", "Model preset (lmforge info lists them); vocab size comes from the "
                          "tokenizer.")
    model_config: str | None = setting(None, "ModelConfig JSON file instead of --preset.")
    # continued pretraining: start from a model's weights and tokenizer (instead of preset / model_config)
    init_from: str | None = setting(None, "Continue pretraining this model (embedded name, HF directory or .gguf): "
                                    "its weights and tokenizer replace --preset.", flag="--init")
    add_tokens: str | None = setting(None, "With --init: file of new tokens (one a line); their embeddings start at "
                                     "the mean of their old sub-tokens.")
    # objectives beside next-token loss (objectives.py), switched on by the model config: the MoE balance loss
    # (ModelConfig.moe.aux_loss_coef), MTP (n_mtp_modules), masked LM (encoder presets) and, for routers with a
    # correction bias (DeepSeek-V3), the aux-loss-free update bias_e += rate * sign(mean load - load_e)
    router_bias_rate: float = setting(1e-3, "Aux-loss-free MoE balancing: router bias update rate.")
    mlm_probability: float = setting(0.15, "Encoders: share of tokens that become masked-LM targets.")
    max_nonfinite: int = setting(5, "Abort after this many non-finite steps in a row (each is skipped).")
    export_hf: bool = setting(True, "Write OUT/hf (config.json, model.safetensors, tokenizer) at the end.")
    # sections
    data: CorpusDataConfig = section(CorpusDataConfig)
    optim: OptimConfig = section(OptimConfig)
    schedule: ScheduleConfig = section(ScheduleConfig)
    batch: BatchConfig = section(BatchConfig)
    checkpoint: CheckpointConfig = section(CheckpointConfig)
    logging: TrainLoggingConfig = section(TrainLoggingConfig)
    samples: SampleConfig = section(SampleConfig)
    parallel: ParallelConfig = section(ParallelConfig)  # --parallel, --tp, --pp, --zero, ... (parallel/config.py)

    def __post_init__(self) -> None:
        check_ints(self, 0, "seed")
        check_ints(self, 1, "max_nonfinite")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"TrainConfig.precision={self.precision!r}; allowed: {', '.join(PRECISIONS)}")
        check_device(self)
        check_between(self, "router_bias_rate", 0)
        if not 0 < self.mlm_probability < 1:
            raise ConfigError(f"TrainConfig.mlm_probability must be in (0, 1), got {self.mlm_probability!r}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"TrainConfig.threads must be >= 1 or unset, got {self.threads!r}")
        if self.resume and self.fresh:
            raise ConfigError("TrainConfig.resume and fresh exclude each other: continue the run, or start over")
        for name, value in (("add_tokens", self.add_tokens), ("train_text", self.data.train_text)):
            if value is not None and self.init_from is None:
                raise ConfigError(f"TrainConfig.{name} needs init_from (the model whose tokenizer it extends/uses)")
