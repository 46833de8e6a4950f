"""Continued pretraining of SmolLM2-135M on invented-town facts, without and with replay of the embedded corpus
(`--mix corpus:W`): held-out loss on the new text before/after, and the chat answer to "What is the capital of
France?" after. Prints JSON: each run's figures and the replay run's loss drop as a share of the no-replay drop.

    python benchmarks/replay_forgetting.py --steps 40 --replay 0.5 --out runs/replay
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lmforge.data.corpus import CorpusConfig, corpus_documents
from lmforge.formats.loader import load
from lmforge.generation.generate import generate
from lmforge.train.config import TrainConfig
from lmforge.train.pretrain import pretrain

QUESTION = "What is the capital of France?"


def answer(model_dir: str) -> str:
    lm = load(model_dir)
    tok = lm.tokenizer
    end = tok.token_to_id("<|im_end|>")
    ids = tok.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True, tokenize=True)
    out = generate(lm.model, [ids], max_new_tokens=20, temperature=0.0, stop_token_ids=[end], pad_id=end)
    return tok.decode(out[0], skip_special_tokens=True).strip()


def run(out: Path, text: Path, args, mix: tuple[str, ...]) -> dict:
    cfg = TrainConfig.from_dict(dict(
        out=str(out), init_from="smollm2-135m", train_text=str(text), seq_len=args.seq_len, max_steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, log_every=1, warmup_steps=2, eval_every=args.steps, eval_batches=10,
        sample_every=10_000,
        checkpoint_every=args.steps, progress=False, threads=args.threads, mix=mix,
        corpus_documents=args.replay_documents, seed=0))
    start = time.time()
    summary = pretrain(cfg, log=lambda m: print(m, flush=True))
    return {"mix": summary.get("mix"), "initial_val_loss": summary["initial_val_loss"],
            "val_loss": summary["val_loss"] if "val_loss" in summary else summary.get("final_val_loss"),
            "seconds": round(time.time() - start, 1), "answer": answer(str(out / "hf"))}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="runs/replay")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--replay", type=float, default=0.5)
    p.add_argument("--replay-documents", type=int, default=3000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    docs = corpus_documents(CorpusConfig(documents=1500, seed=7, weights=(0, 0, 1, 0)))  # invented-town facts
    text = out / "towns.txt"
    text.write_text("\n\n".join(d.text for d in docs) + "\n")
    result = {"before": answer("smollm2-135m"), **vars(args)}
    result["plain"] = run(out / "plain", text, args, ())
    result["replay"] = run(out / "replay", text, args, (f"corpus:{args.replay}",))
    drops = [result[k]["initial_val_loss"] - result[k]["val_loss"] for k in ("plain", "replay")]
    result["replay_drop_share"] = round(drops[1] / drops[0], 3)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
