"""`lmforge rlaif`: AI-feedback preference pairs for `lmforge dpo` — sample K responses per prompt from a policy (or
take them from the file), let a judge (an lmforge model or an OpenAI-compatible endpoint, MT-Bench's pairwise
prompt) compare every two in both orders, keep the position-consistent verdicts. The work is in train/post/rlaif.py;
this file joins it to the judge of lmforge/eval (a higher layer than train).
"""

from __future__ import annotations

from pathlib import Path

import typer

from lmforge.cli.device_option import DEVICE, pick_device, place
from lmforge.common.errors import LmforgeError


def rlaif(
    prompts: Path = typer.Option(..., "--prompts", help="JSONL, one {\"prompt\": str} per line; a line with "
                                 "\"responses\": [str, ...] is judged as it is instead of sampled.",
                                 show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Write the {\"prompt\", \"chosen\", \"rejected\"} JSONL here "
                             "(what `lmforge dpo --data` reads).", show_default=False),
    model: str = typer.Option(None, "--model", "-m", help="Policy to sample from: an HF dir, a .gguf or smollm2-135m "
                              "(needed unless every line has responses).", show_default=False),
    k: int = typer.Option(4, "--k", help="Responses sampled per prompt (every two are compared)."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="Tokens per sampled response."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature of the policy (> 0)."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed (row i samples with seed + i)."),
    judge: str = typer.Option(None, "--judge", help="Judge model: an lmforge / HF directory, a GGUF file or "
                              "smollm2-135m (or use --endpoint).", show_default=False),
    endpoint: str = typer.Option(None, "--endpoint", help="Judge with an OpenAI-compatible API instead, e.g. "
                                 "http://127.0.0.1:8000/v1.", show_default=False),
    api_key: str = typer.Option(None, "--api-key", envvar="LMFORGE_API_KEY", help="Bearer key for --endpoint."),
    judge_model: str = typer.Option(None, "--judge-model", help="Model id at --endpoint (default: the first of "
                                    "GET /models).", show_default=False),
    judge_tokens: int = typer.Option(256, "--judge-tokens", help="Judgment length (greedy)."),
    device: str = DEVICE,
) -> None:
    """Make DPO preference pairs with AI feedback (RLAIF): K samples per prompt, every two compared by a judge in
    both orders; a pair is kept only when both orders agree (position-inconsistent verdicts and ties are dropped)."""
    if (judge is None) == (endpoint is None):
        raise LmforgeError("pass exactly one of --judge MODEL or --endpoint URL")
    if k < 2:
        raise LmforgeError(f"--k must be >= 2 (responses compared per prompt), got {k}")
    if max_new_tokens < 1 or judge_tokens < 1:
        raise LmforgeError("--max-new-tokens and --judge-tokens must be >= 1")
    if not temperature > 0:
        raise LmforgeError(f"--temperature must be > 0 (K greedy samples would be equal), got {temperature}")
    where = pick_device(device)  # the policy and a local judge run there
    from lmforge.train.post.rlaif import judge_pairs, read_prompts, write_pairs

    rows = read_prompts(prompts)
    need = [i for i, r in enumerate(rows) if r["responses"] is None]
    if need and model is None:
        raise LmforgeError(f"{len(need)} prompt(s) in {prompts} have no responses; pass --model to sample them")
    # refuses a bad endpoint before sampling
    compare = _compare(judge, endpoint, api_key, judge_model, judge_tokens, where)
    if need:
        sampled = _sample(model, [rows[i]["prompt"] for i in need], k, max_new_tokens, temperature, seed, where)
        for i, answers in zip(need, sampled, strict=True):
            rows[i]["responses"] = answers
    pairs, stats = judge_pairs(compare, [r["prompt"] for r in rows], [r["responses"] for r in rows])
    write_pairs(pairs, out)
    typer.echo(f"rlaif: {len(rows)} prompts, {stats['comparisons']} comparisons (each asked in both orders): "
               f"{stats['consistent']} consistent, {stats['inconsistent']} position-inconsistent (dropped), "
               f"{stats['ties']} ties, {stats['unparsed']} unparsed; position bias {stats['position_bias']:+.2f}; "
               f"wrote {len(pairs)} pairs to {out}")


def _compare(judge: str | None, endpoint: str | None, api_key: str | None, judge_model: str | None,
             max_tokens: int, device=None):
    """A rlaif Compare on lmforge's pairwise judge prompt: each item one conversation, its verdict parsed."""
    from lmforge.eval.judge import pair_messages, parse_verdict
    from lmforge.eval.judge_backends import endpoint_judge, engine_judge

    if endpoint is not None:
        ask = endpoint_judge(endpoint, api_key, judge_model, max_tokens)
    else:
        from lmforge.formats.loader import load
        from lmforge.model.inference import prepare_for_inference

        lm = place(load(judge), device or "cpu")
        prepare_for_inference(lm.model)
        ask = engine_judge(lm, max_tokens)

    def compare(items: list[tuple[str, str, str]]) -> list[str | None]:
        answers = ask([pair_messages(q, a, b) for q, a, b in items])
        return [parse_verdict(text, a, b) for text, (_, a, b) in zip(answers, items, strict=True)]

    return compare


def _sample(model: str, prompts: list[str], k: int, max_new_tokens: int, temperature: float,
            seed: int, device=None) -> list[list[str]]:
    from lmforge.formats.loader import load
    from lmforge.train.post.rlaif import sample_responses
    from lmforge.train.post.rollout import RolloutParams, policy_generate_fn

    lm = place(load(model), device or "cpu")
    if lm.tokenizer is None or lm.tokenizer.chat_template is None:
        raise LmforgeError(f"{model} needs a tokenizer with a chat template to be sampled from")
    pad_id = lm.config.pad_token_id if lm.config.pad_token_id is not None else 0
    generate_fn = policy_generate_fn(lm.model, lm.stop_token_ids(), pad_id)
    return sample_responses(lm.tokenizer, generate_fn, prompts, k,
                            RolloutParams(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed))
