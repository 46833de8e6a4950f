"""Mistral (sliding window), Gemma 3 and BERT loaded by lmforge give transformers' logits; saved dirs reload."""

import pytest
import torch

from lmforge.formats.loader import load
from lmforge.generation.cache import new_kv_cache
from tests.hf_variant_models import tiny_bert, tiny_gemma3, tiny_mistral

TOL = 1e-4


def _left_padded(vocab: int, B: int = 3, T: int = 21):
    ids = torch.randint(0, vocab, (B, T))
    mask = torch.ones_like(ids)
    mask[0, :7] = 0
    mask[2, :2] = 0
    return ids, mask


def _check_causal_parity(ref, lm, T: int = 21):
    ids, mask = _left_padded(ref.config.vocab_size, T=T)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        expected, ours = ref(ids, attention_mask=torch.ones_like(ids)).logits, lm.model(ids)
        expected_padded = ref(ids, attention_mask=mask, position_ids=positions).logits
        ours_padded = lm.model(ids, attention_mask=mask)
    assert (ours - expected).abs().max() <= TOL
    real = mask.bool()
    assert (ours_padded[real] - expected_padded[real]).abs().max() <= TOL
    return ids


def test_mistral_sliding_window_matches_transformers(tmp_path):
    ref = tiny_mistral(sliding_window=5)
    ref.save_pretrained(tmp_path)
    lm = load(tmp_path)
    assert lm.config.family == "mistral" and lm.config.attention.sliding_window == 5
    ids = _check_causal_parity(ref, lm, T=21)  # 4x the window
    # the window matters: the same weights with full attention give different late logits
    full = load(tmp_path)
    object.__setattr__(full.model.config.attention, "sliding_window", None)
    with torch.no_grad():
        assert (full.model(ids)[:, -1] - lm.model(ids)[:, -1]).abs().max() > 1e-3


def test_mistral_cached_decoding_past_the_window_equals_full_forward(tmp_path):
    ref = tiny_mistral(sliding_window=4)
    ref.save_pretrained(tmp_path)
    model = load(tmp_path).model
    ids, mask = _left_padded(ref.config.vocab_size, T=14)
    with torch.no_grad():
        full = model(ids, attention_mask=mask)
        cache = new_kv_cache(model, ids.shape[0], max_len=ids.shape[1])
        steps = [model(ids[:, :5], attention_mask=mask[:, :5], kv_cache=cache)]
        for t in range(5, ids.shape[1]):
            steps.append(model(ids[:, t:t + 1], attention_mask=mask[:, :t + 1], kv_cache=cache))
    cached = torch.cat(steps, dim=1)
    real = mask.bool()
    assert (cached[real] - full[real]).abs().max() <= 1e-5


def test_gemma3_matches_transformers(tmp_path):
    ref = tiny_gemma3()
    ref.save_pretrained(tmp_path)
    lm = load(tmp_path)
    cfg = lm.config
    assert cfg.family == "gemma3" and cfg.norms.kind == "gemma_rmsnorm" and cfg.ffn.kind == "geglu"
    assert cfg.embeddings.scale
    assert cfg.attention.layer_types == ("sliding",) * 5 + ("full",) and cfg.positions.rope_local_theta == 1e4
    assert cfg.attention.query_pre_attn_scalar == 24 and cfg.heads.final_logit_softcap == 30.0
    _check_causal_parity(ref, lm, T=21)


def test_gemma3_with_yarn_on_global_layers_matches_transformers(tmp_path):
    ref = tiny_gemma3(final_logit_softcapping=None, rope_parameters={
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        "full_attention": {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0,
                           "original_max_position_embeddings": 64}})
    ref.save_pretrained(tmp_path)
    lm = load(tmp_path)
    assert lm.config.positions.rope_scaling["rope_type"] == "yarn"
    _check_causal_parity(ref, lm, T=21)


@pytest.mark.parametrize("act", ["gelu", "relu"])
def test_bert_masked_lm_matches_transformers(tmp_path, act):
    ref = tiny_bert(hidden_act=act)
    ref.save_pretrained(tmp_path)
    lm = load(tmp_path)
    cfg = lm.config
    assert cfg.family == "bert" and not cfg.attention.causal and cfg.norms.position == "post" and cfg.heads.mlm
    ids = torch.randint(0, ref.config.vocab_size, (3, 17))
    types = (torch.arange(17) >= 9).long().expand(3, 17)
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0  # right padding, as BERT tokenizers pad
    with torch.no_grad():
        expected = ref(ids, attention_mask=mask, token_type_ids=types).logits
        ours = lm.model(ids, attention_mask=mask, token_type_ids=types)
        ours_hidden = lm.model.hidden_states(ids, attention_mask=mask, token_type_ids=types)
        ref_hidden = ref.bert(ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    real = mask.bool()
    assert (ours[real] - expected[real]).abs().max() <= TOL
    assert (ours_hidden[real] - ref_hidden[real]).abs().max() <= TOL


@pytest.mark.parametrize("build", [tiny_mistral, tiny_gemma3, tiny_bert], ids=["mistral", "gemma3", "bert"])
def test_saved_dir_reloads_in_transformers(tmp_path, build):
    import transformers

    ref = build()
    ref.save_pretrained(tmp_path / "src")
    lm = load(tmp_path / "src")
    lm.save(tmp_path / "out")
    auto = transformers.AutoModelForMaskedLM if lm.config.family == "bert" else transformers.AutoModelForCausalLM
    back = auto.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
    assert type(back) is type(ref)
    ids = torch.randint(0, ref.config.vocab_size, (2, 19))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        assert (back(ids, attention_mask=mask).logits - ref(ids, attention_mask=mask).logits).abs().max() <= 1e-5
        assert (back(ids, attention_mask=mask).logits - lm.model(ids)).abs().max() <= TOL


@pytest.mark.parametrize("rope", [
    {"rope_type": "linear", "factor": 2.0},
    {"rope_type": "dynamic", "factor": 2.0},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 8},
], ids=lambda r: r["rope_type"])
def test_llama_with_rope_scaling_matches_transformers_and_round_trips(tmp_path, rope):
    import transformers

    from tests.hf_models import tiny_hf_model

    # max_position_embeddings 16 < 21 tokens: dynamic NTK really rescales
    ref = tiny_hf_model("llama", False, max_position_embeddings=16, rope_parameters={**rope, "rope_theta": 500.0})
    ref.save_pretrained(tmp_path / "src")
    lm = load(tmp_path / "src")
    assert lm.config.positions.rope_scaling["rope_type"] == rope["rope_type"]
    ids = torch.randint(0, 256, (2, 21))
    with torch.no_grad():
        expected = ref(ids, attention_mask=torch.ones_like(ids)).logits
        assert (lm.model(ids) - expected).abs().max() <= TOL
    lm.save(tmp_path / "out")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
    with torch.no_grad():
        assert (back(ids, attention_mask=torch.ones_like(ids)).logits - expected).abs().max() <= 1e-5
