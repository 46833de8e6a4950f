"""The GPU check of issue #28 item 4, prepared for a lent CUDA machine: SmolLM2 generate / serve / throughput.py / a
training step on CUDA against the CPU, then the CUDA tests (tests/cuda). Each figure is printed as soon as it is
measured, with the card's name; a failing part prints FAILED and the rest still runs. No network, installs nothing;
about 5 minutes on one H100 (each part has its own timeout; the whole run stops starting parts after --budget s).

Usage (repository root): PYTHONPATH=. python benchmarks/cuda_check.py [--budget 450]
"""

import argparse
import copy
import json
import os
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
START = time.perf_counter()


def say(text: str) -> None:
    print(f"[{time.perf_counter() - START:6.1f}s] {text}", flush=True)


def chat_ids(lm) -> list[int]:
    return lm.tokenizer.encode(lm.tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True),
                               add_special_tokens=False)


def part_generate(smollm2) -> None:
    """fp32 greedy tokens CPU vs CUDA, batch-1 decode tokens/s of each, bf16 on CUDA: tokens/s and logits."""
    import torch

    from lmforge.formats.loader import load
    from lmforge.generation.decode_bench import decode_tokens_per_s
    from lmforge.model.inference import prepare_for_inference

    prompt = chat_ids(smollm2)
    cpu = copy.deepcopy(smollm2.model)
    prepare_for_inference(cpu)
    gpu = copy.deepcopy(smollm2.model).cuda()
    counts = prepare_for_inference(gpu)
    say(f"generate: prepare_for_inference on CUDA: {counts} (CPU kernels: 0 expected)")
    cpu_speed, cpu_tokens = decode_tokens_per_s(cpu, prompt, 64, repeat=2)
    gpu_speed, gpu_tokens = decode_tokens_per_s(gpu, prompt, 64, repeat=3)
    say(f"generate: SmolLM2 fp32 greedy 64 tokens: CPU {cpu_speed:.1f} tok/s, CUDA {gpu_speed:.1f} tok/s; tokens "
        f"identical: {cpu_tokens == gpu_tokens}")
    bf16 = load("smollm2-135m", dtype="bfloat16").model.cuda().eval()
    bf16_speed, _ = decode_tokens_per_s(bf16, prompt, 64, repeat=3)
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        ref, out = smollm2.model(ids).float(), bf16(ids.cuda()).float().cpu()
    cosine = torch.nn.functional.cosine_similarity(out, ref, dim=-1)
    say(f"generate: SmolLM2 bf16 on CUDA {bf16_speed:.1f} tok/s; logits vs fp32 CPU: min cosine {cosine.min():.5f}, "
        f"argmax agreement {(out.argmax(-1) == ref.argmax(-1)).float().mean():.3f}, max |dlogit| "
        f"{(out - ref).abs().max():.3f}")


def part_serve(smollm2) -> None:
    """`lmforge serve --device cuda`: the openai client's greedy answer vs the CPU's, and 16 concurrent requests."""
    import openai

    from lmforge.generation.generate import generate
    from tests.server_util import serve_subprocess

    with serve_subprocess("smollm2-135m", "--device", "cuda", timeout=120, cwd=ROOT) as port:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=120)
        r = client.chat.completions.create(model="smollm2-135m", messages=QUESTION, temperature=0, max_tokens=32)
        stops = smollm2.stop_token_ids()
        want = [t for t in generate(smollm2.model, [chat_ids(smollm2)], max_new_tokens=32, stop_token_ids=stops)[0]
                if t not in stops]
        same = r.choices[0].message.content == smollm2.tokenizer.decode(want)
        say(f"serve: --device cuda answered {r.choices[0].message.content!r}; equal to the CPU's greedy: {same}")
        tokens, errors = [], []

        def ask(i: int) -> None:
            try:
                out = client.chat.completions.create(model="smollm2-135m", max_tokens=128, temperature=0.8, seed=i,
                                                     messages=[{"role": "user", "content": f"Tell me a story #{i}."}])
                tokens.append(out.usage.completion_tokens)
            except Exception as err:  # noqa: BLE001  reported below
                errors.append(repr(err))

        t0 = time.perf_counter()
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - t0
        say(f"serve: 16 concurrent chat requests: {sum(tokens)} tokens in {seconds:.2f} s = "
            f"{sum(tokens) / seconds:.1f} tok/s ({len(errors)} errors{': ' + errors[0] if errors else ''})")


def part_throughput() -> None:
    """benchmarks/throughput.py --device cuda: lmforge's engine vs transformers generate on the same GPU."""
    result = subprocess.run([sys.executable, "benchmarks/throughput.py", "--device", "cuda", "--requests", "32"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-1500:])
    say(f"throughput: {result.stdout.strip().splitlines()[-1]}")


def _pretrain(out: Path, *flags: str) -> tuple[list[float], float]:
    result = subprocess.run([sys.executable, "-m", "lmforge", "pretrain", "--out", str(out), "--preset", "tiny-llama",
                             "--corpus-documents", "200", "--vocab-size", "300", "--seq-len", "32", "--batch-size",
                             "4", "--max-steps", "5", "--eval-every", "5", "--log-every", "1", "--no-progress",
                             "--set", "sample_every=1000", "--set", "peak_tflops=1.0", "--set", "export_hf=false",
                             *flags], capture_output=True, text=True, cwd=ROOT, timeout=240)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-1500:])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("kind") == "train"]
    return [r["loss"] for r in train], train[-1]["elapsed_s"] / len(train)


def part_train(tmp: Path) -> None:
    """Training steps of the tiny preset on CPU and CUDA (fp32 losses compared), then bf16 and fp16 on CUDA."""
    cpu, cpu_s = _pretrain(tmp / "cpu", "--device", "cpu", "--precision", "fp32")
    gpu, gpu_s = _pretrain(tmp / "gpu", "--device", "cuda", "--precision", "fp32")
    worst = max(abs(a - b) / abs(a) for a, b in zip(cpu, gpu, strict=True))
    say(f"train: fp32 losses CPU {[round(x, 5) for x in cpu]} CUDA {[round(x, 5) for x in gpu]}; max relative "
        f"difference {worst:.2e}; {cpu_s * 1e3:.0f} vs {gpu_s * 1e3:.0f} ms/step")
    for precision in ("bf16", "fp16"):
        losses, step_s = _pretrain(tmp / precision, "--device", "cuda", "--precision", precision)
        say(f"train: {precision} on CUDA losses {[round(x, 4) for x in losses]}, {step_s * 1e3:.0f} ms/step")


def part_tests() -> None:
    """The CUDA tests (marker cuda), with pytest's summary line."""
    result = subprocess.run([sys.executable, "-m", "pytest", "-o", "addopts=", "-q", "-rA", "-p", "no:cacheprovider",
                             "-m", "cuda", "tests/cuda"], capture_output=True, text=True, cwd=ROOT, timeout=420)
    lines = [line for line in result.stdout.splitlines() if line.startswith(("PASSED", "FAILED", "ERROR", "SKIPPED"))]
    for line in lines:
        say(f"tests: {line}")
    say(f"tests: {result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-800:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=450.0, help="Start no part after this many seconds.")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    import tempfile

    import torch

    if not torch.cuda.is_available():
        raise SystemExit(f"error: no CUDA device (torch {torch.__version__}, CUDA build {torch.version.cuda})")
    props = torch.cuda.get_device_properties(0)
    say(f"card: {torch.cuda.get_device_name(0)} ({props.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} "
        f"visible); torch {torch.__version__}, CUDA {torch.version.cuda}; {os.cpu_count()} CPU cores")
    from lmforge.formats.loader import load

    smollm2 = load("smollm2-135m")
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        parts = [("generate", lambda: part_generate(smollm2)), ("serve", lambda: part_serve(smollm2)),
                 ("throughput", part_throughput), ("train", lambda: part_train(Path(tmp))), ("tests", part_tests)]
        for name, run in parts:
            if time.perf_counter() - START > args.budget:
                say(f"{name}: not run (past the {args.budget:.0f} s budget)")
                failed.append(name)
                continue
            try:
                run()
            except Exception:  # noqa: BLE001  one part's failure is printed; the others still run
                say(f"{name}: FAILED\n{traceback.format_exc()[-2500:]}")
                failed.append(name)
    outcome = "failed parts: " + ", ".join(failed) if failed else "all parts ran"
    say(f"done on {torch.cuda.get_device_name(0)}; {outcome}")


if __name__ == "__main__":
    main()
