"""Throughput of the classifier-backed pipeline steps (quality_classifier / toxicity, the fastText-style n-gram
model) against the Gopher quality rule step on the same pages, in one run and one process.

Prints one JSON line: documents, mean words per page, classifier docs/s (per-document step, as the pipeline
calls it), gopher_quality docs/s, their ratio, and the threads torch used.
Usage: python benchmarks/data_classifier.py [--docs 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile

import torch

from lmforge.common.timing import best_time
from lmforge.data.document import Document
from lmforge.data.labelled_samples import quality_samples
from lmforge.data.ngram_classifier import train_classifier
from lmforge.data.sample_corpus import SampleConfig, generate
from lmforge.data.steps import build_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = quality_samples(*generate(SampleConfig(good=300, spam=60, per_language=0, blocked_urls=0,
                                                  exact_duplicates=0, near_duplicates=0, pii=0)))
    docs = [Document(f"d{i}", rows[i % len(rows)]["text"]) for i in range(args.docs)]
    with tempfile.TemporaryDirectory() as tmp:
        train_classifier([r["text"] for r in rows], [r["label"] for r in rows]).save(tmp)
        classifier = build_step({"type": "quality_classifier", "model": tmp})[1]
        classifier.apply(docs[0])  # loads the model
        gopher = build_step({"type": "gopher_quality"})[1]
        ours, _ = best_time(lambda: [classifier.apply(d) for d in docs], repeat=args.repeat)
        rule, _ = best_time(lambda: [gopher.apply(d) for d in docs], repeat=args.repeat)
    print(json.dumps({
        "documents": len(docs),
        "mean_words": round(sum(len(d.text.split()) for d in docs) / len(docs), 1),
        "classifier_docs_per_s": round(len(docs) / ours, 1),
        "gopher_quality_docs_per_s": round(len(docs) / rule, 1),
        "ratio": round(rule / ours, 3),
        "torch_threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
