"""`lmforge eval MODEL --tasks T[,T]` (lm-evaluation-harness tasks from local YAML + data files: JSON results and a
markdown table), `lmforge eval ppl` (sliding-window perplexity on held-out text) and `lmforge eval needle` (passkey
retrieval accuracy over context lengths x key depths, as JSON and a heatmap PNG). Thin: the logic lives in
lmforge.eval and lmforge.train.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.core import TyperGroup

from lmforge.cli.device_option import DEVICE, pick_device, place
from lmforge.common.errors import LmforgeError


class _TasksByDefault(TyperGroup):
    """`lmforge eval MODEL --tasks ...` means `lmforge eval run MODEL --tasks ...`; ppl / needle stay sub-commands."""

    def parse_args(self, ctx, args):
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_TasksByDefault, no_args_is_help=True,
                  help="Evaluate a model: benchmark tasks (lmforge eval MODEL --tasks T[,T]), perplexity on text, "
                       "passkey retrieval.")


def _load(model: str, dtype: str, device: str):
    import lmforge

    where = pick_device(device, dtype)
    lm = lmforge.load(model, dtype=dtype)
    if lm.tokenizer is None:
        raise LmforgeError(f"{model} has no tokenizer; evaluation needs one")
    place(lm, where).model.eval()
    return lm


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise LmforgeError(f"{flag} expects comma-separated integers, got {text!r}") from None


def _floats(text: str, flag: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise LmforgeError(f"{flag} expects comma-separated numbers, got {text!r}") from None


@app.command("ppl")
def ppl(
    model: str = typer.Argument(..., help="Embedded model name, Hugging Face directory or .gguf file."),
    text: Path = typer.Option(..., "--text", help="Held-out UTF-8 text file to score."),
    seq_len: int = typer.Option(1024, "--seq-len", help="Window length in tokens."),
    stride: int = typer.Option(512, "--stride", help="Window step; each scored token has >= seq_len - stride "
                               "tokens of context."),
    batch: int = typer.Option(1, "--batch", help="Windows per forward pass."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | bfloat16 | float16."),
    device: str = DEVICE,
) -> None:
    """Perplexity of MODEL on --text (sliding windows, every token scored once); prints JSON."""
    from lmforge.train.eval_ppl import perplexity

    if not text.is_file():
        raise LmforgeError(f"--text file not found: {text}")
    lm = _load(model, dtype, device)
    result = perplexity(lm.model, lm.tokenizer, text.read_text(encoding="utf-8"), seq_len=seq_len, stride=stride,
                        batch_size=batch)
    typer.echo(json.dumps({"model": model, "text": str(text), **result}, indent=2))


@app.command("needle")
def needle(
    model: str = typer.Argument(..., help="Embedded model name, Hugging Face directory or .gguf file."),
    lengths: str = typer.Option("256,512,1024", "--lengths", help="Comma-separated context lengths (tokens)."),
    depths: str = typer.Option("0,0.25,0.5,0.75,1", "--depths", help="Comma-separated key depths in [0, 1]."),
    trials: int = typer.Option(3, "--trials", help="Random keys per (length, depth) cell."),
    max_new_tokens: int = typer.Option(8, "--max-new-tokens", help="Tokens greedy-decoded for the answer."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random keys."),
    out: Path = typer.Option(Path("needle"), "--out", "-o", help="Output directory (needle.json, needle.png)."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | bfloat16 | float16."),
    device: str = DEVICE,
) -> None:
    """Passkey retrieval (Mohtashami & Jaggi 2023): accuracy heatmap over --lengths x --depths."""
    from lmforge.train.needle import model_answer, run_passkey, write_heatmap, write_result

    lm = _load(model, dtype, device)
    answer = model_answer(lm.model, lm.tokenizer, max_new_tokens, lm.stop_token_ids())
    result = run_passkey(answer, lm.tokenizer, _ints(lengths, "--lengths"), _floats(depths, "--depths"), trials,
                         seed, log=typer.echo)
    result["model"] = model
    write_result(result, out / "needle.json")
    write_heatmap(result, out / "needle.png", title=f"passkey retrieval: {model}")
    typer.echo(json.dumps({"model": model, "mean_accuracy": result["mean_accuracy"],
                           "accuracy": result["accuracy"], "json": str(out / "needle.json"),
                           "png": str(out / "needle.png")}))


@app.command("run")
def run(
    model: str = typer.Argument(..., help="Embedded model name, Hugging Face directory or .gguf file."),
    tasks: str = typer.Option(..., "--tasks", "-t", help="Comma-separated task names (the project's: lmforge_mc, "
                              "lmforge_gsm, lmforge_ceval, lmforge_ceval_gen, lmforge_instruct; or ones under "
                              "--include-path) or task YAML files."),
    num_fewshot: int = typer.Option(None, "--num-fewshot", help="Few-shot examples per prompt (default: the "
                                    "task's num_fewshot, else 0)."),
    limit: float = typer.Option(None, "--limit", help="Items per task (a number >= 1), or a fraction of them (< 1)."),
    include_path: list[Path] = typer.Option([], "--include-path", help="Directory of lm-eval task YAML files "
                                            "(repeatable)."),
    chat_template: bool = typer.Option(False, "--chat-template", help="Render prompts with the model's chat "
                                       "template (few-shot examples as earlier turns)."),
    out: Path = typer.Option(Path("eval_results"), "--out", "-o", help="Output directory: results.json, "
                             "results.md (+ samples_<task>.jsonl with --log-samples)."),
    log_samples: bool = typer.Option(False, "--log-samples", help="Also write every item's prompt, output and "
                                     "score."),
    max_batch_tokens: int = typer.Option(2048, "--max-batch-tokens", min=16, help="Rows x padded length of one "
                                         "log-likelihood batch."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | bfloat16 | float16."),
    device: str = DEVICE,
) -> None:
    """Run lm-evaluation-harness tasks from local YAML + data files on MODEL; prints a markdown table, writes JSON.

    Multiple choice is scored by log-likelihood (acc, acc_norm), generative tasks by exact match after answer
    extraction. Nothing is downloaded: task data are local files.
    """
    from lmforge.eval.run_tasks import run_tasks  # torch loads after the task files are checked

    device = str(pick_device(device, dtype))  # --device cuda without a GPU: refused before the tasks load
    specs = [t.strip() for t in tasks.split(",") if t.strip()]
    summary = run_tasks(model, specs, include=list(include_path), num_fewshot=num_fewshot,
                        limit=int(limit) if limit is not None and limit >= 1 else limit, chat_template=chat_template,
                        out=out, log_samples=log_samples, log=typer.echo,
                        model_args={"dtype": dtype, "device": device, "max_batch_tokens": max_batch_tokens})
    typer.echo(f"results: {out / 'results.json'}, {out / 'results.md'} ({summary['elapsed_s']:.1f} s)")
