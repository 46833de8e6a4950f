"""lmforge on a GPU, against the CPU (issue #28 item 4). Every test is marked `cuda` and skipped without CUDA; the
prepared script benchmarks/cuda_check.py runs them (with the figures) on a lent GPU in a few minutes.

Tolerances: fp32 greedy tokens identical; bf16 logits on CUDA vs fp32 on the CPU: cosine >= 0.98 at every position
and the same argmax on >= 90% of positions (bf16 on the CPU against fp32 measured min cosine 0.9896, argmax agreement
0.973, max |dlogit| 1.55 over the 37 positions of the chat prompt: bf16 keeps 8 mantissa bits through 30 layers); a
training step's loss (fp32) equal within 1e-4 relative (cuBLAS and PyTorch's CPU kernels sum in different orders;
TF32 is off for fp32 matmuls by PyTorch's default).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
ROOT = Path(__file__).resolve().parents[2]
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def smollm2():
    from lmforge.formats.loader import load

    return load("smollm2-135m")


def _chat_ids(lm):
    return lm.tokenizer.encode(lm.tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True),
                               add_special_tokens=False)


def _greedy(lm, model, n=32):
    from lmforge.generation.generate import generate

    return generate(model, [_chat_ids(lm)], max_new_tokens=n, stop_token_ids=lm.stop_token_ids())[0]


def test_smollm2_fp32_greedy_tokens_equal_cpu(smollm2):
    import copy

    from lmforge.model.inference import prepare_for_inference

    cpu = copy.deepcopy(smollm2.model)
    prepare_for_inference(cpu)  # as `lmforge generate --device cpu` runs: C++ kernels
    gpu = copy.deepcopy(smollm2.model).cuda()
    counts = prepare_for_inference(gpu)
    assert counts["kernel_linears"] == counts["fused_kernels"] == 0  # no CPU kernel on CUDA tensors
    assert all(p.device.type == "cuda" for p in gpu.parameters())
    assert _greedy(smollm2, gpu) == _greedy(smollm2, cpu)


def test_smollm2_bf16_logits_close_to_cpu_fp32(smollm2):
    from lmforge.formats.loader import load

    ids = torch.tensor([_chat_ids(smollm2)])
    with torch.inference_mode():
        ref = smollm2.model(ids).float()
        gpu = load("smollm2-135m", dtype="bfloat16").model.cuda().eval()
        out = gpu(ids.cuda()).float().cpu()
    cosine = torch.nn.functional.cosine_similarity(out, ref, dim=-1)
    agree = (out.argmax(-1) == ref.argmax(-1)).float().mean()
    print(f"bf16 CUDA vs fp32 CPU: min cosine {cosine.min():.5f}, argmax agreement {agree:.3f}, max |dlogit| "
          f"{(out - ref).abs().max():.3f}")
    assert cosine.min() >= 0.98 and agree >= 0.9


def test_engine_on_cuda_equals_cpu_greedy(smollm2):
    import copy

    from lmforge.engine.llm import LLM, EngineConfig
    from lmforge.generation.cache.paged_backend import PagedTorchBackend
    from lmforge.generation.sampling_params import SamplingParams

    gpu = copy.deepcopy(smollm2.model).cuda()
    llm = LLM(gpu, smollm2.tokenizer, EngineConfig(num_blocks=256))
    assert isinstance(llm.runner.cache.backend, PagedTorchBackend) and llm.runner.cache.device.type == "cuda"
    params = SamplingParams(max_new_tokens=24, stop_token_ids=smollm2.stop_token_ids())
    prompts = [_chat_ids(smollm2), _chat_ids(smollm2)[:-3], [1, 2, 3, 4, 5]]
    outs = llm.generate(prompts, [params] * 3)
    from lmforge.generation.generate import generate

    for prompt, out in zip(prompts, outs, strict=True):
        assert out.output_ids == generate(smollm2.model, [prompt], params)[0]


def test_serve_device_cuda_answers_the_openai_client(smollm2):
    import openai

    from tests.server_util import serve_subprocess

    with serve_subprocess("smollm2-135m", "--device", "cuda", timeout=180, cwd=ROOT) as port:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=120)
        r = client.chat.completions.create(model="smollm2-135m", messages=QUESTION, temperature=0, max_tokens=24)
        answer = [t for t in _greedy(smollm2, smollm2.model, 24) if t not in smollm2.stop_token_ids()]
        assert r.choices[0].message.content == smollm2.tokenizer.decode(answer)


def _pretrain(out: Path, *flags: str) -> list[float]:
    result = subprocess.run([sys.executable, "-m", "lmforge", "pretrain", "--out", str(out), "--preset", "tiny-llama",
                             "--corpus-documents", "200", "--vocab-size", "300", "--seq-len", "32", "--batch-size",
                             "4", "--max-steps", "3", "--eval-every", "3", "--log-every", "1", "--no-progress", "--set",
                             "sample_every=1000", "--set", "peak_tflops=1.0", "--set", "export_hf=false", *flags],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r.get("kind") == "train"]


def test_training_step_loss_on_cuda_equals_cpu(tmp_path):
    cpu = _pretrain(tmp_path / "cpu", "--device", "cpu", "--precision", "fp32")
    gpu = _pretrain(tmp_path / "gpu", "--device", "cuda", "--precision", "fp32")
    assert len(cpu) == len(gpu) == 3
    for a, b in zip(cpu, gpu, strict=True):
        assert abs(a - b) <= 1e-4 * abs(a), (cpu, gpu)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_training_on_cuda(tmp_path, precision):
    losses = _pretrain(tmp_path / precision, "--device", "cuda", "--precision", precision)
    assert len(losses) == 3 and all(l == l and l < 20 for l in losses)  # noqa: E741  finite, sane


def test_ddp_on_cuda_uses_nccl(tmp_path):
    """torchrun, one process per GPU: the process group is NCCL's (gloo on the CPU)."""
    n = torch.cuda.device_count()
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                             "-m", "lmforge", "pretrain", "--out", str(tmp_path / "ddp"), "--preset", "tiny-llama",
                             "--corpus-documents", "200", "--vocab-size", "300", "--seq-len", "32", "--batch-size",
                             "4", "--max-steps", "2", "--device", "cuda", "--parallel", "ddp", "--precision", "fp32",
                             "--no-progress", "--set", "sample_every=1000", "--set", "peak_tflops=1.0", "--set",
                             "export_hf=false"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env={**os.environ, "TORCH_DISTRIBUTED_DEBUG": "INFO", "NCCL_DEBUG": "INFO"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "NCCL" in result.stdout + result.stderr


def test_throughput_benchmark_runs_on_cuda():
    result = subprocess.run([sys.executable, "benchmarks/throughput.py", "--device", "cuda", "--requests", "8",
                             "--skip-fp32"], capture_output=True, text=True, cwd=ROOT, timeout=400)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["device"].startswith("cuda") and figures["card"] == torch.cuda.get_device_name()
    assert figures["ours_bf16_tok_per_s"] > 0 and figures["ours_bf16_kernel_linears"] == 0
