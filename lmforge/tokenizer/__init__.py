"""Tokenizers for lmforge: train them (BPE, byte-level BPE, WordPiece, Unigram), load and save Hugging Face
tokenizer directories, grow the vocabulary, and render chat templates in a Jinja2 sandbox.
"""

from lmforge.tokenizer.chat_template import (
    ALPACA_TEMPLATE,
    BUILTIN_TEMPLATES,
    CHATML_TEMPLATE,
    render_chat_template,
)
from lmforge.tokenizer.tokenizer import Tokenizer
from lmforge.tokenizer.train import DEFAULT_SPECIAL_TOKENS, TOKENIZER_TYPES, train_tokenizer

__all__ = [
    "ALPACA_TEMPLATE",
    "BUILTIN_TEMPLATES",
    "CHATML_TEMPLATE",
    "DEFAULT_SPECIAL_TOKENS",
    "TOKENIZER_TYPES",
    "Tokenizer",
    "render_chat_template",
    "train_tokenizer",
]
