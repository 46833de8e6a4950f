"""The backend table (lmforge/kernels/backend_table.py) at every capability level, injected rather than read from the
machine running the tests; prepare_for_inference installing what it says (at each level this machine can run), the
AMX rule's split between lmforge's kernel and oneDNN by call size, and the public F.linear path when torch's
private oneDNN ops are missing."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmforge.kernels import backend_table, cpu_kernels, onednn
from lmforge.kernels.backend_table import (
    DECODE_ROWS,
    LEVELS,
    Backend,
    Capability,
    cpu_level,
    describe,
    detect_capability,
    linear_plan,
    select_backend,
)
from lmforge.model.inference import Float32Head, KernelLinear, SiluGatedKernelLinear, prepare_for_inference
from lmforge.model.packed_linear import PackedLinear
from tests.context_lm import assert_greedy_up_to_ties, assert_not_constant, context_model

BF16, F32 = torch.bfloat16, torch.float32
K, O, F_ = Backend.KERNEL, Backend.ONEDNN, Backend.F_LINEAR
DECODE, PROMPT = (1, 576), (2048, 576)  # SmolLM2's rows of one decode step and of a prompt chunk

# level, kernels, vendor -> (bf16 decode, bf16 prompt, fp32 decode, fp32 prompt)
TABLE = [
    ("no AVX-512", True, "GenuineIntel", (O, O, F_, F_)),
    ("no AVX-512", True, "AuthenticAMD", (O, O, O, O)),
    ("AVX-512", True, "GenuineIntel", (O, O, K, K)),
    ("AVX-512", False, "GenuineIntel", (O, O, F_, F_)),
    ("AVX-512-BF16", True, "AuthenticAMD", (K, K, K, K)),  # Zen 4/5: measured 5.45x transformers, 44% of peak
    ("AVX-512-BF16", False, "AuthenticAMD", (O, O, O, O)),
    ("AMX", True, "GenuineIntel", (K, O, K, K)),  # prompts on AMX tiles
    ("AMX", False, "GenuineIntel", (O, O, F_, F_)),
]


@pytest.mark.parametrize("level, kernels, vendor, expected", TABLE)
def test_every_capability_level_gets_its_measured_backends(level, kernels, vendor, expected):
    cap = Capability(level, kernels=kernels, vendor=vendor)
    got = tuple(select_backend(dtype, cap, shape) for dtype in (BF16, F32) for shape in (DECODE, PROMPT))
    assert got == expected
    assert select_backend(torch.float16, cap, DECODE) is F_  # no fast fp16 CPU path: torch's own
    assert linear_plan(BF16, cap, 576) == expected[:2] and linear_plan(F32, cap, 576) == expected[2:]


def test_the_amx_rule_changes_backend_at_decode_rows_only():
    cap = Capability("AMX")
    backends = [select_backend(BF16, cap, (rows, 576)) for rows in range(1, 4 * DECODE_ROWS)]
    assert backends == [K] * DECODE_ROWS + [O] * (3 * DECODE_ROWS - 1)
    assert describe(BF16, cap) == f"lmforge kernel up to {DECODE_ROWS} rows, oneDNN packed above"
    assert describe(BF16, Capability("AVX-512-BF16")) == "lmforge kernel"


def test_what_the_kernel_cannot_take_goes_to_the_next_backend():
    cap = Capability("AVX-512-BF16")
    assert select_backend(BF16, cap, (1, 575)) is O  # the bf16 kernel reads pairs of input channels
    no_onednn = Capability("AMX", onednn_bf16=False, onednn_f32=False, vendor="AuthenticAMD")
    assert linear_plan(BF16, no_onednn, 576) == (K, K)  # no oneDNN packing: the kernel at every size
    assert linear_plan(BF16, no_onednn.without_kernels(), 576) == (F_, F_)
    assert linear_plan(F32, no_onednn.without_kernels(), 576) == (F_, F_)
    with pytest.raises(ValueError, match="Capability.level must be one of"):
        Capability("AVX-1024")


@pytest.mark.parametrize("flags, width, level", [
    (frozenset(), "DEFAULT", "no AVX-512"),
    (frozenset({"avx2", "fma"}), "AVX2", "no AVX-512"),
    (frozenset({"avx512f", "avx512_bf16"}), "AVX2", "no AVX-512"),  # kernels built at AVX2 width
    (frozenset({"avx512f"}), "AVX512", "AVX-512"),
    (frozenset({"avx512f", "avx512_bf16"}), "AVX512", "AVX-512-BF16"),
    (frozenset({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}), "AVX512", "AMX"),
])
def test_cpu_level_from_flags_and_vector_width(flags, width, level):
    assert cpu_level(flags, width) == level


def _machine_level() -> int:
    return LEVELS.index(detect_capability().level)


def _linears(model):
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, (nn.Linear, PackedLinear, KernelLinear, Float32Head))]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", [F32, BF16])
def test_prepare_installs_what_the_table_says_at_each_level(level, dtype):
    machine = detect_capability()  # builds or loads the kernels (at run time, not at collection)
    usable = LEVELS.index(level) <= LEVELS.index(machine.level) or \
        (level == "AMX" and machine.level == "AVX-512-BF16")  # AMX's split needs the bf16 kernel and oneDNN only
    if not usable or (dtype == BF16 and not machine.onednn_bf16):
        pytest.skip(f"this machine ({machine.level}) cannot run level {level}'s {dtype} backends")
    cap = Capability(level, kernels=machine.kernels, onednn_bf16=machine.onednn_bf16, onednn_f32=machine.onednn_f32,
                     vendor=machine.vendor)
    model = context_model(max_seq_len=256).to(dtype)
    ids = torch.tensor([[(5 * i) % 250 + 1 for i in range(2 * DECODE_ROWS)]])  # prompt-sized: 64 rows
    with torch.inference_mode():
        before = model(ids)
    counts = prepare_for_inference(model, capability=cap)
    decode, prompt = linear_plan(dtype, cap, model.config.dim)
    expected_type = {K: KernelLinear, O: PackedLinear, F_: nn.Linear}[decode]
    body = [m for name, m in _linears(model) if not name.startswith("lm_head")]
    allowed = (expected_type, SiluGatedKernelLinear) if decode is K else (expected_type,)
    assert body and all(type(m) in allowed for m in body)
    assert all((m.onednn is not None) == (prompt is not decode) for m in body if isinstance(m, KernelLinear))
    assert counts["kernel_linears"] == sum(isinstance(m, KernelLinear) for m in model.modules())
    assert counts["packed_linears"] == sum(isinstance(m, PackedLinear) for m in model.modules())
    with torch.inference_mode():
        after = model(ids)
    assert (after - before).abs().max() <= (1e-4 if dtype == F32 else 0.1)


@pytest.fixture
def bf16_kernel():
    if cpu_kernels.bf16_linear_ops() is None:
        pytest.skip("no AVX512-BF16 kernel here (a CPU or compiler without it)")
    if not onednn.packing_available(BF16):
        pytest.skip("oneDNN cannot pack bf16 here")


@pytest.mark.parametrize("gated", [False, True])
def test_amx_split_runs_prompts_on_onednn_and_decode_rows_on_the_kernel(bf16_kernel, gated):
    torch.manual_seed(0)
    gate, up = nn.Linear(64, 128).to(BF16), nn.Linear(64, 128).to(BF16)
    ops = cpu_kernels.cpu_ops()
    if gated:
        split, plain = SiluGatedKernelLinear(gate, up, ops, DECODE_ROWS), SiluGatedKernelLinear(gate, up, ops)
    else:
        split, plain = KernelLinear(gate, ops, prompt_rows=DECODE_ROWS), KernelLinear(gate, ops)

    def eager(x):
        return F.silu(F.linear(x, gate.weight, gate.bias)) * F.linear(x, up.weight, up.bias) if gated else \
            F.linear(x, gate.weight, gate.bias)

    with torch.inference_mode():
        for rows in (1, DECODE_ROWS, DECODE_ROWS + 1, 300):
            x = torch.randn(rows, 64).to(BF16)
            ours = split(x)
            if rows > DECODE_ROWS:  # oneDNN: F.linear's own kernel, bit for bit
                assert torch.equal(ours, eager(x))
            else:
                assert torch.equal(ours, plain(x))
            assert (ours.float() - eager(x).float()).abs().max() <= 0.1
        assert split.weight_bytes() == plain.weight_bytes()  # a decode step reads the kernel's copy only


def test_amx_split_model_serves_the_same_greedy_tokens(bf16_kernel):
    from lmforge.engine.llm import LLM, EngineConfig
    from lmforge.generation.sampling_params import SamplingParams

    model = context_model(max_seq_len=256).to(BF16)
    prompts = [[(7 * i + j) % 250 + 1 for j in range(5 + 20 * i)] for i in range(4)]  # up to 65 rows: both paths
    prepare_for_inference(model, capability=Capability("AMX", vendor="GenuineIntel"))
    assert any(isinstance(m, KernelLinear) and m.onednn is not None for m in model.modules())
    outs = LLM(model, None, EngineConfig(num_blocks=64, block_size=4)).generate(
        prompts, [SamplingParams(max_new_tokens=10)] * len(prompts))
    for prompt, out in zip(prompts, outs, strict=True):
        assert_not_constant(out.output_ids)
        assert_greedy_up_to_ties(model, prompt, out.output_ids, tol=0.15)


@pytest.mark.parametrize("dtype", [BF16, F32])
def test_without_torchs_private_onednn_ops_the_public_path_gives_the_same_result(monkeypatch, dtype):
    model = context_model(max_seq_len=256).to(dtype)
    ids = torch.tensor([[(3 * i) % 250 + 1 for i in range(40)]])
    cap = Capability("AVX-512-BF16", kernels=False, vendor="AuthenticAMD")  # oneDNN for both dtypes
    packed = context_model(max_seq_len=256).to(dtype)
    if not onednn.packing_available(dtype):
        pytest.skip(f"oneDNN cannot pack {dtype} here")
    assert prepare_for_inference(packed, kernels=False, capability=cap)["packed_linears"] > 0

    def missing():
        raise AttributeError("torch.ops.mkldnn has no attribute '_reorder_linear_weight'")

    monkeypatch.setattr(onednn, "_mkldnn", missing)
    onednn.packing_available.cache_clear()
    try:
        assert not onednn.packing_available(dtype)
        public = detect_capability(kernels=False)
        assert not public.onednn_bf16 and not public.onednn_f32
        assert prepare_for_inference(model, kernels=False, capability=public)["packed_linears"] == 0
        assert not any(isinstance(m, PackedLinear) for m in model.modules())
    finally:
        monkeypatch.undo()
        onednn.packing_available.cache_clear()
    with torch.inference_mode():
        ours, reference = model(ids), packed(ids)
    if dtype == BF16:  # oneDNN's packed linear is F.linear's kernel: the same bits
        assert torch.equal(ours, reference)
    else:
        assert (ours - reference).abs().max() <= 1e-5


def test_info_lines_come_from_the_table(monkeypatch):
    from lmforge.cli import kernel_info
    from lmforge.kernels.build_state import KernelState

    monkeypatch.setattr(backend_table, "cpu_level", lambda flags, width: "AMX")
    backends = kernel_info.linear_backends(KernelState("not built"))
    assert backends["bfloat16"].startswith(f"lmforge kernel up to {DECODE_ROWS} rows, oneDNN packed above")
    assert "AMX tiles" in backends["bfloat16"] and backends["float32"].startswith("lmforge kernel")
