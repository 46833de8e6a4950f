"""A small lmforge model pretrained on the embedded corpus, shared by the post-training tests (SFT, reward model,
DPO, PPO, GRPO): built once per machine (about a minute on 2 cores) and cached in the temp directory, keyed by its
config, so every test that needs "a small pretrained model" starts from the same one instead of a random one.
"""

import json
from pathlib import Path

from lmforge.train.config import TrainConfig
from lmforge.train.pretrain import pretrain
from tests.machine_cache import cached_dir

CONFIG = dict(preset="pretrain-1m", corpus_documents=12_000, seq_len=128, batch_size=16, max_steps=300, lr=3e-3,
              warmup_steps=20, eval_every=100, sample_every=1000, checkpoint_every=1000, progress=False,
              precision="fp32", seed=0, threads=None)


def pretrained_tiny_dir() -> Path:
    """A Hugging Face directory (config.json, model.safetensors, tokenizer with the ChatML template)."""
    def build(root: Path) -> None:
        pretrain(TrainConfig.from_dict({"out": str(root / "run"), **CONFIG}), log=lambda message: None)

    return cached_dir("pretrained-tiny", json.dumps(CONFIG, sort_keys=True), build) / "run" / "hf"
