"""lmforge.eval.loglikelihood against the direct computation: one forward pass over context + continuation per
request, log-softmax, the continuation's tokens picked out. Shared contexts, ragged lengths, truncation, top-k."""

import pytest
import torch

from lmforge.common.errors import LmforgeError
from lmforge.eval.loglikelihood import fit_context, score_continuations
from lmforge.model import Transformer, get_preset


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(3)
    return Transformer(get_preset("tiny-llama", vocab_size=320, max_seq_len=64).replace(init_std=0.2)).eval()


def reference(model, ctx, cont):
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids)[0].float(), -1)
    rows = logprobs[len(ctx) - 1:-1]
    target = torch.tensor(cont)
    return rows.gather(-1, target[:, None])[:, 0].tolist(), (rows.argmax(-1) == target).tolist(), rows


def test_matches_one_pass_per_request_with_shared_contexts_and_ragged_lengths(model):
    g = torch.Generator().manual_seed(0)
    ctx_a, ctx_b = torch.randint(3, 320, (9,), generator=g).tolist(), torch.randint(3, 320, (4,), generator=g).tolist()
    requests = [(ctx_a, [5]), (ctx_a, [7, 8, 9]), (ctx_b, [11, 12]), (ctx_a, [13, 14]), (ctx_b, [15]),
                ([42], torch.randint(3, 320, (20,), generator=g).tolist())]
    for budget in (16, 4096):  # one group per batch, and everything in one batch
        scores = score_continuations(model, requests, top_k=3, max_batch_tokens=budget)
        for (ctx, cont), score in zip(requests, scores, strict=True):
            lps, greedy, rows = reference(model, ctx, cont)
            assert score.logprobs == pytest.approx(lps, abs=1e-4)
            assert score.greedy == greedy
            assert score.total == pytest.approx(sum(lps), abs=1e-4)
            top = torch.topk(rows, 3, dim=-1)
            assert [[t for t, _ in row] for row in score.top] == top.indices.tolist()


def test_greedy_continuation_is_flagged_greedy(model):
    ctx = [17, 23, 99, 4]
    cont = []
    for _ in range(3):  # the argmax chain
        with torch.no_grad():
            cont.append(int(model(torch.tensor([ctx + cont]))[0, -1].argmax()))
    score = score_continuations(model, [(ctx, cont), (ctx, [(cont[0] + 1) % 320])])
    assert score[0].is_greedy and score[0].greedy == [True, True, True]
    assert not score[1].is_greedy


def test_long_context_is_left_truncated_like_lm_eval(model):
    ctx, cont = list(range(3, 93)), [7, 8, 9]  # 90 + 3 tokens > max_seq_len 64
    assert fit_context(ctx, cont, 64) == ctx[-62:]  # context + continuation[:-1] = 64 tokens
    score = score_continuations(model, [(ctx, cont)])[0]
    assert score.logprobs == pytest.approx(reference(model, ctx[-62:], cont)[0], abs=1e-4)
    with pytest.raises(LmforgeError, match="does not fit"):
        score_continuations(model, [([1], list(range(3, 80)))])
    with pytest.raises(LmforgeError, match="at least one token"):
        score_continuations(model, [([1], [])])
