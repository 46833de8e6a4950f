"""SFT data selection against a random pick at the same budget: the embedded instruction task with planted
low-quality rows (wrong answers, truncated answers, duplicated rows), the small pretrained model of
tests/pretrained_tiny.py fine-tuned on the top share chosen by `lmforge data select` and on a random share, scored by
exact match on the embedded held-out split. The selector: exact copies dropped first (--dedup), then the perplexity of
each row's answer under a reference model fine-tuned on the whole noisy pool (small-loss selection: the rule most
rows follow is learned first, so rows that break it — wrong or cut answers — stay unlikely), ranked inside k-means
clusters (--strata) of sentence embeddings (--embedder, all-MiniLM-L6-v2), so every kind of task keeps its share.
Each finished arm is reused by a rerun; --arms runs one arm per process.

    python benchmarks/sft_selection.py --seeds 0 1 2 --by perplexity --out runs/sft_selection

Prints JSON: per seed the exact match of each arm, the planted share it kept, and the mean gap selector - random.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import subprocess
import sys
import time
from pathlib import Path

from lmforge.data.tasks.instructions import held_out_prompts, instruction_split, prompt_key
from lmforge.formats.loader import load
from lmforge.train.post.exact_match import exact_match


def plant(seed: int, clean: int, wrong: int, truncated: int, duplicated: int) -> list[dict]:
    """The pool: `clean` conversations of the train split, plus rows with a wrong answer (another conversation's
    answer of the same task), with the answer cut to its first half, and copies (5 each) of a few clean rows."""
    rng = random.Random(seed)
    held = held_out_prompts(instruction_split("eval", 200, seed))
    pool = [e for e in instruction_split("train", clean + wrong + truncated + 500, seed)
            if prompt_key(e.messages) not in held]
    rows = [{"messages": list(e.messages), "planted": "clean"} for e in pool[:clean]]
    by_kind: dict[str, list[str]] = {}
    for e in pool:
        by_kind.setdefault(e.kind, []).append(e.answer)
    for e in pool[clean:clean + wrong]:
        other = rng.choice([a for a in by_kind[e.kind] if a != e.answer] or ["I do not know."])
        rows.append({"messages": [*e.messages[:-1], {"role": "assistant", "content": other}], "planted": "wrong"})
    cut_from = [e for e in pool[clean + wrong:] if len(e.answer) >= 4][:truncated]
    for e in cut_from:
        rows.append({"messages": [*e.messages[:-1], {"role": "assistant", "content": e.answer[:len(e.answer) // 2]}],
                     "planted": "truncated"})
    for row in rng.sample(rows[:clean], duplicated // 5):
        rows += [{**row, "planted": "duplicate"} for _ in range(5)]
    rng.shuffle(rows)
    return rows


def cli(*args) -> str:
    result = subprocess.run([sys.executable, "-m", "lmforge", *map(str, args)], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"lmforge {' '.join(map(str, args[:3]))} failed:\n{result.stderr[-3000:]}")
    return result.stdout.strip().splitlines()[-1]


def sft(model: str, data: Path, out: Path, args, seed: int) -> Path:
    if (out / "hf" / "model.safetensors").is_file() and (out / "data.sha").is_file() and \
            (out / "data.sha").read_text() == _digest(data, args):
        return out / "hf"  # this run finished before (the benchmark resumes arm by arm)
    cli("sft", "--model", model, "--data", data, "--out", out, "--max-steps", args.steps, "--batch-size", 16,
        "--lr", "3e-3", "--seq-len", 128, "--eval-examples", 1, "--seed", seed, "--threads", args.threads,
        "--device", "cpu", "--precision", "fp32", "--no-progress", "--fresh")
    (out / "data.sha").write_text(_digest(data, args))
    return out / "hf"


def _digest(data: Path, args) -> str:
    return hashlib.sha256(data.read_bytes() + str(args.steps).encode()).hexdigest()


def heldout_exact_match(model_dir: Path, seed: int, n: int) -> float:
    held = instruction_split("eval", n, seed)
    lm = load(str(model_dir))
    return exact_match(lm.model, lm.tokenizer, [list(e.messages) for e in held], max_new_tokens=24)["exact_match"]


def planted_share(path: Path, pool: list[dict]) -> dict:
    """The share of each planted kind among the kept rows, and of distinct conversations (a copy counts once)."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    kept = [r["planted"] for r in rows]
    distinct = len({json.dumps(r["messages"], sort_keys=True) for r in rows})
    return {**{k: round(kept.count(k) / len(kept), 3) for k in ("clean", "wrong", "truncated", "duplicate")},
            "distinct": round(distinct / len(kept), 3)}


def run_seed(seed: int, args, base: str) -> dict:
    root = Path(args.out) / f"seed{seed}"
    root.mkdir(parents=True, exist_ok=True)
    pool = plant(seed, args.clean, args.wrong, args.truncated, args.duplicated)
    data = root / "pool.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in pool))
    t0 = time.time()
    reference = sft(base, data, root / "reference", args, seed)  # fine-tuned on everything, noise included
    picks = {"random": ("--by", "random", "--seed", seed),
             args.by: ("--by", args.by, "--model", reference, "--strata", args.strata, "--max-similarity",
                       args.max_similarity, *(("--embedder", args.embedder) if args.embedder else ()),
                       *(("--dedup",) if args.dedup else ()))}
    out = {"pool": len(pool), "keep": args.keep}
    for arm, how in picks.items():
        if arm not in args.arms and not (arm != "random" and "selector" in args.arms):
            continue
        chosen, done = root / f"{arm}.jsonl", root / f"{arm}.select.json"
        command = ["data", "select", data, "--out", chosen, "--keep", args.keep, *how, "-q", "--threads", args.threads]
        key = [str(c) for c in command]
        if not (done.is_file() and json.loads(done.read_text())["command"] == key):  # else reuse that selection
            done.write_text(json.dumps({"command": key, "printed": cli(*command)}))
        out[f"{arm}_select"] = json.loads(done.read_text())["printed"]
        out[f"{arm}_kept"] = planted_share(chosen, pool)
        out[f"{arm}_exact_match"] = heldout_exact_match(sft(base, chosen, root / arm, args, seed), seed, args.heldout)
    if set(args.arms) != {"random", "selector"}:
        return out  # one arm only (arms run in parallel processes); a later full run reuses both
    out["reference_exact_match"] = heldout_exact_match(reference, seed, args.heldout)
    out["gap"] = round(out[f"{args.by}_exact_match"] - out["random_exact_match"], 4)
    out["seconds"] = round(time.time() - t0, 1)
    print(json.dumps({"seed": seed, **out}), flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="runs/sft_selection")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--by", default="perplexity", choices=("perplexity", "quality-diversity", "kcenter"))
    p.add_argument("--keep", type=float, default=0.3)
    p.add_argument("--strata", type=int, default=8, help="k-means clusters the selector ranks inside (0: off)")
    p.add_argument("--max-similarity", type=float, default=0.99, help="quality-diversity's cosine cap")
    p.add_argument("--embedder", default="all-minilm-l6-v2", help="embeddings of --strata / diversity ('': the "
                   "reference model's mean-pooled states)")
    p.add_argument("--dedup", action=argparse.BooleanOptionalAction, default=True, help="selector drops exact "
                   "copies first")
    p.add_argument("--clean", type=int, default=1500)
    p.add_argument("--wrong", type=int, default=600)
    p.add_argument("--truncated", type=int, default=300)
    p.add_argument("--duplicated", type=int, default=500)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--arms", nargs="+", default=["random", "selector"], choices=("random", "selector"))
    p.add_argument("--heldout", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.pretrained_tiny import pretrained_tiny_dir  # the shared small pretrained model (built once, cached)

    base = str(pretrained_tiny_dir())
    runs = [run_seed(s, args, base) for s in args.seeds]
    if set(args.arms) != {"random", "selector"}:
        return
    gaps = [r["gap"] for r in runs]
    ours, random_ = [r[f"{args.by}_exact_match"] for r in runs], [r["random_exact_match"] for r in runs]
    print(json.dumps({"benchmark": "sft_selection", "by": args.by, "dedup": args.dedup, "embedder": args.embedder,
                      "seeds": args.seeds, "selector_exact_match": ours, "random_exact_match": random_,
                      "ours": round(sum(ours) / len(ours), 4), "baseline": round(sum(random_) / len(random_), 4),
                      "ratio": round(sum(ours) / max(sum(random_), 1e-9), 3),
                      "mean_gap": round(sum(gaps) / len(gaps), 4), "selector_wins": sum(g > 0 for g in gaps)}))


if __name__ == "__main__":
    main()
