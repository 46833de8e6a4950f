"""Training data for `lmforge pretrain`: the embedded synthetic corpus is generated, a byte-level BPE is
trained on it and the documents are packed into token shards, all cached in the run directory (reused while
the corpus settings match). The unigram entropy of the training tokens is recorded as the loss baseline.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from lmforge.common.errors import LmforgeError
from lmforge.data.corpus import CorpusConfig, corpus_documents, document_text, unigram_entropy
from lmforge.data.pack import INDEX_FILE, PackConfig, pack_documents
from lmforge.tokenizer import Tokenizer, train_tokenizer
from lmforge.tokenizer.train import DEFAULT_SPECIAL_TOKENS
from lmforge.train.config import TrainConfig

TOKENIZER_DOCS = 20_000  # documents the BPE is trained on (the corpus repeats its grammar; more adds nothing)
STATS_FILE = "corpus.json"
MASK_TOKEN = "[MASK]"  # added to the BPE's special tokens for encoder (masked-LM) presets
_BASELINE_TOKENS = 50_000_000  # the unigram baseline is measured on at most this many training tokens


def split_tokens(data_dir: Path, split: str, limit: int = _BASELINE_TOKENS) -> np.ndarray:
    """The tokens of a split's shards (rows concatenated; the one token shared by consecutive rows repeats)."""
    index = json.loads((data_dir / INDEX_FILE).read_text())
    parts, n = [], 0
    for shard in index["splits"][split]["shards"]:
        rows = np.memmap(data_dir / shard["file"], dtype=index["dtype"], mode="r").reshape(shard["rows"], -1)
        parts.append(np.asarray(rows[:, 1:]).ravel())  # drop the repeated first token of each row
        n += parts[-1].size
        if n >= limit:
            break
    return np.concatenate(parts)[:limit] if parts else np.zeros(0, dtype=np.int64)


def pack_config(cfg: TrainConfig) -> PackConfig:
    """How the run's documents are packed into rows: seq_len tokens, the validation share, the corpus seed."""
    return PackConfig(seq_len=cfg.data.seq_len, val_fraction=cfg.data.val_fraction, seed=cfg.data.corpus_seed)


def corpus_key(cfg: TrainConfig, encoder: bool = False) -> dict:
    key = {"documents": cfg.data.corpus_documents, "seed": cfg.data.corpus_seed, "vocab_size": cfg.data.vocab_size,
           "seq_len": cfg.data.seq_len, "val_fraction": cfg.data.val_fraction}
    return {**key, "mask_token": MASK_TOKEN} if encoder else key


def prepare_data(cfg: TrainConfig, run_dir: Path, log=print, encoder: bool = False) -> tuple[Path, Tokenizer, dict]:
    """(packed data directory, tokenizer, stats with the unigram baseline) for a run. encoder: the tokenizer also
    gets a [MASK] token, for the masked-LM objective."""
    if cfg.data.data_dir is not None:
        data_dir, tokenizer = Path(cfg.data.data_dir), Tokenizer.from_dir(cfg.data.tokenizer_dir)
        if not (data_dir / INDEX_FILE).is_file():
            raise LmforgeError(f"data_dir {str(data_dir)!r} holds no {INDEX_FILE}; run lmforge data pack")
        tokens = split_tokens(data_dir, "train")
        return data_dir, tokenizer, {"unigram_entropy": unigram_entropy(tokens, len(tokenizer)),
                                     "train_tokens_measured": int(tokens.size)}
    data_dir, tok_dir, stats_path = run_dir / "data", run_dir / "tokenizer", run_dir / "data" / STATS_FILE
    if stats_path.is_file() and (tok_dir / "tokenizer.json").is_file():
        stats = json.loads(stats_path.read_text())
        if stats.get("key") == corpus_key(cfg, encoder):
            return data_dir, Tokenizer.from_dir(tok_dir), stats
        log("corpus settings changed; regenerating the data")
    corpus = CorpusConfig(documents=cfg.data.corpus_documents, seed=cfg.data.corpus_seed)
    log(f"corpus: generating {corpus.documents:,} documents, training a {cfg.data.vocab_size:,}-token byte-level BPE "
        "tokenizer and packing them (once per run directory)...")
    t0 = time.perf_counter()
    texts = (document_text(corpus.seed, i)[1] for i in range(min(TOKENIZER_DOCS, corpus.documents)))
    special = [*DEFAULT_SPECIAL_TOKENS["byte-bpe"], *([MASK_TOKEN] if encoder else [])]
    tokenizer = train_tokenizer(texts, type="byte-bpe", vocab_size=cfg.data.vocab_size, special_tokens=special)
    tokenizer.save(tok_dir)
    t1 = time.perf_counter()
    nbytes = 0

    def counted():
        nonlocal nbytes
        for doc in corpus_documents(corpus):
            nbytes += len(doc.text.encode())
            yield doc

    index = pack_documents(counted(), tokenizer, data_dir,
                           pack_config(cfg))
    t2 = time.perf_counter()
    tokens = split_tokens(data_dir, "train")
    stats = {"key": corpus_key(cfg, encoder), "bytes": nbytes, "train_tokens": index["splits"]["train"]["tokens"],
             "val_tokens": index["splits"]["val"]["tokens"], "bytes_per_token": nbytes / max(
                 index["splits"]["train"]["tokens"] + index["splits"]["val"]["tokens"], 1),
             "unigram_entropy": unigram_entropy(tokens, len(tokenizer)),
             "tokenizer_s": t1 - t0, "generate_and_pack_s": t2 - t1}
    stats_path.write_text(json.dumps(stats, indent=2) + "\n")
    log(f"corpus: {nbytes / 1e6:.1f} MB, {stats['train_tokens']:,} train / {stats['val_tokens']:,} val tokens, "
        f"unigram entropy {stats['unigram_entropy']:.3f} nats/token (tokenizer {t1 - t0:.1f} s, "
        f"generate + pack {t2 - t1:.1f} s)")
    return data_dir, tokenizer, stats
