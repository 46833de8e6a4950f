"""Tokenize + pack throughput: lmforge's `pack_documents` (Rust `tokenizers` encode, EOS, uint16 shards on disk)
against tiktoken's `encode_ordinary_batch` (encode only) on the same text with the same byte-level BPE, in one run.

tiktoken downloads nothing: its Encoding is built from our tokenizer's vocabulary (GPT-2 byte alphabet mapped
back to bytes, rank = id), so both produce the same ids (`ids_agree` reports the share of identical documents).
Prints one JSON line: ours_mb_per_s, baseline_mb_per_s, ratio. Usage: python benchmarks/tokenize_pack.py [--mb 4]
(Not named tokenize.py: that would shadow the standard library's `tokenize` for every script in this folder.)
"""

from __future__ import annotations

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")  # before tokenizers is imported

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402

import tiktoken  # noqa: E402

from lmforge.common.paths import embedded_model_path  # noqa: E402
from lmforge.common.timing import best_time  # noqa: E402
from lmforge.data.document import Document  # noqa: E402
from lmforge.data.pack import PackConfig, pack_documents  # noqa: E402
from lmforge.data.sample_corpus import SampleConfig, generate  # noqa: E402
from lmforge.formats.gguf_tokenizer import bytes_to_unicode  # noqa: E402
from lmforge.tokenizer import Tokenizer, train_tokenizer  # noqa: E402

# r50k (GPT-2) split; the digit variant matches a Digits(individual) pre-tokenizer placed before it (SmolLM2).
GPT2_PAT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
DIGITS_PAT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?=\p{N})|\s+(?!\S)|\s+"""


def corpus(megabytes: float) -> list[str]:
    """Good English-like prose from the sample generator (plus its other languages), about `megabytes` MB."""
    texts: list[str] = []
    seed = 0
    while sum(len(t.encode()) for t in texts) < megabytes * 1e6:
        docs, truth = generate(SampleConfig(seed=seed, good=1000, per_language=40, spam=0, blocked_urls=0,
                                            exact_duplicates=0, near_duplicates=0, pii=0))
        texts += [d["text"] for d, t in zip(docs, truth, strict=True) if t["kind"] in ("good", "foreign")]
        seed += 1
    return texts


def load_tokenizer(texts: list[str]) -> tuple[Tokenizer, str]:
    """The embedded SmolLM2 tokenizer when installed, else a byte-level BPE trained on the text."""
    if embedded_model_path() is not None:
        from lmforge.formats.loader import load

        return load("smollm2-135m").tokenizer, "smollm2-135m"
    return train_tokenizer(texts[:2000], type="byte-bpe", vocab_size=8192), "byte-bpe-8192 (trained)"


def tiktoken_encoding(tok: Tokenizer) -> tiktoken.Encoding:
    """A tiktoken Encoding with the same byte-level BPE: rank of a token = its id (ids follow merge order)."""
    to_byte = {ch: b for b, ch in bytes_to_unicode().items()}
    added = {t.content: i for i, t in tok.backend.get_added_tokens_decoder().items()}
    ranks = {bytes(to_byte[c] for c in token): i for token, i in tok.backend.get_vocab(with_added_tokens=False).items()
             if token not in added}
    digits = "Digits" in tok.backend.to_str()
    return tiktoken.Encoding(name="lmforge-bpe", pat_str=DIGITS_PAT if digits else GPT2_PAT,
                             mergeable_ranks=ranks, special_tokens=added)



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=4.0, help="megabytes of text to encode")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions (best is reported)")
    parser.add_argument("--seq-len", type=int, default=1024)
    args = parser.parse_args()
    texts = corpus(args.mb)
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    tok, tok_name = load_tokenizer(texts)
    enc = tiktoken_encoding(tok)
    docs = [Document(f"d{i}", t) for i, t in enumerate(texts)]
    threads = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as out:
        config = PackConfig(seq_len=args.seq_len, val_fraction=0.0)
        t_ours, index = best_time(lambda: pack_documents(docs, tok, out, config), args.repeat)
    t_base, ids = best_time(lambda: enc.encode_ordinary_batch(texts, num_threads=threads), args.repeat)
    ours_ids = tok.encode_batch(texts, add_special_tokens=False)
    agree = sum(a == b for a, b in zip(ours_ids, ids, strict=True)) / len(texts)
    print(json.dumps({
        "benchmark": "tokenize_pack",
        "tokenizer": tok_name,
        "vocab_size": len(tok),
        "docs": len(texts),
        "megabytes": round(megabytes, 2),
        "tokens": index["splits"]["train"]["tokens"],
        "cpus": threads,
        "ours_mb_per_s": round(megabytes / t_ours, 2),
        "baseline_mb_per_s": round(megabytes / t_base, 2),
        "ratio": round(t_base / t_ours, 3),
        "ids_agree": round(agree, 4),
        "baseline": f"tiktoken {tiktoken.__version__} encode_ordinary_batch(num_threads={threads}), encode only",
    }))


if __name__ == "__main__":
    main()
