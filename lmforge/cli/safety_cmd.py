"""`lmforge safety train / check` and the `--safety POLICY.toml` option of serve, chat and generate.

`train` fits the learned part of a policy (an n-gram classifier, the same as the data pipeline's toxicity step)
on labelled JSONL; `check` prints OpenAI-style moderation results of texts under a policy.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from lmforge.cli import data_quality_cmd

SAFETY = typer.Option(None, "--safety", help="Safety policy TOML (input and output rails: block with a refusal, "
                                             "redact or flag; a blocked answer ends with finish_reason "
                                             "content_filter). 'default' = lmforge's built-in policy.")

app = typer.Typer(help="Safety rails: train the policy's classifier, check texts against a policy.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def load_rails(policy: str | None):
    """The Rails of `--safety` (None when not given); a bad policy is a one-line error before any model loads."""
    if policy is None:
        return None
    from lmforge.safety.rails import Rails

    return Rails() if policy == "default" else Rails.from_file(policy)


@app.command("train")
def train(
    input: Path = typer.Argument(..., help="JSONL file with a text and a label per record (e.g. 'safe' / 'toxic').",
                                 show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for the classifier; name it in a policy as "
                             "classifier = \"DIR\" and use its labels as classifier_label.", show_default=False),
    positive: str = typer.Option("toxic", "--positive", help="The label whose precision and recall are reported."),
    text_field: str = typer.Option("text", "--text-field", help="Field holding the text."),
    label_field: str = typer.Option("label", "--label-field", help="Field holding the label."),
    holdout: float = typer.Option(0.2, "--holdout", help="Share of records kept out of training to evaluate."),
    epochs: int = typer.Option(8, "--epochs", help="Passes over the training records."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split and of training."),
) -> None:
    """Train a safety classifier (fastText-style n-grams) on labelled records; report held-out precision/recall."""
    data_quality_cmd.train(input, out, positive=positive, text_field=text_field, label_field=label_field,
                           holdout=holdout, epochs=epochs, dim=32, ngrams=2, seed=seed)


@app.command("check")
def check(
    texts: list[str] = typer.Argument(..., help="Texts to moderate.", show_default=False),
    policy: str = typer.Option("default", "--policy", help="Policy TOML ('default': lmforge's built-in one)."),
) -> None:
    """Moderate texts under a policy; print OpenAI moderation results (flagged, categories, scores) as JSON."""
    from lmforge.safety.moderation import Moderator
    from lmforge.safety.policy import load_policy

    moderator = Moderator(load_policy(None if policy == "default" else policy))
    print(json.dumps({"results": moderator.moderate(texts)}, ensure_ascii=False, indent=1))
