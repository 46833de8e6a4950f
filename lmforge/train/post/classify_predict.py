"""`lmforge classify predict`: label texts (sequence classifier) or tag words (token classifier) with a classifier
directory — one of ours (`classify train`'s OUT/hf) or a transformers `*ForSequenceClassification` /
`*ForTokenClassification` directory with its tokenizer.json.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmforge.common.errors import LmforgeError
from lmforge.formats.hf_classifier import is_classifier_dir, load_classifier
from lmforge.model.classifier import Classifier
from lmforge.train.post.classify_data import encode, entity_spans, read_labelled
from lmforge.train.post.classify_run import load_tokenizer, logits_of, word_tags


def load_for_prediction(directory: str, device: torch.device | str = "cpu") -> tuple[Classifier, object]:
    if not is_classifier_dir(directory):
        raise LmforgeError(f"{directory} is not a classifier directory (config.json naming a "
                           f"*ForSequenceClassification or *ForTokenClassification); train one with "
                           f"`lmforge classify train`")
    return load_classifier(directory).to(device), load_tokenizer(directory)


def predict(model: Classifier, tokenizer, records: Sequence[dict], max_len: int = 512) -> list[dict]:
    """Each record with its prediction: sequence -> "label" and "score" (its probability) and "scores" (every
    label's); token -> "tags" (one per word) and "entities" (the BIO spans as {type, text, start, end} word
    indices)."""
    max_len = min(max_len, model.config.max_seq_len)
    rows = [encode(tokenizer, r, model.task, None, max_len) for r in records]
    out = []
    for record, row, logits in zip(records, rows, logits_of(model, rows), strict=True):
        if model.task == "sequence":
            probs = torch.softmax(logits, -1)
            best = int(probs.argmax())
            out.append({**record, "label": model.labels[best], "score": round(float(probs[best]), 6),
                        "scores": {label: round(float(p), 6) for label, p in zip(model.labels, probs, strict=True)}})
            continue
        tags = word_tags(model, row, logits, len(record["tokens"]))
        entities = [{"type": kind, "text": " ".join(record["tokens"][a:b]), "start": a, "end": b}
                    for kind, a, b in sorted(entity_spans(tags), key=lambda span: span[1])]
        out.append({**record, "tags": tags, "entities": entities})
    return out


def predict_inputs(directory: str, texts: Sequence[str] = (), input_file: str | None = None,
                   max_len: int = 512, device: torch.device | str = "cpu") -> list[dict]:
    """Predictions for --text strings and / or the lines of a JSONL --input file (the model on `device`)."""
    model, tokenizer = load_for_prediction(directory, device)
    records = [{"text": t} if model.task == "sequence" else {"text": t, "tokens": t.split()} for t in texts]
    if any(not t.strip() for t in texts):
        raise LmforgeError("--text must not be empty")
    if input_file is not None:
        records += read_labelled(input_file, model.task, need_labels=False)
    if not records:
        raise LmforgeError("nothing to predict: pass --text TEXT or --input FILE.jsonl")
    return predict(model, tokenizer, records, max_len)
