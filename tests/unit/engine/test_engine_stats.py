"""Issue 25 item 4: `LLM.stats()` is the engine's one snapshot of its figures (queues, KV blocks, totals), checked
against what the engine did: requests queued and admitted, blocks held then returned, tokens generated."""

import pytest
import torch

from lmforge.engine.llm import LLM, EngineConfig
from lmforge.generation.sampling_params import SamplingParams
from lmforge.model import Transformer, get_preset
from lmforge.server.metrics import Metrics


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Transformer(get_preset("tiny-llama").replace(max_seq_len=256)).eval()


def test_stats_follow_requests_blocks_and_tokens(model):
    llm = LLM(model, config=EngineConfig(num_blocks=64, block_size=8, max_num_seqs=2))
    idle = llm.stats()
    assert (idle.kv_blocks_total, idle.kv_blocks_free, idle.kv_blocks_in_use, idle.kv_block_size) == (64, 64, 0, 8)
    assert (idle.requests_waiting, idle.requests_running, idle.generated_tokens_total, idle.steps_total) == (0, 0, 0, 0)
    assert idle.max_request_tokens == 256
    prompts = [list(range(1, 21)), list(range(30, 47)), list(range(60, 65))]  # 20, 17 and 5 tokens
    for p in prompts:
        llm.add_request(p, SamplingParams(max_new_tokens=6))
    queued = llm.stats()
    assert (queued.requests_waiting, queued.requests_running) == (3, 0)
    llm.step()  # max_num_seqs=2: two admitted, one waits
    first = llm.stats()
    assert (first.requests_running, first.requests_waiting) == (2, 1)
    assert first.kv_blocks_in_use == 3 + 3  # ceil(21/8) + ceil(18/8): the prompts plus the slot of the next token
    assert first.computed_tokens_total == 20 + 17 and first.generated_tokens_total == 2 and first.steps_total == 1
    generated = 2
    while llm.has_unfinished():
        generated += sum(len(out.new_token_ids) for out in llm.step())
    done = llm.stats()
    assert generated == 3 * 6 == done.generated_tokens_total
    assert done.kv_blocks_in_use == 0 and done.kv_blocks_free == 64
    assert 0 < done.kv_blocks_cached <= 64  # full prompt blocks stay free but reusable (prefix caching)
    assert (done.requests_running, done.requests_waiting) == (0, 0)
    assert done.as_dict()["kv_blocks_in_use"] == 0 and done.as_dict()["generated_tokens_total"] == 18


def test_metrics_read_one_snapshot_per_scrape(model):
    llm = LLM(model, config=EngineConfig(num_blocks=32, block_size=8))
    llm.generate([[5, 6, 7, 8, 9]], SamplingParams(max_new_tokens=4))
    calls = []

    def counting_stats():
        calls.append(1)
        return llm.stats()

    metrics = Metrics()
    metrics.watch_engine(counting_stats)
    calls.clear()  # registering describes the collector once
    text = metrics.render()
    assert len(calls) == 1  # was one read of the scheduler or block manager per gauge
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert float(lines["lmforge_kv_blocks_total"]) == 32 and float(lines["lmforge_kv_blocks_in_use"]) == 0
    assert float(lines["lmforge_engine_generated_tokens_total"]) == 4
    assert float(lines["lmforge_engine_steps_total"]) == 4
    assert float(lines["lmforge_preemptions_total"]) == 0 and float(lines["lmforge_queue_length"]) == 0
