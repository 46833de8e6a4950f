"""Best-of-8 on held-out step-wise problems (issue 30, item 5): a process reward model (`lmforge prm train`, min or
product of its step scores) against an outcome reward model (`lmforge rm`, Bradley-Terry on final-answer
correctness: a solution with the right final answer preferred to one with a wrong one) and majority vote. Both
reward models share the backbone (the tests' small pretrained model unless --model) and the optimizer steps.
The policy is the synthetic sampler with known error rates (prm_data.StepSampler: forgotten carries, so wrong
answers agree; slips; compensating slips that make a wrong process end right) — the 1M model cannot do the sums.
Prints JSON: the final-answer accuracy of each selector (and of PRM-weighted majority vote), pass@1 (a random
sample), pass@8 (an oracle), the share of picks whose every step is right, and PRM (min) / the best baseline.

    python benchmarks/prm_best_of_n.py --steps 300 --problems 300 --out runs/prm_bon
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from lmforge.train.post.pair_config import RewardConfig
from lmforge.train.post.prm import aggregate, best_of_n, majority_vote
from lmforge.train.post.prm_config import PRMConfig
from lmforge.train.post.prm_data import heldout_problems, sample_solution, step_problem
from lmforge.train.post.prm_train import load_prm, train_prm
from lmforge.train.post.reward_model import load_reward_model
from lmforge.train.post.reward_train import train_reward_model


def outcome_pairs(n_pairs: int, seed: int, n: int) -> list[dict]:
    """ORM data from the same sampler and the PRM's train problems: per problem, right-final vs wrong-final."""
    rng, pairs = random.Random(f"orm:{seed}"), []
    while len(pairs) < n_pairs:
        problem = step_problem(rng)
        if random.Random(f"heldout:{problem['prompt']}").randrange(5) == 0:
            continue
        samples = [sample_solution(problem, rng) for _ in range(n)]
        good = [s for s in samples if s["correct"]]
        bad = [s for s in samples if not s["correct"]]
        for g, b in zip(good, bad, strict=False):
            pairs.append({"prompt": problem["prompt"], "chosen": "\n".join(g["steps"]),
                          "rejected": "\n".join(b["steps"])})
    return pairs[:n_pairs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="Backbone of both reward models (default: the tests' small "
                        "pretrained model).")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--train", type=int, default=3000, help="Training solutions (PRM) / pairs (ORM).")
    parser.add_argument("--problems", type=int, default=300, help="Held-out problems.")
    parser.add_argument("--n", type=int, default=8, help="Samples per problem.")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="runs/prm_bon")
    args = parser.parse_args()
    model = args.model
    if model is None:
        from tests.pretrained_tiny import pretrained_tiny_dir

        model = str(pretrained_tiny_dir())
    out = Path(args.out)
    shared = {"model": model, "threads": args.threads, "fresh": True,
              "schedule": {"max_steps": args.steps, "warmup_steps": 20},
              "batch": {"batch_size": args.batch_size}, "logging": {"eval_every": args.steps},
              "checkpoint": {"checkpoint_every": args.steps}}
    quiet = lambda message: None  # noqa: E731
    start = time.time()
    prm_summary = train_prm(PRMConfig.from_dict({**shared, "out": str(out / "prm"),
                                                 "data": {"train_solutions": args.train}}), log=quiet)
    prm_s = time.time() - start
    pairs_file = out / "orm_pairs.jsonl"
    pairs_file.write_text("".join(json.dumps(p) + "\n" for p in outcome_pairs(args.train, 0, args.n)))
    start = time.time()
    orm_summary = train_reward_model(RewardConfig.from_dict({**shared, "out": str(out / "orm"),
                                                            "data": {"data": str(pairs_file),
                                                                     "train_pairs": args.train,
                                                                     "max_len": 128}}), log=quiet)
    orm_s = time.time() - start
    prm, orm = load_prm(out / "prm" / "prm"), load_reward_model(out / "orm" / "reward_model")

    rng = random.Random("prm-bench-samples")
    right = {k: 0 for k in ("prm_min", "prm_prod", "orm", "majority", "prm_weighted_vote", "pass@1",
                            f"pass@{args.n}")}
    clean = {k: 0 for k in ("prm_min", "prm_prod", "orm")}  # picks whose every step is right (not just the answer)
    problems = heldout_problems(args.problems)
    for problem in problems:
        samples = [sample_solution(problem, rng) for _ in range(args.n)]
        probs = prm.step_scores_batch([(problem["prompt"], s["steps"]) for s in samples])
        orm_scores = orm.score([problem["prompt"]] * args.n, ["\n".join(s["steps"]) for s in samples]).tolist()
        finals = [s["final"] for s in samples]
        picks = {"prm_min": best_of_n([aggregate(p, "min") for p in probs]),
                 "prm_prod": best_of_n([aggregate(p, "prod") for p in probs]), "orm": best_of_n(orm_scores)}
        for name, i in picks.items():
            right[name] += samples[i]["correct"]
            clean[name] += all(samples[i]["labels"])
        votes: dict[int, float] = {}
        for s, p in zip(samples, probs, strict=True):  # Math-Shepherd / Lightman: majority vote weighted by the PRM
            votes[s["final"]] = votes.get(s["final"], 0.0) + aggregate(p, "min")
        right["prm_weighted_vote"] += max(votes, key=votes.get) == problem["answer"]
        right["majority"] += majority_vote(finals) == problem["answer"]
        right["pass@1"] += sum(s["correct"] for s in samples) / args.n
        right[f"pass@{args.n}"] += any(s["correct"] for s in samples)
    acc = {k: v / len(problems) for k, v in right.items()}
    best_baseline = max(acc["orm"], acc["majority"])
    report = {"benchmark": "prm_best_of_n", "policy": "synthetic sampler (prm_data.StepSampler defaults)",
              "backbone": model, "n": args.n, "heldout_problems": len(problems), "accuracy": acc,
              "right_process": {k: v / len(problems) for k, v in clean.items()},
              "ours": acc["prm_min"], "baseline": best_baseline, "ratio": acc["prm_min"] / max(best_baseline, 1e-9),
              "prm_heldout_step_accuracy": prm_summary.get("step_accuracy_after"),
              "prm_heldout_error_recall": prm_summary.get("error_recall_after"),
              "orm_heldout_pairwise_accuracy": orm_summary.get("accuracy_after"),
              "train_steps": args.steps, "prm_train_s": round(prm_s, 1), "orm_train_s": round(orm_s, 1)}
    print(json.dumps(report, indent=1))
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
