"""A tiny random model with a tiny trained byte-level BPE tokenizer (ChatML template): text in, text out, fast."""

import functools

from lmforge.model import Transformer, get_preset
from lmforge.tokenizer import train_tokenizer

CORPUS = [
    "the cat sat on the mat. the dog sat on the log. hello world, hello there!",
    "a stop string may span tokens: END OF ANSWER. café, naïve, 東京, emoji 🙂 too.",
] * 20


@functools.cache
def tiny_tokenizer():
    return train_tokenizer(CORPUS, type="byte-bpe", vocab_size=300, min_frequency=1)


def tiny_lm(seed: int = 0):
    """An lmforge LM (random tiny llama, vocab 320 >= the tokenizer's 300) with the tiny tokenizer."""
    import torch

    from lmforge.formats.loader import LM

    torch.manual_seed(seed)
    model = Transformer(get_preset("tiny-llama", vocab_size=320, eos_token_id=2)).eval()
    return LM(model=model, tokenizer=tiny_tokenizer(), source="tiny", generation_config={"eos_token_id": 2})
