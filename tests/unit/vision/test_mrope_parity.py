"""Qwen2-VL's M-RoPE: position ids and the rotary application equal transformers' (Qwen2VLModel.get_rope_index,
Qwen2VLRotaryEmbedding + apply_rotary_pos_emb), and text alone reduces to plain RoPE."""

import pytest
import torch

from lmforge.common.errors import LmforgeError
from lmforge.model.rope import apply_rope, rope_cos_sin, rope_inv_freq
from lmforge.model.vision.mrope import apply_mrope, mrope_cos_sin, mrope_position_ids, token_types

IMAGE, HEAD_DIM, SECTION = 99, 16, [2, 3, 3]


@pytest.fixture(scope="module")
def qwen2_vl():
    import transformers as tf

    cfg = tf.Qwen2VLConfig(
        text_config=dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": SECTION}),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=64, num_heads=4, patch_size=4, spatial_merge_size=2),
        image_token_id=IMAGE)
    return tf.Qwen2VLForConditionalGeneration(cfg).eval()


def _batch():
    """Row 0: text, a 4x6 image (2x3 merged = 6 tokens), text, a 2x2x4 "image" (t=2: 2 tokens), text.
    Row 1: left padding, text, an 8x4 image (4x2 = 8 tokens), text."""
    row0 = [1, 2] + [IMAGE] * 6 + [3, 4, 5] + [IMAGE] * 4 + [6]
    row1 = [7] + [IMAGE] * 8 + [8, 9]
    T = max(len(row0), len(row1))
    ids = torch.tensor([row0 + [0] * (T - len(row0)), [0] * (T - len(row1)) + row1])
    mask = torch.zeros_like(ids)
    mask[0, :len(row0)] = 1
    mask[1, T - len(row1):] = 1
    grids = torch.tensor([[1, 4, 6], [2, 2, 4], [1, 8, 4]])
    return ids, mask, grids


def test_mrope_position_ids_match_transformers(qwen2_vl):
    ids, mask, grids = _batch()
    types = token_types(ids, IMAGE)
    want, want_delta = qwen2_vl.model.get_rope_index(ids, mm_token_type_ids=types, image_grid_thw=grids,
                                                     attention_mask=mask)
    got, delta = mrope_position_ids(types, image_grids=grids, attention_mask=mask, spatial_merge=2)
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    torch.testing.assert_close(delta, want_delta.to(delta.dtype), atol=0, rtol=0)
    assert got[:, 0, 2:8].tolist() == [[2] * 6, [2, 2, 2, 3, 3, 3], [2, 3, 4, 2, 3, 4]]  # (t, row, col) + start


def test_mrope_rotary_matches_transformers(qwen2_vl):
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLRotaryEmbedding, apply_rotary_pos_emb

    ids, mask, grids = _batch()
    positions, _ = mrope_position_ids(token_types(ids, IMAGE), image_grids=grids, attention_mask=mask)
    q, k = torch.randn(2, 4, ids.shape[1], HEAD_DIM), torch.randn(2, 2, ids.shape[1], HEAD_DIM)
    rotary = Qwen2VLRotaryEmbedding(qwen2_vl.config.text_config)
    ref_cos, ref_sin = rotary(q, positions)
    cos, sin = mrope_cos_sin(positions, HEAD_DIM, 10000.0, SECTION)
    torch.testing.assert_close(cos, ref_cos, atol=1e-6, rtol=0)
    torch.testing.assert_close(sin, ref_sin, atol=1e-6, rtol=0)
    want_q, want_k = apply_rotary_pos_emb(q, k, ref_cos, ref_sin)
    got_q, got_k = apply_mrope(q, k, cos, sin)
    torch.testing.assert_close(got_q, want_q, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_k, want_k, atol=1e-5, rtol=0)


def test_text_only_mrope_is_plain_rope_and_bad_grids_are_named():
    positions = torch.arange(10).expand(1, -1)
    m_positions, delta = mrope_position_ids(torch.zeros(1, 10, dtype=torch.long))
    assert delta.item() == 0 and (m_positions == positions).all()
    cos, sin = mrope_cos_sin(m_positions, HEAD_DIM, 10000.0, SECTION)
    want_cos, want_sin = rope_cos_sin(positions, rope_inv_freq(HEAD_DIM, 10000.0), torch.float32)
    x = torch.randn(1, 2, 10, HEAD_DIM)
    torch.testing.assert_close(apply_rope(x, cos, sin), apply_rope(x, want_cos, want_sin), atol=1e-6, rtol=0)
    with pytest.raises(LmforgeError, match="grid"):
        mrope_position_ids(torch.tensor([[0, 1, 1, 1, 0]]), image_grids=[[1, 4, 4]])  # 3 tokens, grid gives 4
