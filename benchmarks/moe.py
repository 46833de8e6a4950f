"""MoE training-step speed: a tiny MoE preset vs a dense model with the same active parameters, same process.

Forward + backward of the LM loss (plus the MoE aux loss) on random tokens, best of --repeat. The dense baseline
has ffn_dim = (top-k + shared experts) x moe_ffn_dim, so each token does the same multiply-adds; the ratio shows
what routing, sorting and the per-expert loop cost. Prints one JSON line. Usage: python benchmarks/moe.py
"""

import argparse
import json

import torch
import torch.nn.functional as F

from lmforge.common.timing import best_time
from lmforge.model import Transformer, get_preset


def step_fn(model: Transformer, ids: torch.Tensor):
    def step():
        model.zero_grad(set_to_none=True)
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)) + model.aux_loss()
        loss.backward()
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny-moe", help="MoE preset to time")
    parser.add_argument("--batch", type=int, default=8, help="sequences per step")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per sequence")
    parser.add_argument("--repeat", type=int, default=5, help="timed steps (best is reported)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    args = parser.parse_args()
    torch.manual_seed(0)
    moe_cfg = get_preset(args.preset, aux_loss_coef=0.01)
    moe = moe_cfg.moe
    active_ffn = (moe.n_experts_per_tok + moe.n_shared_experts) * (moe.ffn_dim or moe_cfg.ffn_dim)
    dense_cfg = moe_cfg.replace(n_routed_experts=0, n_shared_experts=0, ffn_dim=active_ffn, aux_loss_coef=0.0)
    moe, dense = Transformer(moe_cfg).to(args.device), Transformer(dense_cfg).to(args.device)
    ids = torch.randint(0, moe_cfg.vocab_size, (args.batch, args.seq_len + 1), device=args.device)
    steps = {"moe": step_fn(moe, ids), "dense": step_fn(dense, ids)}
    for step in steps.values():
        step()  # warm-up
    timings = {name: float("inf") for name in steps}
    for _ in range(args.repeat):  # alternate the two so machine noise hits both alike
        for name, step in steps.items():
            timings[name] = min(timings[name], best_time(step, 1)[0])
    tokens = args.batch * args.seq_len
    print(json.dumps({
        "benchmark": "moe_train_step", "preset": args.preset, "device": args.device,
        "threads": torch.get_num_threads(), "tokens_per_step": tokens,
        "moe_total_params": moe_cfg.num_params(), "moe_active_params": moe_cfg.num_params(active=True),
        "dense_params": dense_cfg.num_params(),
        "ours_tok_per_s": round(tokens / timings["moe"], 1), "baseline_tok_per_s": round(tokens / timings["dense"], 1),
        "ratio": round(timings["dense"] / timings["moe"], 3),
        "baseline": "dense SwiGLU model with the same active parameters (ffn_dim = active expert width)",
    }))


if __name__ == "__main__":
    main()
