"""`lmforge data synth --model M --seeds SEEDS.jsonl --out OUT.jsonl --n N`: Self-Instruct style SFT data from a
local model on the batched serving engine, filtered by exact / near-duplicate (MinHash) checks and an optional
verifier; writes Alpaca records (`lmforge sft --data OUT.jsonl` reads them) and prints kept / dropped by reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from lmforge.cli import sampling_options as opt
from lmforge.common.errors import LmforgeError
from lmforge.common.threads import set_threads


def _engine_generate(lm, max_new_tokens: int, temperature: float, top_p: float, seed: int, batch_size: int):
    """Chat conversations -> answers, all of a call batched on the engine; request r of call c gets seed
    (seed, c, r), so a run is reproducible whatever the batching."""
    from lmforge.engine.llm import LLM, EngineConfig
    from lmforge.generation.sampling_params import SamplingParams

    per_request = min(lm.model.config.max_seq_len, 1024 + max_new_tokens)  # few-shot prompt + answer, in tokens
    blocks = batch_size * -(-per_request // 16)  # a KV cache for one batch, not the engine's default 1 GB
    engine = LLM(lm.model, lm.tokenizer, EngineConfig(max_num_seqs=batch_size, num_blocks=blocks))
    calls = [0]

    def generate(conversations: list[list[dict]]) -> list[str]:
        calls[0] += 1
        prompts = [lm.tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=True)
                   for c in conversations]
        params = [SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                 seed=seed * 1_000_003 + calls[0] * 1009 + r, stop_token_ids=lm.stop_token_ids(),
                                 truncate=True) for r in range(len(prompts))]
        return [lm.tokenizer.decode(o.output_ids, skip_special_tokens=True) for o in engine.generate(prompts, params)]

    return generate


def synth(
    model: str = typer.Option(..., "--model", "-m", help="The model that writes tasks and answers: a run's hf/ dir, "
                              "an HF dir, a .gguf file or an embedded name.", show_default=False),
    seeds: Path = typer.Option(..., "--seeds", help="Seed tasks, JSON lines: 'instruction' (or 'prompt') with an "
                               "optional 'output', or chat 'messages'.", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Kept pairs as Alpaca JSON lines (instruction, output).",
                             show_default=False),
    n: int = typer.Option(..., "--n", help="Pairs to keep.", show_default=False),
    verify: str | None = typer.Option(None, "--verify", help="Verifier of the answers: regex=PATTERN, json[=KEY,KEY], "
                                      "length=N or module:function / file.py:function (a reward function as "
                                      "`--reward` of grpo takes); a pair is kept when it scores >= --min-reward.",
                                      show_default=False),
    min_reward: float = typer.Option(1.0, "--min-reward", help="Lowest verifier score kept."),
    max_tries: int | None = typer.Option(None, "--max-tries", help="Stop after this many candidates (default 4 x "
                                         "--n).", show_default=False),
    max_jaccard: float = typer.Option(0.7, "--max-jaccard", help="A task whose MinHash Jaccard (word bigrams) with a "
                                      "seed or kept task reaches this is a near duplicate."),
    examples: int = typer.Option(3, "--examples", help="Tasks shown to the model per new task."),
    batch_size: int = typer.Option(8, "--batch-size", help="Candidates generated together on the engine."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1, help="Length limit of a task and of an answer."),
    temperature: float = typer.Option(0.8, "--temperature", min=0.0, help="Sampling temperature (0: greedy)."),
    top_p: float = typer.Option(0.95, "--top-p", min=0.0, max=1.0, help="Nucleus sampling."),
    seed: int = typer.Option(0, "--seed", help="Seed of the examples shown and of sampling."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    dtype: str = opt.DTYPE,
    threads: int = opt.THREADS,
) -> None:
    """Synthesize instruction data with a local model (Self-Instruct), dedup- and verifier-filtered."""
    from lmforge.train.post.rewards import RewardErrors, parse_reward
    from lmforge.train.post.synth import REASONS, read_seeds, synthesize

    if n < 1 or batch_size < 1 or examples < 1 or (max_tries is not None and max_tries < 1):
        raise LmforgeError(f"--n ({n}), --batch-size ({batch_size}), --examples ({examples}) and --max-tries "
                           f"({max_tries}) must be >= 1")
    verifier = parse_reward(verify) if verify is not None else None
    if verifier is not None and verifier.columns:
        raise LmforgeError(f"--verify {verify}: it reads the column(s) {', '.join(verifier.columns)}, which synthetic "
                           f"pairs do not have; use regex=PATTERN, json, length=N or module:function")
    set_threads(threads)
    pool = read_seeds(seeds)  # before the model loads
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from lmforge.formats.loader import load

    lm = load(model, dtype=dtype)
    if lm.tokenizer is None or lm.tokenizer.chat_template is None:
        raise LmforgeError(f"--model {model} needs a tokenizer with a chat template")
    generate = _engine_generate(lm, max_new_tokens, temperature, top_p, seed, batch_size)
    errors = RewardErrors(out.with_name(out.stem + ".verifier_errors.jsonl"), log=typer.echo)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} kept"),
                  TimeElapsedColumn(), console=Console(stderr=True), disable=quiet) as bar:
        task = bar.add_task("synth", total=n)
        result = synthesize(generate, pool, n, verifier, min_reward, examples, batch_size, max_tries, max_jaccard,
                            seed, errors, progress=lambda kept, made: bar.update(task, completed=kept))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result.kept))
    report = {"generated": result.generated, "kept": len(result.kept),
              "dropped": {r: result.dropped.get(r, 0) for r in REASONS}, "verifier": verify,
              "verifier_errors": errors.count}
    out.with_name(out.stem + ".report.json").write_text(json.dumps(report, indent=2) + "\n")
    dropped = ", ".join(f"{r} {c}" for r, c in report["dropped"].items())
    typer.echo(f"generated {result.generated}, kept {len(result.kept)} (of --n {n}); dropped: {dropped}; wrote {out}")
