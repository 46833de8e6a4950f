"""`lmforge data quality train / eval`: the fastText-style classifiers behind the `quality_classifier` and
`toxicity` pipeline steps, trained on a labelled JSONL file (one text and one label per record)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import typer

app = typer.Typer(
    help="Train and evaluate the n-gram classifiers used by the quality_classifier and toxicity steps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _read_labelled(path: Path, text_field: str, label_field: str) -> tuple[list[str], list[str]]:
    from lmforge.common.errors import LmforgeError
    from lmforge.data.readers import ReaderConfig, ReadStats, read_documents

    stats = ReadStats()
    texts, labels = [], []
    for doc in read_documents([str(path)], ReaderConfig(text_field=text_field), stats):
        label = doc.meta.get(label_field)
        if label is None:
            raise LmforgeError(f"record {doc.id!r} of {path} has no {label_field!r} field (set --label-field)")
        texts.append(doc.text)
        labels.append(str(label))
    if len(set(labels)) < 2:
        raise LmforgeError(f"{path} needs at least two distinct labels in {label_field!r}, found {sorted(set(labels))}")
    return texts, labels


@app.command("train")
def train(
    input: Path = typer.Argument(..., help="JSONL file with a text and a label per record (e.g. "
                                 "quality_labels.jsonl or toxicity_labels.jsonl from `lmforge data sample`).",
                                 show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for the classifier (model.safetensors, "
                             "classifier.json) and its held-out evaluation (eval.json).", show_default=False),
    positive: str = typer.Option("good", "--positive", help="The label whose precision and recall are reported "
                                 "(good for quality, toxic for toxicity)."),
    text_field: str = typer.Option("text", "--text-field", help="Field holding the text."),
    label_field: str = typer.Option("label", "--label-field", help="Field holding the label."),
    holdout: float = typer.Option(0.2, "--holdout", help="Share of records kept out of training to evaluate."),
    epochs: int = typer.Option(8, "--epochs", help="Passes over the training records."),
    dim: int = typer.Option(32, "--dim", help="Embedding size."),
    ngrams: int = typer.Option(2, "--ngrams", help="Longest word n-gram (1 = words only)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split and of training."),
) -> None:
    """Train a classifier on labelled records and report its accuracy, precision and recall on a held-out part."""
    from lmforge.data.ngram_classifier import NgramClassifierConfig, evaluate, train_classifier
    from lmforge.data.validate import in_range

    in_range("holdout", holdout, 0.0, 0.9)
    config = NgramClassifierConfig(dim=dim, ngrams=ngrams, epochs=epochs, seed=seed)
    texts, labels = _read_labelled(input, text_field, label_field)
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    cut = len(order) - max(1, int(len(order) * holdout)) if holdout > 0 else len(order)
    train_idx, test_idx = order[:cut], order[cut:]
    model = train_classifier([texts[i] for i in train_idx], [labels[i] for i in train_idx], config,
                             on_epoch=lambda e, loss: print(f"epoch {e + 1}/{epochs}: loss {loss:.4f}"))
    model.save(out)
    report = {"train_documents": len(train_idx), "labels": model.labels}
    if test_idx:
        report["heldout"] = evaluate(model, [texts[i] for i in test_idx], [labels[i] for i in test_idx], positive)
        h = report["heldout"]
        print(f"held-out ({h['documents']} records): accuracy {h['accuracy']:.1%}, {positive!r} precision "
              f"{h['precision']:.1%}, recall {h['recall']:.1%}")
    (out / "eval.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"classifier: {out} (use it as model = \"{out}\" in a quality_classifier or toxicity step)")


@app.command("eval")
def eval_(
    model: Path = typer.Argument(..., help="Classifier directory from `lmforge data quality train`.",
                                 show_default=False),
    input: Path = typer.Argument(..., help="Labelled JSONL file.", show_default=False),
    positive: str = typer.Option("good", "--positive", help="The label whose precision and recall are reported."),
    threshold: float = typer.Option(0.5, "--threshold", help="Flag a record when P(positive) is above this."),
    text_field: str = typer.Option("text", "--text-field", help="Field holding the text."),
    label_field: str = typer.Option("label", "--label-field", help="Field holding the label."),
) -> None:
    """Accuracy, precision and recall of a trained classifier on a labelled file (printed as JSON)."""
    from lmforge.data.ngram_classifier import NgramClassifier, evaluate

    texts, labels = _read_labelled(input, text_field, label_field)
    print(json.dumps(evaluate(NgramClassifier.load(model), texts, labels, positive, threshold), indent=1))


@app.command("annotate")
def annotate(
    input: Path = typer.Argument(..., help="JSONL pages to label (a text field per record).", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="JSONL to write: each record with its label and "
                             "annotator_score.", show_default=False),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Chat model that judges each page (embedded "
                              "name, HF directory or .gguf)."),
    threshold: float = typer.Option(0.5, "--threshold", help="Label 'good' when P(Yes) is at least this."),
    text_field: str = typer.Option("text", "--text-field", help="Field holding the text."),
    limit: int = typer.Option(0, "--limit", help="Label only the first N records (0: all)."),
) -> None:
    """Label pages good/bad with a chat model (the FineWeb-Edu recipe) to train a classifier on the labels."""
    from lmforge.data.annotate import PageAnnotator
    from lmforge.data.readers import ReaderConfig, ReadStats, read_documents
    from lmforge.data.validate import in_range
    from lmforge.formats.loader import load

    in_range("threshold", threshold, 0.0, 1.0)
    docs = list(read_documents([str(input)], ReaderConfig(text_field=text_field), ReadStats()))
    docs = docs[:limit] if limit > 0 else docs
    lm = load(model)
    annotator = PageAnnotator(lm.model, lm.tokenizer)
    step = max(1, len(docs) // 10)
    scores = annotator.scores([d.text for d in docs], on_page=lambda n: n % step == 0 and print(
        f"annotated {n}/{len(docs)} pages", flush=True))
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        for doc, score in zip(docs, scores, strict=True):
            record = {**doc.to_record(text_field), "label": "good" if score >= threshold else "bad",
                      "annotator_score": round(score, 4)}
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    good = sum(s >= threshold for s in scores)
    print(f"labelled {len(docs)} pages ({good} good, {len(docs) - good} bad) with {model}: {out}")
