"""The BLIP-2 Q-Former equals transformers' Blip2QFormerModel on random weights, and round-trips its directory."""

import torch

from lmforge.formats.hf_vision import load_qformer, save_qformer
from tests.unit.vision.conftest import perturb


def test_qformer_matches_transformers_and_round_trips(tmp_path):
    import transformers as tf

    cfg = tf.Blip2QFormerConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
                                encoder_hidden_size=24, cross_attention_frequency=2)
    ref = perturb(tf.Blip2QFormerModel(cfg))
    ref.save_pretrained(tmp_path / "hf")
    ours = load_qformer(tmp_path / "hf")
    assert [hasattr(layer, "crossattention") for layer in ours.encoder.layer] == [True, False, True]
    queries, image = torch.randn(1, 5, 32), torch.randn(2, 10, 24)
    image_mask = torch.ones(2, 10, dtype=torch.long)
    image_mask[1, 7:] = 0
    with torch.no_grad():
        want = ref(query_embeds=queries.expand(2, -1, -1), encoder_hidden_states=image,
                   encoder_attention_mask=image_mask).last_hidden_state
        got = ours(image, queries, image_mask)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
        # masked features are invisible: changing them changes nothing
        image[1, 7:] = 100.0
        torch.testing.assert_close(ours(image, queries, image_mask), got, atol=1e-5, rtol=0)

    save_qformer(ours, tmp_path / "ours")
    back = tf.Blip2QFormerModel.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        again = back(query_embeds=queries.expand(2, -1, -1), encoder_hidden_states=image,
                     encoder_attention_mask=image_mask).last_hidden_state
    torch.testing.assert_close(again, want, atol=1e-5, rtol=0)


def test_blip2_checkpoint_gives_the_qformer_with_its_learned_queries(tmp_path):
    import transformers as tf

    cfg = tf.Blip2Config(vision_config=dict(hidden_size=24, intermediate_size=32, num_hidden_layers=1,
                                            num_attention_heads=4, image_size=16, patch_size=8),
                         qformer_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                             intermediate_size=48, encoder_hidden_size=24),
                         text_config=dict(model_type="opt", vocab_size=64, hidden_size=32, num_hidden_layers=1,
                                          num_attention_heads=4, ffn_dim=48, word_embed_proj_dim=32),
                         num_query_tokens=6)
    ref = perturb(tf.Blip2Model(cfg))
    ref.save_pretrained(tmp_path)
    ours = load_qformer(tmp_path)
    assert ours.config.n_queries == 6
    image = torch.randn(2, 5, 24)
    with torch.no_grad():
        want = ref.qformer(query_embeds=ref.query_tokens.expand(2, -1, -1), encoder_hidden_states=image)
        torch.testing.assert_close(ours(image), want.last_hidden_state, atol=1e-4, rtol=0)
