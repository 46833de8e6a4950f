"""Hugging Face directories of classifiers: transformers' `BertForSequenceClassification`,
`BertForTokenClassification` and the decoders' `LlamaForSequenceClassification` / `...ForTokenClassification`
(Llama, Qwen2, Qwen3, Mistral) read into and written from lmforge's `Classifier` (model/classifier.py).

The backbone's tensors go through the same name tables as the LM (hf.py); the heads are three names: BERT's
`bert.pooler.dense.*` and `classifier.*`, the decoders' `score.*`. Labels live in config.json's id2label.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from lmforge.common.errors import LmforgeError
from lmforge.formats.hf import config_from_hf, config_to_hf, state_dict_from_hf, state_dict_to_hf
from lmforge.formats.hf_dir import check_config_against_weights, read_json
from lmforge.formats.weights import assign_state_dict, load_weights_dir, save_weights_file
from lmforge.model.classifier import Classifier
from lmforge.model.meta_init import on_meta
from lmforge.model.transformer import Transformer

PREFIXES = {"bert": "Bert", "llama": "Llama", "qwen2": "Qwen2", "qwen3": "Qwen3", "mistral": "Mistral"}
SUFFIXES = {"sequence": "ForSequenceClassification", "token": "ForTokenClassification"}
# the head's tensors: HF name -> lmforge name, per backbone kind
_HEADS = {"bert": {"bert.pooler.dense.weight": "pooler.dense.weight", "bert.pooler.dense.bias": "pooler.dense.bias",
                   "classifier.weight": "score.weight", "classifier.bias": "score.bias"},
          "decoder": {"score.weight": "score.weight", "score.bias": "score.bias"}}


def architecture(family: str, task: str) -> str:
    """transformers' class name of a `task` classifier on a `family` backbone."""
    if family not in PREFIXES:
        raise LmforgeError(f"no Hugging Face classifier for family {family!r}; supported: {', '.join(PREFIXES)}")
    return PREFIXES[family] + SUFFIXES[task]


def classifier_task(hf_config: dict) -> str | None:
    """"sequence" / "token" when config.json names a classifier architecture, else None (e.g. an LM)."""
    for name in hf_config.get("architectures") or ():
        for task, suffix in SUFFIXES.items():
            if isinstance(name, str) and name.endswith(suffix):
                return task
    return None


def is_classifier_dir(path: str | Path) -> bool:
    config = Path(path) / "config.json"
    return config.is_file() and classifier_task(read_json(config)) is not None


def labels_from_hf(hf: dict, source: str) -> list[str]:
    """The class names in id order from config.json's id2label (keys are the ids as strings)."""
    id2label = hf.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        raise LmforgeError(f"{source} has no id2label in config.json; a classifier needs its labels")
    try:
        ids = sorted(int(k) for k in id2label)
    except ValueError:
        raise LmforgeError(f"{source}: id2label keys must be integers, got {list(id2label)[:5]}") from None
    if ids != list(range(len(ids))):
        raise LmforgeError(f"{source}: id2label must number the labels 0..{len(ids) - 1}, got {ids[:10]}")
    return [str(id2label[str(i)] if str(i) in id2label else id2label[i]) for i in ids]


def load_classifier(directory: str | Path, dtype: torch.dtype = torch.float32) -> Classifier:
    """A Classifier from a transformers classifier directory (config.json + safetensors)."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise LmforgeError(f"{directory} is not a Hugging Face model directory: config.json is missing")
    hf = read_json(config_path)
    task = classifier_task(hf)
    if task is None:
        raise LmforgeError(f"{directory} holds {hf.get('architectures')}, not a sequence or token classifier "
                           f"(*ForSequenceClassification / *ForTokenClassification)")
    cfg = config_from_hf(hf)
    labels = labels_from_hf(hf, str(directory))
    state = load_weights_dir(directory)
    heads = _HEADS["bert" if cfg.family == "bert" else "decoder"]
    head_state = {heads[k]: state.pop(k) for k in list(state) if k in heads}
    check_config_against_weights(cfg, {k: tuple(v.shape) for k, v in state.items()}, str(directory))
    ours = {f"backbone.{k}": v for k, v in state_dict_from_hf(state, cfg).items() if k != "lm_head.weight"}
    with on_meta():
        model = Classifier(Transformer(cfg), task, labels)
    assign_state_dict(model, {**ours, **head_state}, source=str(directory))
    return model.to(dtype).eval()


def new_classifier(backbone: Transformer, task: str, labels: Sequence[str]) -> Classifier:
    """A classifier with a fresh head on a loaded LM (its LM / masked-LM head is dropped)."""
    return Classifier(backbone, task, labels)


def save_classifier(model: Classifier, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
    """config.json (the classifier architecture, id2label / label2id) + model.safetensors with transformers'
    names, so `AutoModelFor{Sequence,Token}Classification.from_pretrained(directory)` loads it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    dtype = dtype or model.score.weight.dtype
    lm_cfg = cfg.replace(mlm_head=True) if cfg.family == "bert" else cfg  # the family's exporter checks its layout
    hf = config_to_hf(lm_cfg, dtype)
    hf.update(architectures=[architecture(cfg.family, model.task)],
              id2label={str(i): label for i, label in enumerate(model.labels)},
              label2id={label: i for i, label in enumerate(model.labels)})
    if model.task == "sequence":
        hf["problem_type"] = "single_label_classification"
    state = {k.removeprefix("backbone."): v.to(dtype) for k, v in model.state_dict().items()
             if k.startswith("backbone.")}
    out = state_dict_to_hf(state, lm_cfg)
    back = {v: k for k, v in _HEADS["bert" if cfg.family == "bert" else "decoder"].items()}
    out.update({back[k]: v.to(dtype) for k, v in model.state_dict().items() if k in back})
    save_weights_file(out, directory / "model.safetensors")
    (directory / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    return directory
