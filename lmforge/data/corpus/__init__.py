"""The embedded pretraining corpus: a deterministic, seeded generator of stories, arithmetic, entity facts and
code, so that `lmforge pretrain` has tens of millions of tokens offline. See `generator.py`.
"""

from lmforge.data.corpus.generator import CorpusConfig, corpus_documents, document_text, unigram_entropy

__all__ = ["CorpusConfig", "corpus_documents", "document_text", "unigram_entropy"]
