"""The serving engine core on a tiny random model: continuous batching equals one-by-one greedy decoding, prefix
caching skips computed blocks without changing outputs, blocks always return, preemption keeps outputs."""

import random

import pytest
import torch

from lmforge.engine.block_manager import BlockManager
from lmforge.engine.llm import LLM, EngineConfig
from lmforge.engine.sequence import Sequence
from lmforge.generation.cache import paged, paged_plan
from lmforge.generation.generate import generate
from lmforge.generation.sampling_params import SamplingParams
from lmforge.model import Transformer, get_preset


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    # init_std 0.2: at the default 0.02 a tiny tied-embedding model repeats its input token whatever it attends to,
    # so greedy outputs could not tell a wrong attention from a right one
    return Transformer(get_preset("tiny-llama").replace(max_seq_len=512, init_std=0.2)).eval()


def mixed_prompts(n=16, seed=0):
    rng = random.Random(seed)
    return [[rng.randrange(1, 256) for _ in range(rng.randint(1, 70))] for _ in range(n)]


def reference(model, prompts, max_new):
    return [generate(model, [p], max_new_tokens=m)[0] for p, m in zip(prompts, max_new, strict=True)]


def run_llm(llm, prompts, max_new):
    ids = [llm.add_request(p, SamplingParams(max_new_tokens=m)) for p, m in zip(prompts, max_new, strict=True)]
    outs = {}
    while llm.has_unfinished():
        for out in llm.step():
            if out.finished:
                outs[out.request_id] = out.output_ids
    return [outs[i] for i in ids]


@pytest.fixture(params=["C++ kernel", "default groups", "one group per length"])
def decode_grouping(request, monkeypatch):
    """All rows attend through the C++ kernel, or on the PyTorch path: decoding rows in length groups (overhead 0
    splits them into one group per distinct length), prompt chunks with SDPA. MLA always takes the PyTorch path."""
    if request.param == "C++ kernel":
        if paged.cpu_ops() is None:
            pytest.skip("the C++ kernel could not be built here (no compiler?)")
        return
    monkeypatch.setattr(paged, "cpu_ops", lambda: None)
    if request.param == "one group per length":
        monkeypatch.setattr(paged_plan, "GROUP_OVERHEAD_BLOCKS", 0)


def _set_partitions(items):
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in _set_partitions(rest):
        yield [[first]] + part
        for k in range(len(part)):
            yield part[:k] + [[first] + part[k]] + part[k + 1:]


def _grouping_cost(parts, lengths, overhead):
    return sum(len(p) * max(lengths[i] for i in p) + overhead for p in parts)


def test_group_by_length_is_an_optimal_partition():
    """The grouping covers every row once and costs no more than the best of all set partitions (brute force)."""
    rng = random.Random(0)
    for _ in range(200):
        lengths = [rng.randint(1, 40) for _ in range(rng.randint(1, 7))]
        overhead = rng.choice([0, 3, 48])
        groups = paged_plan.group_by_length(lengths, overhead)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
        best = min(_grouping_cost(p, lengths, overhead) for p in _set_partitions(list(range(len(lengths)))))
        assert _grouping_cost(groups, lengths, overhead) == best
    assert paged_plan.group_by_length([1, 100], overhead=10) == [[0], [1]]
    assert paged_plan.group_by_length([1, 100], overhead=1000) == [[0, 1]]


def test_continuous_batching_equals_single_sequence_greedy(model, decode_grouping):
    prompts = mixed_prompts()
    max_new = [random.Random(i).randint(1, 24) for i in range(len(prompts))]
    llm = LLM(model, config=EngineConfig(block_size=8, num_blocks=256, max_num_seqs=6, max_num_batched_tokens=128))
    assert run_llm(llm, prompts, max_new) == reference(model, prompts, max_new)
    assert llm.block_manager.num_free == 256


@pytest.mark.parametrize("preset", ["tiny-qwen3", "tiny-moe", "tiny-deepseek-v3"])
def test_other_architectures_batch_like_single_sequences(preset, decode_grouping):
    """Qwen3 (QK-norm), a routed MoE, and DeepSeek-V3 in miniature (MLA: the pages hold only the latent)."""
    torch.manual_seed(0)
    model = Transformer(get_preset(preset).replace(init_std=0.2)).eval()
    prompts = mixed_prompts(6, seed=11)
    llm = LLM(model, config=EngineConfig(block_size=4, num_blocks=256, max_num_seqs=4, max_num_batched_tokens=64))
    assert run_llm(llm, prompts, [9] * 6) == reference(model, prompts, [9] * 6)
    if preset == "tiny-deepseek-v3":
        cfg = model.config
        assert set(llm.runner.cache.pools) == {"latent", "k_rope"}
        assert llm.runner.cache.pools["latent"].shape[-1] == cfg.attention.kv_lora_rank


def test_chunked_prefill_equals_single_sequence(model):
    prompts = mixed_prompts(6, seed=3)
    llm = LLM(model, config=EngineConfig(block_size=4, num_blocks=512, max_num_batched_tokens=20,
                                         chunked_prefill=True))
    assert run_llm(llm, prompts, [10] * 6) == reference(model, prompts, [10] * 6)
    assert llm.block_manager.num_free == 512


def test_prefix_caching_skips_prefill_and_keeps_outputs(model):
    system = list(range(10, 74))  # 64 shared tokens = 8 blocks of 8
    prompts = [system + [200 + i, 201 + i] for i in range(4)]
    cached = LLM(model, config=EngineConfig(block_size=8, num_blocks=128))
    first = run_llm(cached, prompts[:1], [8])
    before = cached.runner.num_computed_tokens
    rest = run_llm(cached, prompts[1:], [8] * 3)
    computed = cached.runner.num_computed_tokens - before
    # each later request computes only its 2 own prompt tokens plus 7 decode steps (its 8th token needs no step)
    assert computed == 3 * (2 + 7)
    assert first + rest == reference(model, prompts, [8] * 4)
    plain = LLM(model, config=EngineConfig(block_size=8, num_blocks=128, enable_prefix_caching=False))
    run_llm(plain, prompts, [8] * 4)
    assert plain.runner.num_computed_tokens == 4 * (66 + 7)


def test_preemption_with_a_tiny_cache_completes_every_request(model):
    prompts = mixed_prompts(12, seed=5)
    max_new = [20] * 12
    llm = LLM(model, config=EngineConfig(block_size=4, num_blocks=40, max_num_seqs=12))
    assert run_llm(llm, prompts, max_new) == reference(model, prompts, max_new)
    assert llm.scheduler.num_preemptions > 0
    assert llm.block_manager.num_free == 40


def test_abort_frees_blocks(model):
    llm = LLM(model, config=EngineConfig(block_size=4, num_blocks=64))
    ids = [llm.add_request(p, SamplingParams(max_new_tokens=30)) for p in mixed_prompts(4, seed=9)]
    llm.step()
    llm.step()
    for i in ids[:2]:
        llm.abort(i)
    while llm.has_unfinished():
        llm.step()
    assert llm.block_manager.num_free == 64


def test_request_larger_than_the_cache_fails_alone(model):
    llm = LLM(model, config=EngineConfig(block_size=4, num_blocks=8))
    big = llm.add_request(list(range(1, 60)), SamplingParams(max_new_tokens=4))
    small = llm.add_request([1, 2, 3], SamplingParams(max_new_tokens=4))
    outs = {}
    while llm.has_unfinished():
        for out in llm.step():
            if out.finished:
                outs[out.request_id] = out
    assert outs[big].finish_reason == "error" and outs[small].finish_reason == "length"
    assert llm.block_manager.num_free == 8


def test_fork_copies_a_shared_block_on_write():
    bm = BlockManager(num_blocks=8, block_size=4)
    parent = Sequence([1, 2, 3, 4, 5, 6])
    bm.allocate(parent)
    child = Sequence([1, 2, 3, 4, 5, 6])
    bm.fork(parent, child)
    assert bm.blocks[parent.block_table[1]].ref_count == 2
    child.token_ids.append(9)  # writes into the shared, partly filled second block
    assert bm.can_append(child)
    bm.append_slot(child)
    assert bm.pending_copies == [(parent.block_table[1], child.block_table[1])]
    assert child.block_table[0] == parent.block_table[0] and child.block_table[1] != parent.block_table[1]
    bm.deallocate(parent)
    bm.deallocate(child)
    assert bm.num_free == 8
