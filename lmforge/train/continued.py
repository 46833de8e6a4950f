"""Continued pretraining of a loaded model (`lmforge pretrain --init MODEL`): its weights and tokenizer are the
starting point, optionally with new tokens (see vocab_expand.py), and the training text is packed with that
tokenizer — a text file split into documents at blank lines, packed shards, or the embedded corpus.
"""

from __future__ import annotations

import re
from pathlib import Path

from lmforge.common.errors import LmforgeError
from lmforge.data.corpus import CorpusConfig, corpus_documents, unigram_entropy
from lmforge.data.document import Document
from lmforge.data.pack import INDEX_FILE, pack_documents
from lmforge.formats.loader import LM, load
from lmforge.train.config import TrainConfig
from lmforge.train.corpus_data import pack_config, split_tokens
from lmforge.train.vocab_expand import expand_vocabulary, read_token_file


def load_init(cfg: TrainConfig, log=print) -> LM:
    """The model to continue from (float32 weights), with its tokenizer expanded by cfg.add_tokens."""
    lm = load(cfg.init_from)
    if lm.tokenizer is None:
        raise LmforgeError(f"init_from={cfg.init_from!r} has no tokenizer; continued pretraining needs one")
    if cfg.add_tokens:
        before = lm.config.vocab_size
        pieces = expand_vocabulary(lm.model, lm.tokenizer, read_token_file(cfg.add_tokens))
        log(f"vocabulary: {len(pieces)} new token(s), model vocab {before} -> {lm.config.vocab_size}; new "
            f"embeddings start at the mean of their old sub-tokens")
    if cfg.data.seq_len > lm.config.max_seq_len:
        raise LmforgeError(f"TrainConfig.seq_len={cfg.data.seq_len} exceeds the model's max_seq_len "
                           f"{lm.config.max_seq_len}")
    return lm


def text_documents(path: str | Path) -> list[Document]:
    """The documents of a UTF-8 text file: paragraphs separated by blank lines."""
    path = Path(path)
    if not path.is_file():
        raise LmforgeError(f"train_text file not found: {path}")
    parts = [p.strip() for p in re.split(r"\n\s*\n", path.read_text(encoding="utf-8"))]
    docs = [Document(id=f"{path.name}:{i}", text=p) for i, p in enumerate(parts) if p]
    if not docs:
        raise LmforgeError(f"train_text file {path} holds no text")
    return docs


def prepare_init_data(cfg: TrainConfig, run_dir: Path, tokenizer, log=print) -> tuple[Path, dict]:
    """(packed data directory, stats with the unigram baseline) tokenized with the (expanded) model tokenizer."""
    if cfg.data.data_dir is not None:
        data_dir = Path(cfg.data.data_dir)
        if not (data_dir / INDEX_FILE).is_file():
            raise LmforgeError(f"data_dir {str(data_dir)!r} holds no {INDEX_FILE}; run lmforge data pack")
    else:
        docs = (text_documents(cfg.data.train_text) if cfg.data.train_text
                else corpus_documents(CorpusConfig(documents=cfg.data.corpus_documents, seed=cfg.data.corpus_seed)))
        data_dir = run_dir / "data"
        index = pack_documents(docs, tokenizer, data_dir,
                               pack_config(cfg))
        log(f"data: {index['splits']['train']['tokens']:,} train / {index['splits']['val']['tokens']:,} val "
            f"tokens from {cfg.data.train_text or 'the embedded corpus'}")
    tokens = split_tokens(data_dir, "train")
    return data_dir, {"unigram_entropy": unigram_entropy(tokens, len(tokenizer)),
                      "train_tokens_measured": int(tokens.size)}
