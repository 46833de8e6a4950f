"""The accuracy cost of int8 activations (lmforge/kernels/csrc/int8_dot.h) on SmolLM2-135M, weight-only vs W8A8
dynamic, in one run: teacher-forced over tests/assets/heldout_prose.txt (one forward of the whole text), each
variant's mean KL to the fp32 model's next-token distribution, mean |logit error|, top-1 agreement with fp32 and the
held-out perplexity; then greedy tokens of both modes after two prompts (where they part, and the two candidates'
logit gap there in a full forward of the weight-only model). int8: quantize_model (int8 lm_head); int4: the GGUF
file's Q4_1 codes (int8 lm_head). Needs the kernels' AVX512-VNNI path. Prints one JSON object.
Usage: python benchmarks/int8_activations.py [--tokens 0] [--new 64] [--threads 2]
"""

import argparse
import json
from pathlib import Path

import torch

from lmforge.formats.loader import load
from lmforge.generation.generate import decode
from lmforge.kernels import quant_linear
from lmforge.model.inference import prepare_for_inference
from lmforge.quant.int_linear import quantize_model

TEXT = Path(__file__).resolve().parents[1] / "tests" / "assets" / "heldout_prose.txt"
PROMPTS = ("The capital of France is", "Write a short story about a lighthouse keeper who")


def variant(bits: int, int8_x: bool):
    quant_linear.set_int8_activations(int8_x)
    lm = load("smollm2-135m", dtype=torch.bfloat16, gguf_int4=bits == 4)
    if bits == 8:
        quantize_model(lm.model, bits=8, group_size=32)
    prepare_for_inference(lm.model)
    return lm


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=0, help="tokens of the text to score (0: all of it)")
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fp32 = load("smollm2-135m", dtype=torch.float32)
    ids = torch.tensor([fp32.tokenizer.encode(TEXT.read_text())[:args.tokens or None]])
    ref = fp32.model(ids)[0, :-1].float().log_softmax(-1)
    targets = ids[0, 1:]
    out = {"tokens": int(ids.shape[1]), "fp32_ppl": float(torch.exp(-ref.gather(1, targets[:, None]).mean()))}
    prompts = [fp32.tokenizer.encode(p) for p in PROMPTS]
    for bits in (8, 4):
        greedy = {}
        for int8_x in (False, True):
            lm = variant(bits, int8_x)
            if int8_x and not quant_linear.int8_activations():
                raise SystemExit("error: the kernels have no AVX512-VNNI path here")
            logp = lm.model(ids)[0, :-1].float().log_softmax(-1)
            name = f"int{bits}_{'w8a8' if int8_x else 'weight_only'}"
            out[name] = {
                "mean_kl_to_fp32": float((ref.exp() * (ref - logp)).sum(-1).mean()),
                "mean_abs_logit_error": float((lm.model(ids)[0, :-1].float() - fp32.model(ids)[0, :-1]).abs().mean()),
                "top1_agreement": float((logp.argmax(-1) == ref.argmax(-1)).float().mean()),
                "ppl": float(torch.exp(-logp.gather(1, targets[:, None]).mean())),
            }
            greedy[int8_x] = ([decode(lm.model, p, args.new) for p in prompts], lm)
        parts = []
        for i, p in enumerate(prompts):
            a, b = greedy[False][0][i], greedy[True][0][i]
            at = next((j for j, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
            gap = None
            if at is not None:  # the two choices' logit gap at that step, in the weight-only model
                logits = greedy[False][1].model(torch.tensor([p + a[:at]]))[0, -1].float()
                gap = float(logits[a[at]] - logits[b[at]])
            parts.append({"prompt": i, "first_difference": at, "weight_only_logit_gap": gap})
        out[f"int{bits}_greedy"] = parts
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
