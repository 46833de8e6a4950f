"""Does the model-based quality filter pay off in pretraining? The FineWeb-Edu / DCLM claim at toy scale:
a sample corpus with promotional pages that every rule filter keeps ("spam:seo") is cleaned twice -- by the rule
pipeline, and by the same pipeline plus a quality_classifier trained on labelled pages of another seed -- then the
same small model is pretrained on each for the same number of tokens and scored on held-out good prose.

Everything runs through the CLI, as a user would. Prints one JSON line: documents kept by each pipeline, seo pages
kept, training tokens, and the held-out loss / perplexity of each model (lower is better).
Usage: python benchmarks/quality_pretrain.py [--steps 300] [--good 400] [--seo 300] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def cli(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "lmforge", *args], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"lmforge {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return result.stdout


def kept(run: Path, truth: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for shard in sorted((run / "data").glob("part-*.jsonl")):
        for line in shard.open():
            kind = truth[json.loads(line)["id"]]
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--good", type=int, default=400)
    parser.add_argument("--seo", type=int, default=300)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="lmforge-quality-"))
    no_extras = ["--per-language", "5", "--blocked-urls", "0", "--exact-duplicates", "0", "--near-duplicates", "0",
                 "--pii", "0"]
    cli("data", "sample", "--out", str(work / "web"), "--seed", "0", "--good", str(args.good), "--seo",
        str(args.seo), *no_extras)
    cli("data", "sample", "--out", str(work / "labels"), "--seed", "1", "--good", "150", "--seo", "60", *no_extras)
    cli("data", "sample", "--out", str(work / "heldout"), "--seed", "2", "--good", "60", "--spam", "0", *no_extras)
    cli("data", "quality", "train", str(work / "labels" / "quality_labels.jsonl"), "--out", str(work / "quality"))
    base = (work / "web" / "pipeline.toml").read_text()
    (work / "web" / "rules.toml").write_text(base.replace('dir = "clean"', 'dir = "rules"'))
    (work / "web" / "classifier.toml").write_text(
        base.replace('dir = "clean"', 'dir = "classifier"')
        + f'\n[[steps]]\ntype = "quality_classifier"\nmodel = "{work / "quality"}"\n')
    truth = {t["id"]: t["kind"] for t in map(json.loads, (work / "web" / "ground_truth.jsonl").open())}
    held = [json.loads(line) for line in (work / "heldout" / "quality_labels.jsonl").open()]
    (work / "heldout.txt").write_text("\n\n".join(r["text"] for r in held if r["label"] == "good"))
    good_text = work / "tok.txt"
    good_text.write_text("\n\n".join(r["text"] for r in map(json.loads, (work / "labels" / "quality_labels.jsonl")
                                                             .open()) if r["label"] == "good"))
    cli("tokenizer", "train", str(good_text), "--vocab-size", "1024", "--out", str(work / "tok"))
    report: dict = {"steps": args.steps}
    for name in ("rules", "classifier"):
        cli("data", "run", str(work / "web" / f"{name}.toml"))
        counts = kept(work / "web" / name, truth)
        cli("data", "pack", "--tokenizer", str(work / "tok"), "--input", str(work / "web" / name / "data"),
            "--out", str(work / f"{name}-pack"), "--seq-len", "128", "--val-fraction", "0.02")
        cli("pretrain", "--data-dir", str(work / f"{name}-pack"), "--tokenizer", str(work / "tok"), "--preset",
            "pretrain-1m", "--max-steps", str(args.steps), "--seq-len", "128", "--batch-size", "16", "--lr", "3e-3",
            "--warmup-steps", "20", "--precision", "fp32", "--seed", "0", "--no-progress", "--eval-every", "100000",
            "--checkpoint-every", "100000", "--out", str(work / f"{name}-model"), "--fresh")
        ppl = json.loads(cli("eval", "ppl", str(work / f"{name}-model" / "hf"), "--text", str(work / "heldout.txt"),
                             "--seq-len", "128", "--stride", "64"))
        report[name] = {"kept_good": counts.get("good", 0), "kept_seo": counts.get("spam:seo", 0),
                        "kept_total": sum(counts.values()), "heldout": ppl}
    report["training_tokens_each"] = args.steps * 16 * 128
    print(json.dumps(report))


if __name__ == "__main__":
    main()
