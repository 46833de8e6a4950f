"""Best-of-8 on held-out step-wise problems (issue 30, item 5): a process reward model (`lmforge prm train`, min or
product of its step scores) against two outcome reward models — `lmforge rm` (Bradley-Terry on final-answer
correctness: a solution with the right final answer preferred to one with a wrong one) and the PRM's own head and
code trained with BCE on one label per solution, the final answer's correctness, read at its last newline
(`lmforge prm train --outcome-labels`: Lightman et al.'s ORM) — and majority vote, each by argmax and by RM-weighted
majority vote (Math-Shepherd's "verification" and "SC + reward model"). All reward models share the backbone and the
optimizer steps; the PRM and the BCE ORM also the solutions and batches. The backbone: by default a 0.8M Llama
pretrained here on the task's correct solutions with a digit-splitting tokenizer (--backbone tiny: the tests' 1M
model, which reads "65" as one token and cannot tell 57+8=66 from 57+8=65). The policy is the synthetic sampler with
known error rates (prm_data.StepSampler: forgotten carries, so wrong answers agree; slips; compensating slips that
make a wrong process end right). Prints JSON: the final-answer accuracy of each selector, pass@1, pass@8 (an
oracle), the share of picks whose every step is right, the PRM's recall / AUC per planted error, and paired bootstrap
95% intervals (same problems, same samples) of PRM (min) - each baseline, by argmax and by weighted vote.

    python benchmarks/prm_best_of_n.py --steps 400 --train 3000 --problems 1000 --threads 1 --out runs/prm_bon
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import random
import subprocess
import sys
import time
from pathlib import Path

import torch

from lmforge.common.threads import torch_threads
from lmforge.formats.loader import load
from lmforge.train.post.pair_config import RewardConfig
from lmforge.train.post.prm import aggregate, best_of_n, majority_vote, paired_bootstrap, weighted_vote
from lmforge.train.post.prm_config import PRMConfig
from lmforge.train.post.prm_data import StepSampler, heldout_problems, sample_solution, step_problem, step_solutions
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


def adapt_backbone(model: str, out: Path, steps: int, threads: int | None) -> str:
    """The reward models' shared starting point: the backbone fine-tuned (language-model loss, `lmforge sft`) on
    correct step-wise solutions of training problems, as Lightman et al.'s reward models start from a base fine-tuned
    on math text (MathMix): a verifier has to have seen right sums to tell a wrong one. No labels, no wrong steps."""
    hf = out / "adapt" / "hf"
    data = out / "textbook.jsonl"
    rows = step_solutions(6000, "train", seed=7, sampler=StepSampler(0.0, 0.0, 0.0))
    text = "".join(json.dumps({"instruction": r["prompt"], "output": "\n".join(r["steps"])}) + "\n" for r in rows)
    if (hf / "model.safetensors").is_file() and data.is_file() and data.read_text() == text \
            and (out / "adapt" / "steps").is_file() and (out / "adapt" / "steps").read_text() == str(steps):
        return str(hf)  # made by an earlier run with the same data and steps
    data.write_text(text)
    command = [sys.executable, "-m", "lmforge", "sft", "--model", model, "--data", str(data), "--out",
               str(out / "adapt"), "--max-steps", str(steps), "--batch-size", "16", "--lr", "3e-3", "--seq-len", "128",
               "--eval-examples", "1", "--seed", "0", "--device", "cpu", "--precision", "fp32", "--no-progress",
               "--fresh", *(("--threads", str(threads)) if threads else ())]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"lmforge sft (backbone adaptation) failed:\n{result.stderr[-3000:]}")
    (out / "adapt" / "steps").write_text(str(steps))
    return str(hf)


DIGIT_BACKBONE = {"documents": 20000, "vocab_size": 300, "preset": "pretrain-1m", "seq_len": 128, "lr": 3e-3,
                  "batch_size": 16}


def digit_backbone(out: Path, steps: int, threads: int | None) -> str:
    """The reward models' shared backbone: a 0.8M Llama that lmforge pretrains (`lmforge tokenizer train
    --split-digits`, `data pack`, `pretrain`) on correct step-by-step solutions of training problems only, with a
    tokenizer that gives every digit its own token (as Llama/SmolLM/Qwen do), so "57+8=66" and "57+8=65" differ in a
    digit it can check. Built once per OUT and settings (OUT/digit_backbone/stamp), reused after."""
    root, settings = out / "digit_backbone", json.dumps({**DIGIT_BACKBONE, "steps": steps})
    hf = root / "pretrain" / "hf"
    if (root / "stamp").is_file() and (root / "stamp").read_text() == settings and (hf / "model.safetensors").is_file():
        return str(hf)
    root.mkdir(parents=True, exist_ok=True)
    cfg = DIGIT_BACKBONE
    rows = step_solutions(cfg["documents"], "train", seed=7, sampler=StepSampler(0.0, 0.0, 0.0))
    docs = [r["prompt"] + "\n" + "\n".join(r["steps"]) + "\n" for r in rows]
    (root / "textbook.txt").write_text("".join(docs))
    (root / "textbook.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    threads_flag = ("--threads", str(threads)) if threads else ()
    for command in (
            ["tokenizer", "train", str(root / "textbook.txt"), "--vocab-size", str(cfg["vocab_size"]),
             "--split-digits", "--out", str(root / "tokenizer")],
            ["data", "pack", "--tokenizer", str(root / "tokenizer"), "--input", str(root / "textbook.jsonl"),
             "--out", str(root / "packed"), "--seq-len", str(cfg["seq_len"])],
            ["pretrain", "--preset", cfg["preset"], "--data-dir", str(root / "packed"), "--tokenizer",
             str(root / "tokenizer"), "--max-steps", str(steps), "--lr", str(cfg["lr"]), "--batch-size",
             str(cfg["batch_size"]), "--warmup-steps", "50", "--out", str(root / "pretrain"), "--device", "cpu",
             "--precision", "fp32", "--no-progress", "--fresh", "--sample-every", str(10 * steps), "--eval-every",
             str(steps), "--checkpoint-every", str(steps), *threads_flag]):
        result = subprocess.run([sys.executable, "-m", "lmforge", *command], capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"lmforge {command[0]} (digit backbone) failed:\n{result.stderr[-3000:]}")
    (root / "stamp").write_text(settings)
    return str(hf)


def error_kinds(problem: dict, steps: list[str]) -> list[str]:
    """Each step's planted error (the sampler's, read back from the text): ok, miscopy (the running sum copied with
    its carry dropped), recover (a later copy adding the 10 back), slip (a sum off by one), or two joined by +."""
    previous, out = problem["start"], []
    for step in steps:
        x, rest = step.split("+")
        a, y = map(int, rest.split("="))
        x = int(x)
        kinds = ["miscopy"] if x == previous - 10 else ["recover"] if x == previous + 10 else []
        kinds += ["slip"] if x + a != y else []
        out.append("+".join(kinds) or "ok")
        previous = y
    return out


def auc(wrong: list[float], right: list[float]) -> float:
    """P(a wrong step's score < a right step's), ties counted half: how well the PRM ranks the errors low."""
    if not wrong or not right:
        return float("nan")
    ranked = sorted(right)
    above = sum(len(ranked) - bisect.bisect_right(ranked, v) for v in wrong)
    ties = sum(bisect.bisect_right(ranked, v) - bisect.bisect_left(ranked, v) for v in wrong)
    return (above + 0.5 * ties) / (len(wrong) * len(ranked))


@torch.no_grad()
def result_logprobs(lm, prompt: str, steps: list[str]) -> list[float]:
    """Per step, the backbone language model's own log-probability of the step's result (the tokens after "=",
    teacher-forced): no training, no labels — a diagnostic of whether the backbone knows the sums at all."""
    ids, spans = lm.tokenizer.encode_plain(prompt + "\n"), []
    for step in steps:
        piece = lm.tokenizer.encode_plain(step + "\n")
        cut = max(i for i, t in enumerate(piece) if "=" in lm.tokenizer.decode([t])) + 1
        spans.append((len(ids) + cut, len(ids) + len(piece) - 1))  # the result's tokens, not the newline
        ids += piece
    logp = torch.log_softmax(lm.model(torch.tensor([ids]))[0].float(), -1)
    return [sum(logp[j - 1, ids[j]].item() for j in range(a, b)) for a, b in spans]


def selector_scores(prm, orm_bt, orm_bce, problem: dict, samples: list[dict]) -> tuple[dict, dict, list]:
    """Per selector, the samples' scores (argmax best-of-n) and their vote weights (RM-weighted majority vote:
    Math-Shepherd's "SC + reward model", Lightman et al.'s PRM-weighted vote), and the PRM's step probabilities.
    PRM and BCE ORM: P(correct), a probability, is its own weight. The Bradley-Terry ORM's reward is defined only up to
    an additive constant (its loss sees only differences r_chosen - r_rejected), so its weight has to be
    shift-invariant: exp(r - max r) over the problem's samples (the softmax of the rewards, as the BT model's
    P(a preferred to b) = e^ra / (e^ra + e^rb)); sigmoid(r) would read the arbitrary offset as a probability."""
    items = [(problem["prompt"], s["steps"]) for s in samples]
    probs = prm.step_scores_batch(items)
    bt = orm_bt.score([problem["prompt"]] * len(samples), ["\n".join(s["steps"]) for s in samples]).tolist()
    bce = orm_bce.outcome_scores_batch(items)  # as it was trained: at the last newline, over the whole solution
    scores = {"prm_min": [aggregate(p, "min") for p in probs], "prm_prod": [aggregate(p, "prod") for p in probs],
              "orm_bt": bt, "orm_bce": bce}
    weights = {**scores, "orm_bt": [math.exp(r - max(bt)) for r in bt]}
    return scores, weights, probs


PAIRED = {"argmax": ("orm_bt", "orm_bce", "majority", "prm_prod"),
          "vote": ("orm_bt_vote", "orm_bce_vote", "majority", "prm_prod_vote")}


def best_of_n_figures(prm, orm_bt, orm_bce, problems: list[dict], n: int, lm=None) -> dict:
    """Every selector's final-answer accuracy on n samples per problem (the same samples for all), by argmax and by
    RM-weighted vote, the share of argmax picks whose every step is right, and how the PRM scores each kind of planted
    error (recall at 0.5, AUC); with lm (the shared backbone), also best-of-n by its own result log-probability (min
    over steps) and that score's AUC per planted error."""
    rng = random.Random("prm-bench-samples")
    lm_kind: dict[str, list[float]] = {}
    right: dict[str, list[float]] = {"majority": [], "pass@1": [], f"pass@{n}": []}  # per problem, for the bootstrap
    clean: dict[str, int] = {}  # argmax picks whose every step is right (not just the answer)
    by_kind: dict[str, list[float]] = {}
    for problem in problems:
        samples = [sample_solution(problem, rng) for _ in range(n)]
        scores, weights, probs = selector_scores(prm, orm_bt, orm_bce, problem, samples)
        finals = [s["final"] for s in samples]
        picks = {name: best_of_n(v) for name, v in scores.items()}
        if lm is not None:
            checks = [result_logprobs(lm, problem["prompt"], s["steps"]) for s in samples]
            picks["backbone_logprob_min"] = best_of_n([min(c) for c in checks])
            for s, c in zip(samples, checks, strict=True):
                for kind, score in zip(error_kinds(problem, s["steps"]), c, strict=True):
                    lm_kind.setdefault(kind, []).append(score)
        for name, i in picks.items():
            right.setdefault(name, []).append(float(samples[i]["correct"]))
            clean[name] = clean.get(name, 0) + all(samples[i]["labels"])
        for name, w in weights.items():
            right.setdefault(f"{name}_vote", []).append(float(weighted_vote(finals, w) == problem["answer"]))
        for s, p in zip(samples, probs, strict=True):
            for kind, score in zip(error_kinds(problem, s["steps"]), p, strict=True):
                by_kind.setdefault(kind, []).append(score)
        right["majority"].append(float(majority_vote(finals) == problem["answer"]))
        right["pass@1"].append(sum(s["correct"] for s in samples) / n)
        right[f"pass@{n}"].append(float(any(s["correct"] for s in samples)))
    ok = by_kind.get("ok", [])
    kinds = {k: {"steps": len(v), "recall@0.5": round(sum(x <= 0.5 for x in v) / len(v), 3),
                 "auc_vs_right_steps": round(auc(v, ok), 3)} for k, v in sorted(by_kind.items()) if k != "ok"}
    paired = {f"{ours}_minus_{k}": {key: round(v, 4) for key, v in paired_bootstrap(right[ours], right[k]).items()}
              for ours, setting in (("prm_min", "argmax"), ("prm_min_vote", "vote")) for k in PAIRED[setting]}
    lm_auc = {k: round(auc(v, lm_kind["ok"]), 3) for k, v in sorted(lm_kind.items()) if k != "ok"}
    return {"accuracy": {k: round(sum(v) / len(problems), 4) for k, v in right.items()},
            "right_process": {k: round(v / len(problems), 4) for k, v in clean.items()}, "prm_by_error": kinds,
            "paired_bootstrap_95": paired, **({"backbone_logprob_auc_by_error": lm_auc} if lm_kind else {})}


REUSABLE = {"prm": "prm", "orm_bce": "orm_bce", "orm_bt": "orm"}  # reward model -> its run directory in OUT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", choices=("digits", "tiny"), default="digits", help="Shared backbone of both "
                        "reward models: digits (default) = a 0.8M Llama lmforge pretrains on the task's correct "
                        "solutions with a digit-splitting tokenizer; tiny = the tests' pretrained 1M Llama (reads "
                        "two-digit numbers as one token), adapted by --adapt-steps of SFT.")
    parser.add_argument("--model", default=None, help="Backbone of both reward models instead of --backbone (an HF "
                        "directory), adapted by --adapt-steps of SFT.")
    parser.add_argument("--pretrain-steps", type=int, default=1500, help="Pretraining steps of the digit backbone.")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16, help="Pairs per ORM step; the PRM reads twice as "
                        "many solutions per step, so both see the same number of solutions.")
    parser.add_argument("--train", type=int, default=3000, help="ORM pairs; the PRM gets twice as many solutions "
                        "(the solutions those pairs hold).")
    parser.add_argument("--problems", type=int, default=1000, help="Held-out problems.")
    parser.add_argument("--n", type=int, default=8, help="Samples per problem.")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="runs/prm_bon")
    parser.add_argument("--adapt-steps", type=int, default=None, help="SFT steps of the shared backbone on correct "
                        "step-wise solutions before either reward model trains (0: the backbone as it is; default 400 "
                        "for --backbone tiny or --model, 0 for the digit backbone, pretrained on those solutions).")
    parser.add_argument("--backbone-check", action=argparse.BooleanOptionalAction, default=True, help="Also pick by "
                        "the backbone's own log-probability of each step's result (no training): does it know the "
                        "sums the PRM has to check?")
    parser.add_argument("--reuse", nargs="*", default=[], choices=REUSABLE, help="Score with these reward models "
                        "from an earlier run in OUT instead of training them (to study one model's variants; the "
                        "figures to report come from a run that trains all three).")
    parser.add_argument("--reuse-orm", action="store_true", help="The same as --reuse orm_bt.")
    parser.add_argument("--step-surprisal", action="store_true", help="The PRM and ORM-BCE (the same architecture) "
                        "also read the backbone's own surprise at each step's tokens (`prm train --step-surprisal`).")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cpu_start, start = time.process_time(), time.time()
    wall_start = start  # CPU: this process's (the backbone's commands not counted)
    digits = args.model is None and args.backbone == "digits"
    if digits:
        model = digit_backbone(out, args.pretrain_steps, args.threads)
    elif args.model is None:
        from tests.pretrained_tiny import pretrained_tiny_dir

        model = str(pretrained_tiny_dir())
    else:
        model = args.model
    backbone_s = time.time() - start
    adapt_steps = args.adapt_steps if args.adapt_steps is not None else 0 if digits else 400
    start = time.time()
    backbone = adapt_backbone(model, out, adapt_steps, args.threads) if adapt_steps else model
    adapt_s = time.time() - start
    shared = {"model": backbone, "threads": args.threads, "fresh": True,
              "schedule": {"max_steps": args.steps, "warmup_steps": 20}, "logging": {"eval_every": args.steps},
              "checkpoint": {"checkpoint_every": args.steps}}
    quiet = lambda message: None  # noqa: E731
    reuse = set(args.reuse) | ({"orm_bt"} if args.reuse_orm else set())
    seconds, summaries = {}, {}
    for name in REUSABLE:  # the PRM, the same code trained on outcome labels, the Bradley-Terry ORM
        start, run_dir = time.time(), out / REUSABLE[name]
        if name in reuse:
            summaries[name] = json.loads((run_dir / "summary.json").read_text())
            continue
        if name == "orm_bt":
            pairs_file = out / "orm_pairs.jsonl"
            pairs_file.write_text("".join(json.dumps(p) + "\n" for p in outcome_pairs(args.train, 0, args.n)))
            summaries[name] = train_reward_model(RewardConfig.from_dict({
                **shared, "out": str(run_dir), "batch": {"batch_size": args.batch_size},
                "data": {"data": str(pairs_file), "train_pairs": args.train, "max_len": 128}}), log=quiet)
        else:  # the same solutions, steps and batches; orm_bce: one label per solution (final answer right)
            summaries[name] = train_prm(PRMConfig.from_dict({
                **shared, "out": str(run_dir), "batch": {"batch_size": 2 * args.batch_size},
                "step_surprisal": args.step_surprisal,
                "data": {"train_solutions": 2 * args.train, "outcome_labels": name == "orm_bce"}}), log=quiet)
        seconds[f"{name}_train_s"] = round(time.time() - start, 1)
    prm, orm_bce = load_prm(out / "prm" / "prm"), load_prm(out / "orm_bce" / "prm", outcome_ok=True)
    orm_bt = load_reward_model(out / "orm" / "reward_model")
    start = time.time()
    with torch_threads(args.threads):  # scoring too, not only training (at torch's default count it oversubscribes)
        figures = best_of_n_figures(prm, orm_bt, orm_bce, heldout_problems(args.problems), args.n,
                                    lm=load(backbone) if args.backbone_check else None)
    score_s = time.time() - start
    acc = figures["accuracy"]
    baselines = {"argmax": max(acc["orm_bt"], acc["orm_bce"], acc["majority"]),
                 "vote": max(acc["orm_bt_vote"], acc["orm_bce_vote"], acc["majority"])}
    report = {"benchmark": "prm_best_of_n", "policy": "synthetic sampler (prm_data.StepSampler defaults)",
              "backbone": model, "digit_backbone": digits, "pretrain_steps": args.pretrain_steps if digits else None,
              "adapt_steps": adapt_steps, "n": args.n, "heldout_problems": args.problems,
              "step_surprisal": args.step_surprisal, **figures,
              "ours": {"argmax": acc["prm_min"], "vote": acc["prm_min_vote"]}, "best_baseline": baselines,
              "prm_heldout_step_accuracy": summaries["prm"].get("step_accuracy_after"),
              "prm_heldout_error_recall": summaries["prm"].get("error_recall_after"),
              "orm_bce_heldout_outcome_accuracy": summaries["orm_bce"].get("step_accuracy_after"),
              "orm_bt_heldout_pairwise_accuracy": summaries["orm_bt"].get("accuracy_after"),
              "train_steps": args.steps, "prm_train_solutions": 2 * args.train, "orm_train_pairs": args.train,
              "reused": sorted(reuse), "backbone_s": round(backbone_s, 1), "adapt_s": round(adapt_s, 1), **seconds,
              "score_s": round(score_s, 1), "wall_s": round(time.time() - wall_start, 1),
              "process_cpu_s": round(time.process_time() - cpu_start, 1)}
    print(json.dumps(report, indent=1))
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
