"""Fixtures of the training tests: a small packed slice of the embedded corpus and a tiny model config."""

import pytest

from lmforge.model import get_preset
from lmforge.train.config import TrainConfig
from tests.packed_corpus import pack_corpus


@pytest.fixture(scope="session")
def packed(tmp_path_factory):
    """(data dir, tokenizer dir, tokenizer): 400 corpus documents, a 320-token byte-BPE, rows of 32 tokens."""
    root = tmp_path_factory.mktemp("packed")
    return pack_corpus(root, documents=400, seed=3, vocab_size=320)


def tiny_model_config(vocab_size: int):
    return get_preset("tiny-llama", vocab_size=vocab_size, dim=32, ffn_dim=64, max_seq_len=64)


def tiny_train_config(tmp_path, **overrides) -> TrainConfig:
    base = dict(out=str(tmp_path / "run"), batch_size=4, grad_accum=2, max_steps=8, lr=3e-3, warmup_steps=2,
                eval_every=4, eval_batches=2, sample_every=1000, sample_tokens=4, log_every=1,
                checkpoint_every=2, keep_checkpoints=2, progress=False, peak_tflops=1.0, device="cpu",
                export_hf=False, precision="fp32")
    return TrainConfig.from_dict({**base, **overrides})
