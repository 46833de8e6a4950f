"""A small packed pretraining set for the training tests: corpus documents, a byte-BPE trained on them, rows of 32
tokens (written under `root`: data/ and tok/)."""

from pathlib import Path

from lmforge.data.corpus import CorpusConfig, corpus_documents
from lmforge.data.pack import PackConfig, pack_documents
from lmforge.tokenizer import train_tokenizer


def pack_corpus(root: Path, documents: int, seed: int, vocab_size: int):
    """(data dir, tokenizer dir, tokenizer)."""
    docs = list(corpus_documents(CorpusConfig(documents=documents, seed=seed)))
    tok = train_tokenizer([d.text for d in docs], type="byte-bpe", vocab_size=vocab_size)
    tok.save(root / "tok")
    pack_documents(docs, tok, root / "data", PackConfig(seq_len=32, val_fraction=0.1, seed=seed))
    return root / "data", root / "tok", tok
