"""A small lmforge model pretrained on the embedded corpus, shared by the post-training tests (SFT, reward model,
DPO, PPO, GRPO): built once per machine (about a minute on 2 cores) and cached in the temp directory, keyed by its
config, so every test that needs "a small pretrained model" starts from the same one instead of a random one.
"""

import fcntl
import hashlib
import json
import os
import tempfile
from pathlib import Path

from lmforge.train.config import TrainConfig
from lmforge.train.pretrain import pretrain

CONFIG = dict(preset="pretrain-1m", corpus_documents=12_000, seq_len=128, batch_size=16, max_steps=300, lr=3e-3,
              warmup_steps=20, eval_every=100, sample_every=1000, checkpoint_every=1000, progress=False,
              precision="fp32", seed=0, threads=None)


def pretrained_tiny_dir() -> Path:
    """A Hugging Face directory (config.json, model.safetensors, tokenizer with the ChatML template)."""
    key = hashlib.sha256(json.dumps(CONFIG, sort_keys=True).encode()).hexdigest()[:12]
    root = Path(os.environ.get("LMFORGE_TEST_CACHE", tempfile.gettempdir())) / f"lmforge-pretrained-tiny-{key}"
    hf = root / "run" / "hf"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "lock", "w") as lock:  # concurrent test processes build it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "done").exists():
            pretrain(TrainConfig.from_dict({"out": str(root / "run"), **CONFIG}), log=lambda message: None)
            (root / "done").write_text("ok\n")
    return hf
