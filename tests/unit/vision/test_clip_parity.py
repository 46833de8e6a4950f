"""CLIP towers (vision + text) and the SigLIP vision tower equal transformers' on random weights, both directions."""

import pytest
import torch

from lmforge.formats.hf_vision import load_clip, load_siglip_vision, save_clip, save_siglip_vision
from lmforge.model.vision.clip import infonce_loss, sigmoid_loss
from tests.unit.vision.conftest import perturb

TOWER = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4)


def tiny_clip(eos_token_id: int):
    import transformers as tf

    cfg = tf.CLIPConfig(text_config=dict(TOWER, vocab_size=99, max_position_embeddings=16, eos_token_id=eos_token_id,
                                         bos_token_id=1, pad_token_id=0),
                        vision_config=dict(TOWER, image_size=24, patch_size=6), projection_dim=16)
    return perturb(tf.CLIPModel(cfg))


def _texts(eos: int):
    ids = torch.randint(3, 90, (3, 9))
    mask = torch.ones_like(ids)
    ids[:, 6] = 95 if eos == 2 else eos  # eos=2 configs pool at the highest id: make it the end token
    ids[1, 7:] = 0
    mask[1, 7:] = 0
    return ids, mask


@pytest.mark.parametrize("eos", [2, 97])
def test_clip_towers_match_transformers_and_round_trip(tmp_path, eos):
    import transformers as tf

    ref = tiny_clip(eos)
    ref.save_pretrained(tmp_path / "hf")
    ours = load_clip(tmp_path / "hf")
    ids, mask = _texts(eos)
    pixels = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask, pixel_values=pixels)
        text_hidden, _ = ours.text_model(ids, mask)
        image_hidden, _ = ours.vision_model(pixels)
        logits = ours(ids, pixels, mask)
    real = mask.bool()
    torch.testing.assert_close(text_hidden[real], want.text_model_output.last_hidden_state[real], atol=1e-4, rtol=0)
    torch.testing.assert_close(image_hidden, want.vision_model_output.last_hidden_state, atol=1e-4, rtol=0)
    torch.testing.assert_close(ours.text_features(ids, mask), want.text_model_output.pooler_output, atol=1e-4, rtol=0)
    torch.testing.assert_close(ours.image_features(pixels), want.vision_model_output.pooler_output, atol=1e-4, rtol=0)
    torch.testing.assert_close(logits, want.logits_per_text, atol=1e-4, rtol=0)
    with torch.no_grad():  # a square batch: text i goes with image i
        ref_loss = ref(input_ids=ids[:2], attention_mask=mask[:2], pixel_values=pixels, return_loss=True).loss
        assert torch.isclose(ours.loss(ours(ids[:2], pixels, mask[:2])), ref_loss, atol=1e-5)

    save_clip(ours, tmp_path / "ours")
    back = tf.CLIPModel.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        again = back(input_ids=ids, attention_mask=mask, pixel_values=pixels)
    torch.testing.assert_close(again.logits_per_text, want.logits_per_text, atol=1e-5, rtol=0)


def test_siglip_vision_tower_matches_transformers_and_round_trips(tmp_path):
    import transformers as tf

    ref = perturb(tf.SiglipVisionModel(tf.SiglipVisionConfig(**TOWER, image_size=24, patch_size=6)))
    ref.save_pretrained(tmp_path / "hf")
    ours = load_siglip_vision(tmp_path / "hf")
    pixels = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        want = ref(pixel_values=pixels)
        hidden, pooled = ours(pixels)
    torch.testing.assert_close(hidden, want.last_hidden_state, atol=1e-4, rtol=0)
    torch.testing.assert_close(pooled, want.pooler_output, atol=1e-4, rtol=0)
    save_siglip_vision(ours, tmp_path / "ours")
    back = tf.SiglipVisionModel.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        torch.testing.assert_close(back(pixel_values=pixels).pooler_output, want.pooler_output, atol=1e-5, rtol=0)


def test_a_sigmoid_loss_clip_keeps_its_logit_bias_through_save_and_load(tmp_path):
    from lmforge.model.vision.clip import CLIPConfig, CLIPModel, TextTowerConfig
    from lmforge.model.vision.vit import ViTConfig

    cfg = CLIPConfig(text=TextTowerConfig(vocab_size=20, max_positions=8, dim=16, n_layers=1, n_heads=2, ffn_dim=32),
                     vision=ViTConfig(image_size=8, patch_size=4, dim=16, n_layers=1, n_heads=2, ffn_dim=32),
                     projection_dim=8, loss="sigmoid")
    model = CLIPModel(cfg).eval()
    with torch.no_grad():
        model.logit_bias.fill_(-3.5)
    save_clip(model, tmp_path)
    back = load_clip(tmp_path)
    assert back.config.loss == "sigmoid" and back.logit_bias.item() == -3.5
    ids, pixels = torch.tensor([[3, 4, 2], [5, 6, 2]]), torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(back(ids, pixels), model(ids, pixels), atol=0, rtol=0)


def test_contrastive_losses_closed_forms():
    """InfoNCE of a perfectly separated batch -> 0, of uniform logits -> log(n); sigmoid loss matches its sum."""
    n = 4
    assert infonce_loss(torch.eye(n) * 100).item() < 1e-6
    assert abs(infonce_loss(torch.zeros(n, n)).item() - torch.log(torch.tensor(float(n))).item()) < 1e-6
    logits = torch.randn(n, n)
    signs = 2 * torch.eye(n) - 1
    want = sum(-torch.log(torch.sigmoid(signs[i, j] * logits[i, j])) for i in range(n) for j in range(n)) / n
    assert torch.isclose(sigmoid_loss(logits), want, atol=1e-5)
