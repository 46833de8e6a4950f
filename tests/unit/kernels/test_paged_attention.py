"""The C++ paged-attention kernel against a direct float64 computation and against the engine's PyTorch path."""

import random

import pytest
import torch

from lmforge.generation.cache import PagedKVCache
from lmforge.generation.cache.paged_backend import PagedKernelBackend
from lmforge.kernels import cpu_kernels

needs_kernel = pytest.mark.usefixtures("ops")  # skips where the kernels cannot be built (see conftest.py)


def reference(q, k_pool, v_pool, first, rows, tables, lengths, block_size, scale):
    """q [H, N, D]; token first + j of a tile attends to the first length + j entries its block table names."""
    H, H_kv = q.shape[0], k_pool.shape[0]
    out = torch.zeros_like(q, dtype=torch.float64)
    for f, r, table, length in zip(first.tolist(), rows.tolist(), tables.tolist(), lengths.tolist(), strict=True):
        for j in range(r):
            slots = [table[t // block_size] * block_size + t % block_size for t in range(length + j)]
            k = k_pool[:, slots].double().repeat_interleave(H // H_kv, 0)  # [H, L, D]
            v = v_pool[:, slots].double().repeat_interleave(H // H_kv, 0)
            p = (torch.einsum("hd,hld->hl", q[:, f + j].double(), k) * scale).softmax(-1)
            out[:, f + j] = torch.einsum("hl,hld->hd", p, v)
    return out


@needs_kernel
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("heads, kv_heads, width", [(9, 3, 64), (4, 4, 32), (8, 1, 16), (4, 2, 128), (2, 1, 80)])
@pytest.mark.parametrize("block_size", [4, 16, 24])  # under, at and over a vector's width of keys
def test_kernel_matches_a_direct_computation(ops, dtype, tol, heads, kv_heads, width, block_size):
    gen = torch.Generator().manual_seed(0)
    num_blocks, n_tokens = 128, 40
    k_pool = torch.randn(kv_heads, num_blocks * block_size, width, generator=gen).to(dtype)
    v_pool = torch.randn(kv_heads, num_blocks * block_size, width, generator=gen).to(dtype)
    # queries as the attention layer hands them over: a transposed [N, H, D] view, so not contiguous
    q = (torch.randn(n_tokens, heads, width, generator=gen) * 2).to(dtype).transpose(0, 1)
    rng = random.Random(0)
    # (first token, rows, length of the first row): runs of rows as prompt chunks give (from the start, mid-block,
    # after a long cached prefix), then single rows as decoding sequences give: one entry, inside a block, full
    # blocks, across blocks, long. Tokens 13-15 and 25-32 belong to no tile.
    tiles = [(0, 8, 1), (8, 5, 13), (16, 8, 150), (24, 1, 1), (33, 1, 3), (34, 1, 4), (35, 1, 5), (36, 1, 16),
             (37, 1, 17), (38, 1, 60), (39, 1, 200)]
    first, rows, lengths = (list(x) for x in zip(*tiles, strict=True))
    blocks = list(range(num_blocks))
    rng.shuffle(blocks)  # scattered, as after allocations and frees
    used = [-(-(n + r - 1) // block_size) for r, n in zip(rows, lengths, strict=True)]
    tables = torch.zeros(len(rows), max(used), dtype=torch.long)
    for i, u in enumerate(used):
        tables[i, :u] = torch.tensor([blocks.pop() for _ in range(u)])
    out = torch.full((n_tokens, heads, width), 7.0, dtype=dtype).transpose(0, 1)
    args = (torch.tensor(first), torch.tensor(rows), tables, torch.tensor(lengths), block_size, width**-0.5)
    ops.paged_attention(q, k_pool, v_pool, *args, out)
    want = reference(q, k_pool, v_pool, *args)
    written = [f + j for f, r in zip(first, rows, strict=True) for j in range(r)]
    torch.testing.assert_close(out[:, written].double(), want[:, written], atol=tol, rtol=tol)
    untouched = [i for i in range(n_tokens) if i not in written]
    assert untouched and (out[:, untouched] == 7.0).all(), "the kernel wrote outside its tiles"


@needs_kernel
def test_kernel_rejects_bad_inputs(ops):
    q, pool = torch.randn(4, 2, 16), torch.randn(2, 16, 16)
    one = torch.tensor([1])

    def call(q=q, k=pool, v=pool, first=torch.tensor([0]), rows=one, table=torch.zeros(1, 1, dtype=torch.long),
             length=one):
        ops.paged_attention(q, k, v, first, rows, table, length, 4, 1.0, torch.empty_like(q))

    call()  # the well-formed call
    with pytest.raises(RuntimeError, match="dtypes disagree"):
        call(k=pool.bfloat16(), v=pool.bfloat16())
    with pytest.raises(RuntimeError, match="head counts or widths"):
        call(q=torch.randn(3, 2, 16))
    with pytest.raises(RuntimeError, match="multiple of"):
        call(q=torch.randn(4, 2, 12), k=torch.randn(2, 16, 12), v=torch.randn(2, 16, 12))
    with pytest.raises(RuntimeError, match="float32 and bfloat16"):
        call(q=q.double(), k=pool.double(), v=pool.double())
    with pytest.raises(RuntimeError, match="outside the pool"):  # the pool holds 4 blocks of 4
        call(table=torch.tensor([[4]]))
    with pytest.raises(RuntimeError, match=r"lengths 5\.\.5 outside"):
        call(length=torch.tensor([5]))
    with pytest.raises(RuntimeError, match="outside 0..1"):  # two query tokens
        call(first=torch.tensor([1]), rows=torch.tensor([2]))


@needs_kernel
def test_write_kv_puts_new_entries_in_their_slots_and_rejects_bad_ones(ops):
    k_pool, v_pool = torch.zeros(2, 12, 16), torch.zeros(2, 12, 16)
    new = torch.randn(2, 3, 2, 16)  # [k/v, N, H_kv, D]: the attention's strided layout
    k, v = new[0].transpose(0, 1), new[1].transpose(0, 1)
    slots = torch.tensor([7, 0, 11])
    ops.write_kv(k_pool, v_pool, k, v, slots)
    expected_k, expected_v = torch.zeros(2, 12, 16), torch.zeros(2, 12, 16)
    expected_k[:, slots], expected_v[:, slots] = k, v
    assert torch.equal(k_pool, expected_k) and torch.equal(v_pool, expected_v)
    with pytest.raises(RuntimeError, match="slot 12 outside the pool of 12"):
        ops.write_kv(k_pool, v_pool, k, v, torch.tensor([1, 12, 2]))
    with pytest.raises(RuntimeError, match="dtypes disagree"):
        ops.write_kv(k_pool, v_pool, k.bfloat16(), v.bfloat16(), slots)
    with pytest.raises(RuntimeError, match="slots must be contiguous int64"):
        ops.write_kv(k_pool, v_pool, k, v, slots[:2])


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cache_attend_is_the_same_with_and_without_the_kernel(dtype):
    """A mixed step (decoding rows, a fresh prompt, a prompt chunk after a cached prefix) through the cache's backend:
    the kernel path and the PyTorch path give the same outputs and leave the same pools."""
    heads, kv_heads, width, block_size = 6, 2, 32, 4
    gen = torch.Generator().manual_seed(1)
    rng = random.Random(1)
    items = []  # (block_table, start, num_tokens); block tables drawn from a shuffled pool of blocks
    free = list(range(1, 128))
    rng.shuffle(free)
    for start, n in [(9, 1), (0, 5), (30, 1), (12, 6), (3, 1), (0, 1)]:
        items.append(([free.pop() for _ in range(-(-(start + n) // block_size))], start, n))
    n_tokens = sum(n for _, _, n in items)
    q = torch.randn(1, n_tokens, heads, width, generator=gen).to(dtype).transpose(1, 2)
    k = torch.randn(1, n_tokens, kv_heads, width, generator=gen).to(dtype).transpose(1, 2)
    v = torch.randn(1, n_tokens, kv_heads, width, generator=gen).to(dtype).transpose(1, 2)
    history = torch.randn(2, kv_heads, 128 * block_size, width, generator=gen).to(dtype)  # earlier tokens' entries
    outs, pools = [], []
    for use_kernel in (True, False):
        cache = PagedKVCache(1, 128, block_size, {"k": (kv_heads, width), "v": (kv_heads, width)}, dtype=dtype,
                             kernel=use_kernel)
        assert isinstance(cache.backend, PagedKernelBackend) == use_kernel
        cache.pools["k"][0].copy_(history[0])
        cache.pools["v"][0].copy_(history[1])
        cache.prepare(items)
        outs.append(cache.backend.attend(0, q, k, v, None, False, 0.3))
        pools.append(torch.stack([cache.pools["k"], cache.pools["v"]]))
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(outs[0], outs[1], atol=tol, rtol=tol)
    assert torch.equal(pools[0], pools[1])


@pytest.mark.parametrize("how", ["environment", "no compiler"])
def test_without_the_kernel_the_cache_takes_the_pytorch_path(how, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))  # nothing built there: a compiler would be needed
    if how == "environment":
        monkeypatch.setenv(cpu_kernels.DISABLE_VAR, "0")
    else:
        monkeypatch.setenv("CXX", "no-such-compiler-here")
    cpu_kernels.cpu_ops.cache_clear()
    try:
        assert cpu_kernels.cpu_ops() is None
        assert not isinstance(PagedKVCache(1, 4, 4, {"k": (1, 16), "v": (1, 16)}).backend, PagedKernelBackend)
    finally:
        cpu_kernels.cpu_ops.cache_clear()
    assert ("no C++ compiler found (no-such-compiler-here" in capsys.readouterr().err) == (how == "no compiler")
