"""Absolute positions, LogN scaling, window masks, layer patterns, MLM masking and sentence embeddings."""

import math

import pytest
import torch

from lmforge.common.errors import ConfigError, LmforgeError
from lmforge.data.mlm import IGNORE_INDEX, mask_tokens
from lmforge.generation.cache import new_kv_cache
from lmforge.model import ModelConfig, Transformer, family_config, get_preset
from lmforge.model.attention_mask import build_attention_mask, build_window_mask
from lmforge.model.config_attention import local_global_pattern
from lmforge.model.positions import logn_scale, sinusoidal_embedding
from lmforge.model.sentence_embedding import embed_token_ids

SMALL = dict(vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=64)


def test_sinusoidal_embedding_closed_form():
    pe = sinusoidal_embedding(torch.arange(50)[None], 16, torch.float64)[0]
    for p in (0, 7, 49):
        for i in range(8):
            angle = p / 10000 ** (2 * i / 16)
            assert pe[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert pe[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_sinusoidal_model_equals_learned_model_holding_the_table():
    torch.manual_seed(0)
    sin_model = Transformer(ModelConfig.from_flat(**SMALL, pos_embedding="sinusoidal")).eval()
    learned = Transformer(ModelConfig.from_flat(**SMALL, pos_embedding="learned")).eval()
    state = {k: v for k, v in sin_model.state_dict().items()}
    state["extras.pos_embed.weight"] = sinusoidal_embedding(torch.arange(64)[None], 32, torch.float32)[0]
    learned.load_state_dict(state)
    ids = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(learned(ids), sin_model(ids), rtol=0, atol=1e-6)
        # absolute positions really enter: a left-padded copy sees the same positions for its real tokens
        mask = torch.ones(2, 15, dtype=torch.long)
        mask[:, :3] = 0
        padded = torch.cat([torch.zeros(2, 3, dtype=torch.long), ids], dim=1)
        torch.testing.assert_close(sin_model(padded, attention_mask=mask)[:, 3:], sin_model(ids), rtol=0, atol=1e-5)
        shifted = sin_model(ids, positions=torch.arange(5, 17).expand(2, 12))
        assert (shifted - sin_model(ids)).abs().max() > 1e-3


def test_logn_scale_closed_form_and_effect():
    pos = torch.arange(40)[None]
    scale = logn_scale(pos, 16)[0]
    expected = [math.log(p + 1, 16) if p + 1 > 16 else 1.0 for p in range(40)]
    torch.testing.assert_close(scale, torch.tensor(expected), rtol=1e-6, atol=0)
    torch.manual_seed(0)
    plain = Transformer(ModelConfig.from_flat(**SMALL, init_std=0.3)).eval()  # large weights: peaked attention
    logn = Transformer(ModelConfig.from_flat(**SMALL, init_std=0.3, logn_train_len=16)).eval()
    logn.load_state_dict(plain.state_dict())
    ids = torch.randint(0, 64, (1, 40))
    with torch.no_grad():
        a, b = plain(ids), logn(ids)
    torch.testing.assert_close(a[:, :16], b[:, :16], rtol=0, atol=0)  # inside the training length: unchanged
    assert (a[:, 17:] - b[:, 17:]).abs().amax(-1).min() > 1e-3  # beyond it: every position changes


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("window", [None, 1, 3, 100])
def test_window_mask_matches_brute_force(causal, window):
    start, T = 4, 6
    S = start + T
    key_mask = torch.ones(2, S, dtype=torch.long)
    key_mask[1, :3] = 0
    got = build_window_mask(key_mask, start, T, "cpu", causal, window)
    for b in range(2):
        for qi in range(T):
            q = start + qi
            for k in range(S):
                ok = (k <= q or not causal) and (window is None or abs(q - k) < window) and key_mask[b, k] == 1
                assert bool(got[b, 0, qi, k]) == (ok or k == q), (b, q, k)


def test_causal_window_mask_without_window_agrees_with_the_plain_causal_mask():
    key_mask = torch.ones(2, 9, dtype=torch.long)
    key_mask[0, :2] = 0
    plain, _ = build_attention_mask(key_mask, 3, 6, "cpu")
    assert torch.equal(plain, build_window_mask(key_mask, 3, 6, "cpu", True, None))


def test_layer_patterns():
    assert local_global_pattern(12) == (("sliding",) * 5 + ("full",)) * 2
    assert local_global_pattern(4, local=1, global_=1) == ("sliding", "full", "sliding", "full")
    cfg = family_config("gemma3", **{**SMALL, "n_layers": 12})
    assert cfg.attention.layer_types == local_global_pattern(12) and cfg.attention.sliding_window == 512


@pytest.mark.parametrize("bad", [dict(pos_embedding="xpos"), dict(norm_position="middle"), dict(sliding_window=1),
                                 dict(layer_types=("full",)), dict(layer_types=("sliding", "sliding")),
                                 dict(logn_train_len=0), dict(final_logit_softcap=-1.0),
                                 dict(pos_embedding="learned", rope_scaling={"rope_type": "linear", "factor": 2})])
def test_variant_validation_names_the_field(bad):
    with pytest.raises(ConfigError) as err:
        ModelConfig.from_flat(**{**SMALL, **bad})
    assert next(iter(bad)) in str(err.value)


@pytest.mark.parametrize("preset", ["tiny-mistral", "tiny-gemma3", "tiny-bert"])
def test_num_params_matches_module(preset):
    cfg = get_preset(preset)
    with torch.device("meta"):
        model = Transformer(cfg)
    assert cfg.num_params() == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("preset", ["tiny-gemma3", "tiny-mistral"])
def test_cached_decoding_equals_full_forward_with_mixed_window_layers(preset):
    torch.manual_seed(0)
    model = Transformer(get_preset(preset, sliding_window=5)).eval()
    ids = torch.randint(0, 256, (2, 20))
    with torch.no_grad():
        full = model(ids)
        cache = new_kv_cache(model, 2, max_len=20)
        steps = [model(ids[:, :3], kv_cache=cache)] + [model(ids[:, t:t + 1], kv_cache=cache) for t in range(3, 20)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-5)


def test_bert_masking_proportions():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (64, 512), generator=g)
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True
    corrupted, labels = mask_tokens(ids, mask_token_id=3, vocab_size=1000, special_tokens_mask=special, generator=g)
    targets = labels != IGNORE_INDEX
    assert not targets[special].any()
    assert torch.equal(labels[targets], ids[targets])
    assert torch.equal(corrupted[~targets], ids[~targets])  # non-targets are never touched
    n = targets.sum().item()
    assert n / (~special).sum().item() == pytest.approx(0.15, abs=0.005)
    masked = (corrupted[targets] == 3).sum().item() / n
    kept = (corrupted[targets] == ids[targets]).sum().item() / n
    assert masked == pytest.approx(0.8, abs=0.015)
    assert kept == pytest.approx(0.1 + 0.1 / 1000, abs=0.01)  # 10% kept (+ random draws that hit the same id)
    assert 1 - masked - kept == pytest.approx(0.1, abs=0.01)  # random replacements
    with pytest.raises(LmforgeError, match="mlm_probability"):
        mask_tokens(ids, 3, 1000, mlm_probability=1.5)


def test_sentence_embeddings_match_transformers_bert_mean_pooling(tmp_path):
    from lmforge.formats.loader import load
    from tests.hf_variant_models import tiny_bert

    ref = tiny_bert()
    ref.save_pretrained(tmp_path)
    lm = load(tmp_path)
    texts = [[2, 10, 11, 12, 3], [2, 40, 3], [2, 7, 8, 9, 10, 11, 12, 13, 3]]
    ours = lm.embed(texts, batch_size=2)
    assert ours.shape == (3, 64)
    torch.testing.assert_close(ours.norm(dim=-1), torch.ones(3))
    for row, seq in enumerate(texts):  # unpadded, one at a time, in transformers
        with torch.no_grad():
            hidden = ref.bert(torch.tensor([seq])).last_hidden_state[0].mean(0)
        torch.testing.assert_close(ours[row], hidden / hidden.norm(), rtol=0, atol=1e-5)


def test_decoder_sentence_embeddings_ignore_padding():
    torch.manual_seed(0)
    model = Transformer(get_preset("tiny-llama")).eval()
    seqs = [[5, 6, 7, 8, 9, 10], [11, 12]]
    batched = embed_token_ids(model, seqs, pad_id=0)
    alone = torch.cat([embed_token_ids(model, [s]) for s in seqs])
    torch.testing.assert_close(batched, alone, rtol=0, atol=1e-5)
    with pytest.raises(LmforgeError, match="at least one"):
        embed_token_ids(model, [[]])


def test_resize_grows_the_mlm_decoder_bias():
    from lmforge.model import resize_token_embeddings

    model = Transformer(get_preset("tiny-bert"))
    with torch.no_grad():
        model.lm_head.bias.normal_()
    old = model.lm_head.bias.detach().clone()
    resize_token_embeddings(model, 300)
    assert model.lm_head.bias.shape == (300,) and torch.equal(model.lm_head.bias[:256], old)
    torch.testing.assert_close(model.lm_head.bias[256:], old.mean().expand(44))
    assert model(torch.randint(0, 300, (1, 5))).shape == (1, 5, 300)
