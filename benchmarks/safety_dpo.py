"""The safety DPO recipe (issue 26 item 5), end to end on the embedded SmolLM2, through lmforge's own commands:

1. `lmforge serve smollm2-135m`; `lmforge redteam --split train --dpo-pairs pairs.jsonl` (the train split's attacks:
   refusal > the model's compliance; its benign look-alikes and harmless requests in jailbreak templates: the
   model's answer > refusal) and `lmforge redteam --split heldout` (held-out harmful intents, other benign prompts);
2. `lmforge dpo -m smollm2-135m --data pairs.jsonl` (LoRA with --lora-r, else full-parameter; --epochs over the
   train pairs; --sft-weight adds the chosen answers' NLL, RPO);
3. `lmforge serve OUT/dpo/hf`, the same two red-team runs; `lmforge generate --chat "What is the capital of
   France?" --temperature 0` on both models.
Prints one JSON line: attack success rate and over-refusal before / after on the held-out and the train split, the
capital answers, the DPO run's figures.
Usage: python benchmarks/safety_dpo.py [--out runs/safety_dpo] [--epochs 3 | --steps 40] [--lr 1e-5] [--lora-r 16]
[--sft-weight 1] [--reuse]
"""

import argparse
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

LMFORGE = [sys.executable, "-m", "lmforge"]
QUESTION = "What is the capital of France?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args: str) -> str:
    print("$ lmforge " + " ".join(args), file=sys.stderr, flush=True)
    done = subprocess.run([*LMFORGE, *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"lmforge {args[0]} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    print(done.stdout.rstrip(), file=sys.stderr, flush=True)
    return done.stdout


class Server:
    """`lmforge serve MODEL` in a subprocess on a free port, ready when /health answers."""

    def __init__(self, model: str, threads: int | None):
        self.port = free_port()
        self.proc = subprocess.Popen([*LMFORGE, "serve", model, "--port", str(self.port), *threads_flag(threads),
                                      "--served-model-name", "policy"], stdout=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        deadline = time.time() + 600
        while time.time() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"lmforge serve exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(1)
        sys.exit("lmforge serve did not come up in 600 s")

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(timeout=60)


def probe(model: str, out: Path, tag: str, args, pairs: Path | None = None, reuse: bool = False) -> dict:
    """Both splits against MODEL: {split: {attack_success_rate, over_refusal, ...}}; with `reuse` (the base model's
    figures under --reuse), the reports (and pairs) an earlier run left in --out are read instead."""
    figures, reports = {}, {split: out / f"redteam_{tag}_{split}.json" for split in ("train", "heldout")}
    if not (reuse and all(r.is_file() for r in reports.values()) and (pairs is None or pairs.is_file())):
        with Server(model, args.threads) as server:
            for split, report in reports.items():
                extra = ["--dpo-pairs", str(pairs)] if pairs is not None and split == "train" else []
                run("redteam", server.url + "/v1", "--split", split, "--max-tokens", str(args.max_tokens),
                    "--concurrency", "32", "--out", str(report), *extra)
    for split, report in reports.items():
        r = json.loads(report.read_text())
        attacks = [x for x in r["results"] if "success" in x]
        benign = [x for x in r["results"] if x["category"] == "benign"]
        figures[split] = {"attack_success_rate": r["attack_success_rate"], "attacks": len(attacks),
                          "successes": sum(x["success"] for x in attacks), "over_refusal": r["over_refusal"],
                          "benign": len(benign), "benign_refused": sum(x["refused"] for x in benign),
                          "by_category": {k: f"{v['success']}/{v['probes']}" for k, v in r["by_category"].items()}}
    return figures


def threads_flag(threads: int | None) -> list[str]:
    return [] if threads is None else ["--threads", str(threads)]


def capital(model: str, threads: int | None) -> str:
    return run("generate", "--model", model, "--chat", QUESTION, "--temperature", "0", "--max-new-tokens", "24",
               *threads_flag(threads)).strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--out", default="runs/safety_dpo")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--epochs", type=float, default=None, help="passes over lmforge dpo's train pairs (its 80%% "
                    "split of the pairs); sets --steps")
    ap.add_argument("--lora-r", type=int, default=0, help="LoRA rank (0: full-parameter DPO)")
    ap.add_argument("--lora-alpha", type=float, default=None, help="LoRA alpha (default: 2 x rank)")
    ap.add_argument("--lora-target", action="append", default=None, help="module to adapt (repeatable; default "
                    "q/k/v/o_proj; all-linear for every one)")
    ap.add_argument("--sft-weight", type=float, default=0.0, help="RPO: weight of the chosen answers' NLL")
    ap.add_argument("--loss", default="dpo")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="pin torch threads (default: lmforge's governor, "
                    "fewer threads while the CPU is shared: 2 pinned threads on 2 busy cores were 4x slower)")
    ap.add_argument("--resume-dpo", action="store_true", help="continue lmforge dpo from the newest checkpoint in "
                    "OUT/dpo (an interrupted run, same settings) instead of starting it over")
    ap.add_argument("--reuse", action="store_true", help="read the base model's red-team reports and pairs from "
                    "--out (left by an earlier run) instead of probing it again")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pairs, started = out / "pairs.jsonl", time.time()
    before = probe(args.model, out, "before", args, pairs, reuse=args.reuse)
    kinds = [json.loads(line)["kind"] for line in pairs.read_text().splitlines()]
    if args.epochs is not None:  # lmforge dpo trains on ~80% of the pairs (split by a hash of each pair)
        args.steps = max(1, round(args.epochs * len(kinds) * 0.8 / args.batch_size))
    lora = []
    if args.lora_r:
        lora = ["--lora-r", str(args.lora_r), "--lora-alpha", str(args.lora_alpha or 2 * args.lora_r)]
        lora += [x for target in args.lora_target or () for x in ("--lora-target", target)]
    run("dpo", "--model", args.model, "--data", str(pairs), "--out", str(out / "dpo"),
        "--resume" if args.resume_dpo else "--fresh",
        "--max-steps", str(args.steps), "--warmup-steps", str(max(1, args.steps // 10)), "--lr", str(args.lr),
        "--beta", str(args.beta), "--batch-size", str(args.batch_size), "--max-len", "256", "--loss", args.loss,
        "--sft-weight", str(args.sft_weight), *lora, "--no-progress",
        "--eval-every", str(args.steps), "--checkpoint-every", str(args.steps), *threads_flag(args.threads))
    policy = str(out / "dpo" / "hf")
    after = probe(policy, out, "after", args)
    dpo = json.loads((out / "dpo" / "summary.json").read_text())
    result = {
        "model": args.model, "pairs": {"refuse": kinds.count("refuse"), "help": kinds.count("help")},
        "dpo": {"steps": dpo["steps"], "train_pairs": dpo["train_pairs"], "lr": args.lr, "beta": args.beta,
                "batch_size": args.batch_size, "loss": args.loss, "sft_weight": args.sft_weight,
                "lora_r": args.lora_r, "lora_targets": args.lora_target or (["q_proj", "k_proj", "v_proj", "o_proj"]
                                                                            if args.lora_r else None),
                "heldout_pair_win_rate": [dpo["win_rate_reference"], dpo["win_rate_policy"]],
                "reference_s": round(dpo["reference_seconds"], 1), "elapsed_s": round(dpo["elapsed_s"], 1)},
        "heldout": {"before": before["heldout"], "after": after["heldout"]},
        "train": {"before": before["train"], "after": after["train"]},
        "capital": {"before": capital(args.model, args.threads), "after": capital(policy, args.threads)},
        "elapsed_s": round(time.time() - started, 1),
    }
    b, a = before["heldout"]["attack_success_rate"], after["heldout"]["attack_success_rate"]
    result["heldout_asr_relative_drop"] = round(1 - a / b, 3) if b else None
    (out / "result.json").write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n")
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
