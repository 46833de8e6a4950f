"""lmforge equals transformers' DeepseekV3ForCausalLM (MLA + DeepSeekMoE) and Qwen3MoeForCausalLM, random weights."""

import pytest
import torch

from lmforge.formats.loader import load
from lmforge.generation.generate import generate
from tests.hf_sparse_models import tiny_deepseek_v3, tiny_qwen3_moe

CASES = {
    "deepseek-q-lora": lambda: tiny_deepseek_v3(),  # q_lora_rank=24, interleaved RoPE, groups 4 / top 2
    "deepseek-plain-q": lambda: tiny_deepseek_v3(q_lora_rank=None, rope_interleave=False, norm_topk_prob=False,
                                                 attention_bias=True),
    "qwen3-moe": lambda: tiny_qwen3_moe(),  # layer 1 dense (mlp_only_layers)
    "qwen3-moe-tied-step2": lambda: tiny_qwen3_moe(tie=True, mlp_only_layers=[], decoder_sparse_step=2,
                                                   norm_topk_prob=False),
}


@pytest.fixture(params=list(CASES))
def loaded(request, tmp_path):
    ref = CASES[request.param]()
    ref.save_pretrained(tmp_path / "src")
    return ref, load(tmp_path / "src"), tmp_path


def test_logits_match_transformers(loaded):
    ref, lm, _ = loaded
    ids = torch.randint(0, ref.config.vocab_size, (3, 17))
    mask = torch.ones_like(ids)
    mask[0, :5] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        expected, ours = ref(ids).logits, lm.model(ids)
        expected_pad = ref(ids, attention_mask=mask, position_ids=positions).logits
        ours_pad = lm.model(ids, attention_mask=mask)
    assert (ours - expected).abs().max() <= 1e-4
    assert (ours_pad[mask.bool()] - expected_pad[mask.bool()]).abs().max() <= 1e-4
    moe = [m for m in lm.model.modules() if hasattr(m, "expert_counts") and m.expert_counts is not None]
    assert moe, "no MoE layer ran"
    for m in moe:  # every routed slot is counted and routing actually spreads over experts
        assert int(m.expert_counts.sum()) == 3 * 17 * lm.config.moe.n_experts_per_tok
        assert int((m.expert_counts > 0).sum()) > lm.config.moe.n_experts_per_tok


def test_cached_greedy_equals_full_forward_argmax(loaded):
    _, lm, _ = loaded
    prompt = torch.randint(0, lm.config.vocab_size, (9,)).tolist()
    cached = generate(lm.model, [prompt], max_new_tokens=8)[0]
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(8):
            seq.append(int(lm.model(torch.tensor([seq]))[0, -1].argmax()))
    assert cached == seq[len(prompt):]


def test_saved_dir_reloads_in_transformers(loaded):
    import transformers

    ref, lm, tmp_path = loaded
    lm.save(tmp_path / "out")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
    assert type(back) is type(ref)
    ids = torch.randint(0, ref.config.vocab_size, (2, 11))
    with torch.no_grad():
        assert (back(ids).logits - ref(ids).logits).abs().max() <= 1e-5
    assert load(tmp_path / "out").config == lm.config
