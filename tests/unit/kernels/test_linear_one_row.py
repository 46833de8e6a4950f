"""A decode step's one-row linear (csrc/linear_bf16.cpp, linear_f32.cpp: blocks of outputs two at a time, from two
streams of weights: linear_tasks.h's for_block_pairs) gives each output the sums the multi-row kernel gives that row,
bit for bit: an even and an odd number of blocks, a partial last block, biases, the gated SwiGLU half, 1 and 2
threads (each thread pairs the blocks of its own range)."""

import pytest
import torch


def kernels(ops, dtype):
    if dtype == torch.bfloat16:
        return ops.pack_linear_bf16, ops.linear_bf16, ops.silu_gated_linear_bf16
    return (lambda w, gated=False: ops.pack_linear_f32(w, gated)), ops.linear_f32, ops.silu_gated_linear_f32


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("out_features,in_features", [(33, 6), (80, 48), (8192, 64)])
@pytest.mark.parametrize("bias", [False, True])
def test_one_row_equals_that_row_of_a_multi_row_call(request, threads, dtype, out_features, in_features, bias):
    ops = request.getfixturevalue("bf16_ops" if dtype == torch.bfloat16 else "f32_ops")
    pack, linear, _ = kernels(ops, dtype)
    torch.manual_seed(out_features)
    w = torch.randn(out_features, in_features).to(dtype)
    b = torch.randn(out_features).to(dtype) if bias else None
    x = torch.randn(3, in_features).to(dtype)
    packed = pack(w)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rows = linear(x, packed, b, out_features)
        for i in range(3):
            assert torch.equal(linear(x[i:i + 1], packed, b, out_features), rows[i:i + 1])
    finally:
        torch.set_num_threads(before)
    expected = torch.nn.functional.linear(x.float(), w.float(), None if b is None else b.float())
    assert torch.allclose(rows.float(), expected, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("hidden", [48, 1536])  # 3 blocks (a pair and one) and 96
def test_one_row_of_the_gated_half_equals_that_row_of_a_multi_row_call(request, dtype, hidden):
    ops = request.getfixturevalue("bf16_ops" if dtype == torch.bfloat16 else "f32_ops")
    pack, _, gated = kernels(ops, dtype)
    torch.manual_seed(hidden)
    w = torch.randn(2 * hidden, 64).to(dtype)  # the packing's layout does not matter here: the same for both calls
    b = torch.randn(2 * hidden).to(dtype)
    packed = pack(w, gated=True) if dtype == torch.float32 else pack(w)
    x = torch.randn(3, 64).to(dtype)
    rows = gated(x, packed, b, hidden)
    for i in range(3):
        assert torch.equal(gated(x[i:i + 1], packed, b, hidden), rows[i:i + 1])
