"""`train_classifier(ClassifyConfig)`: the run behind `lmforge classify train` — a sequence or token classification
head (model/classifier.py) on a loaded backbone, trained with cross-entropy as an objective of the one Trainer loop
(checkpoints, --resume, the non-finite guard, metrics), held-out accuracy (sequence) or entity F1 (token) measured
before and after, and the classifier saved as a transformers directory (formats/hf_classifier.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from lmforge.common.errors import LmforgeError
from lmforge.common.threads import torch_threads
from lmforge.formats.hf_classifier import is_classifier_dir, load_classifier, save_classifier
from lmforge.formats.loader import load
from lmforge.model.classifier import Classifier
from lmforge.tokenizer import Tokenizer
from lmforge.train.objectives import Objective
from lmforge.train.post.classify_config import ClassifyConfig
from lmforge.train.post.classify_data import (
    IGNORE,
    Encoded,
    collate,
    encode,
    entity_f1,
    label_set,
    read_labelled,
    split_heldout,
)
from lmforge.train.post.classify_task import labelled_examples
from lmforge.train.post.pair_run import StepStats, check_pair_out, pair_train_config, run_device
from lmforge.train.post.preference_data import PairLoader
from lmforge.train.post.rollout import device_of
from lmforge.train.post.run_log import heldout_warning, write_run_report
from lmforge.train.pretrain import seed_everything
from lmforge.train.trainer import Trainer


def load_examples(cfg: ClassifyConfig) -> tuple[list[dict], list[dict]]:
    """(train, held-out) records: the user's files (a hash split of --data without --heldout) or the embedded set."""
    data = cfg.data
    if data.data is None:
        return (labelled_examples(cfg.task, data.train_examples, "train", data.task_seed),
                labelled_examples(cfg.task, data.heldout_examples, "heldout", data.task_seed))
    records = read_labelled(data.data, cfg.task)
    if data.heldout is not None:
        train, heldout = records, read_labelled(data.heldout, cfg.task)
    else:
        train, heldout = split_heldout(records)
    return train[:data.train_examples], heldout[:data.heldout_examples]


def load_model(source: str, task: str, labels: Sequence[str]) -> tuple[Classifier, Tokenizer]:
    """A classifier directory as it is (its task and labels must fit the data), or a fresh head on an LM."""
    if is_classifier_dir(source):
        model, tokenizer = load_classifier(source), load_tokenizer(source)
        if model.task != task:
            raise LmforgeError(f"{source} is a {model.task} classifier; pass --task {model.task}")
        unknown = sorted(set(labels) - set(model.labels))
        if unknown:
            raise LmforgeError(f"the data has label(s) {unknown[:5]} that {source} does not know "
                               f"({', '.join(model.labels)}); start from its backbone instead")
        return model.train(), tokenizer
    lm = load(source)
    if lm.tokenizer is None:
        raise LmforgeError(f"{source} has no tokenizer; a classifier needs one")
    return Classifier(lm.model, task, labels).train(), lm.tokenizer


def load_tokenizer(source: str) -> Tokenizer:
    if not (Path(source) / "tokenizer.json").is_file():
        raise LmforgeError(f"{source} has no tokenizer.json; a classifier needs its tokenizer")
    return Tokenizer.from_dir(source)


def pad_id_of(model: Classifier) -> int:
    return model.config.pad_token_id if model.config.pad_token_id is not None else 0


@torch.no_grad()
def logits_of(model: Classifier, rows: Sequence[Encoded], batch_size: int = 64) -> list[torch.Tensor]:
    """Per row: [num_labels] (sequence) or [len(ids), num_labels] (token) float32 logits, in eval mode."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        ids, mask, _ = collate(chunk, pad_id_of(model), model.task, device_of(model))
        logits = model(ids, attention_mask=mask)
        out += [logits[i] if model.task == "sequence" else logits[i, :len(r.ids)] for i, r in enumerate(chunk)]
    model.train(was_training)
    return out


def word_tags(model: Classifier, row: Encoded, logits: torch.Tensor, n_words: int) -> list[str]:
    """A tag per word: the prediction at its first sub-token ("O" for words cut off by max_len)."""
    tags = [model.labels[int(logits[p].argmax())] for p in row.word_starts]
    return tags + ["O"] * (n_words - len(tags))


def evaluate(model: Classifier, records: Sequence[dict], rows: Sequence[Encoded]) -> dict[str, float]:
    """Sequence: accuracy and loss; token: entity precision / recall / F1 and the accuracy over words."""
    if not rows:
        return {}
    logits = logits_of(model, rows)
    if model.task == "sequence":
        stacked = torch.stack(logits)
        gold = torch.tensor([r.labels[0] for r in rows], device=stacked.device)
        return {"accuracy": float((stacked.argmax(-1) == gold).float().mean()),
                "loss": float(F.cross_entropy(stacked, gold))}
    predicted = [word_tags(model, r, x, len(rec["tokens"])) for rec, r, x in zip(records, rows, logits, strict=True)]
    words = sum(len(rec["tags"]) for rec in records)
    right = sum(p == g for rec, pred in zip(records, predicted, strict=True) for p, g in zip(pred, rec["tags"],
                                                                                             strict=True))
    return {**entity_f1([rec["tags"] for rec in records], predicted), "accuracy": right / words}


def classify_objective(model: Classifier, rows: Sequence[Encoded], records: Sequence[dict],
                       held_rows: Sequence[Encoded], before: dict[str, float], headline: str) -> Objective:
    """Cross-entropy summed over the micro-batch's units (examples, or labelled tokens) and the held-out figures."""
    stats, task = StepStats(), model.task
    units = [1 if task == "sequence" else sum(label != IGNORE for label in r.labels) for r in rows]

    def batch_loss(module, batch: tuple) -> torch.Tensor:
        chunk = [rows[i] for i in batch[0].tolist()]
        ids, mask, labels = collate(chunk, pad_id_of(model), task, device_of(module))
        logits = module(ids, attention_mask=mask)
        flat = logits.reshape(-1, logits.shape[-1])
        loss = F.cross_entropy(flat, labels.reshape(-1), ignore_index=IGNORE, reduction="sum")
        with torch.no_grad():
            keep = labels.reshape(-1) != IGNORE
            right = (flat.argmax(-1)[keep] == labels.reshape(-1)[keep]).float()
            stats.add(int(keep.sum()), {"accuracy": float(right.mean()) if len(right) else 0.0})
        return loss

    def evaluate_heldout() -> dict[str, float]:
        return {f"heldout_{k}": v for k, v in evaluate(model, records, held_rows).items()}

    return Objective(names=[f"cross-entropy ({task} classification)"], batch_loss=batch_loss,
                     count=lambda micro: sum(units[i] for batch in micro for i in batch[0].tolist()),
                     unit="examples" if task == "sequence" else "tokens", stats=stats.pop,
                     evaluate=evaluate_heldout, headline=headline, headline_label=headline.replace("_", " "),
                     start_record=lambda: {f"heldout_{k}": v for k, v in before.items()})


def train_classifier(cfg: ClassifyConfig, log=print) -> dict:
    """Train in the Trainer loop (resumable), evaluate before / after on the held-out examples, save OUT/hf;
    returns the summary (also OUT/summary.json)."""
    with torch_threads(cfg.threads):
        return _train(cfg, log)


def _train(cfg: ClassifyConfig, log) -> dict:
    check_pair_out(cfg)  # a rerun over checkpoints without --resume / --fresh is refused before loading
    train, heldout = load_examples(cfg)
    labels = label_set(train + heldout, cfg.task)
    if len(labels) < 2:
        raise LmforgeError(f"the data has a single label {labels}; a classifier needs at least 2")
    seed_everything(cfg.seed)  # the head's init; a resumed run restores it from the checkpoint
    model, tokenizer = load_model(cfg.model, cfg.task, labels)
    model.to(run_device(cfg))
    label_ids = {label: i for i, label in enumerate(model.labels)}
    rows = [encode(tokenizer, r, cfg.task, label_ids, cfg.data.max_len) for r in train]
    held_rows = [encode(tokenizer, r, cfg.task, label_ids, cfg.data.max_len) for r in heldout]
    headline = "heldout_accuracy" if cfg.task == "sequence" else "heldout_f1"
    figure = "accuracy" if cfg.task == "sequence" else "entity F1"
    before = evaluate(model, heldout, held_rows)
    log(f"classify ({cfg.task}) on {cfg.model} ({model.config.num_params() / 1e6:.2f}M): {len(train)} train / "
        f"{len(heldout)} held-out examples, {len(model.labels)} labels; held-out {figure} before "
        f"{before.get(headline.removeprefix('heldout_'), float('nan')):.3f}")
    warning = heldout_warning(len(heldout), "examples", f"held-out {figure}")
    if warning:
        log(warning)
    objective = classify_objective(model, rows, heldout, held_rows, before, headline)
    loader = PairLoader(len(rows), cfg.batch.batch_size, cfg.seed, cfg.data.max_len)
    trainer = Trainer(pair_train_config(cfg), model, loader, run_dir=cfg.out, log=log, objective=objective,
                      label="classify")
    run = trainer.fit()
    if run["status"] != "finished":
        return run
    after = evaluate(model, heldout, held_rows)
    run_dir = Path(cfg.out)
    if cfg.export_hf:
        save_classifier(model, run_dir / "hf")
        tokenizer.save(run_dir / "hf")
    key = headline.removeprefix("heldout_")
    summary = {"config": asdict(cfg), "task": cfg.task, "labels": list(model.labels), "train_examples": len(train),
               "heldout_examples": len(heldout), **{f"{k}_before": v for k, v in before.items()},
               **{f"{k}_after": v for k, v in after.items()}, "steps": run["step"],
               "skipped_steps": run["nonfinite_steps"], "elapsed_s": run["elapsed_s"]}
    report = write_run_report(run_dir, f"{cfg.task.capitalize()} classification on {cfg.model}", summary,
                              {f"held-out {figure}, {len(heldout)} examples": (before[key], after[key])}, [warning])
    log(f"held-out {figure} {before[key]:.3f} -> {after[key]:.3f} on {len(heldout)} examples in "
        f"{run['elapsed_s']:.0f} s; classifier {run_dir / 'hf' if cfg.export_hf else '(not exported)'}; "
        f"report {report}")
    return summary
