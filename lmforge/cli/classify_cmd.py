"""`lmforge classify train | predict`: sequence classification and token classification (NER) heads on encoder
(BERT) and decoder (Llama, Qwen, Mistral) models. Thin: train's flags are generated from ClassifyConfig; the work
is in lmforge/train/post/classify_*.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from lmforge.cli.device_option import DEVICE, pick_device
from lmforge.cli.options_from_config import config_command, toml_epilog
from lmforge.common.errors import LmforgeError
from lmforge.train.post.classify_config import ClassifyConfig

app = typer.Typer(help="Classification heads (sequence labels, token tags / NER) on encoder and decoder models: "
                  "train them, and predict with them (transformers *ForSequenceClassification / "
                  "*ForTokenClassification directories).", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)


def _train(cfg: ClassifyConfig) -> None:
    from lmforge.train.post.classify_run import train_classifier  # torch loads here, not at --help

    train_classifier(cfg, log=typer.echo)  # its last line gives the held-out figure, the classifier and the report


app.command("train", epilog=toml_epilog(ClassifyConfig))(config_command(
    ClassifyConfig, _train, name="train", doc="Train a sequence or token classification head on a backbone; report "
    "held-out accuracy (sequence) or entity F1 (token) before and after; save OUT/hf."))


@app.command("predict")
def predict(
    model: str = typer.Argument(..., metavar="MODEL_DIR", help="Classifier directory: `classify train`'s OUT/hf, or a "
                                "transformers *ForSequenceClassification / *ForTokenClassification directory with "
                                "tokenizer.json."),
    text: list[str] = typer.Option(None, "--text", "-t", help="A text to classify (a token classifier tags its "
                                   "whitespace-separated words); repeatable.", show_default=False),
    input_file: Path = typer.Option(None, "--input", "-i", help="JSONL of {\"text\"} (or {\"tokens\": [words]} "
                                    "for a token classifier); other fields are copied to the output.",
                                    show_default=False),
    out: Path = typer.Option(None, "--out", "-o", help="Write the predictions here as JSONL (default: stdout).",
                             show_default=False),
    max_len: int = typer.Option(512, help="Tokens per input (longer ones are cut)."),
    device: str = DEVICE,
) -> None:
    """Label texts or tag words with a classifier; one JSON object per input, with "label" and "score" (sequence)
    or "tags" and "entities" (token)."""
    if max_len < 4:
        raise LmforgeError(f"--max-len must be >= 4, got {max_len}")
    if input_file is not None and not input_file.is_file():
        raise LmforgeError(f"--input {input_file} does not exist")
    from lmforge.train.post.classify_predict import predict_inputs

    rows = predict_inputs(model, list(text or ()), str(input_file) if input_file else None, max_len,
                          pick_device(device))
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if out is None:
        typer.echo(lines, nl=False)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(lines)
        typer.echo(f"wrote {len(rows)} prediction(s) to {out}", err=True)
