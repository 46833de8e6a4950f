"""LLaVA (CLIP tower + MLP projector + Llama / Qwen2 LM) equals transformers' on random weights: image-token
expansion, a batch with and without images, and the saved directory reloads in transformers with equal logits."""

import pytest
import torch

from lmforge.common.errors import LmforgeError
from lmforge.formats.hf_llava import load_llava, save_llava
from lmforge.model.vision.projector import expand_image_tokens
from tests.unit.vision.conftest import perturb

IMAGE = 127


def tiny_llava(family: str = "llama", tower: str = "clip", select: str = "default"):
    import transformers as tf

    vision = dict(model_type=f"{tower}_vision_model", hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                  num_attention_heads=4, image_size=24, patch_size=6)
    text = dict(model_type=family, vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2)
    cfg = tf.LlavaConfig(vision_config=vision, text_config=text, image_token_id=IMAGE, image_seq_length=16,
                         vision_feature_select_strategy=select)
    return perturb(tf.LlavaForConditionalGeneration(cfg))


def _batch(tokens_per_image: int):
    """Row 0: text, an image, text; row 1: text only, left-padded to the same length."""
    with_image = expand_image_tokens([5, 9, IMAGE, 17, 33, 40], IMAGE, tokens_per_image)
    text_only = [7, 8, 9, 10, 11, 12, 13]
    T = len(with_image)
    ids = torch.tensor([with_image, [0] * (T - len(text_only)) + text_only])
    mask = torch.ones_like(ids)
    mask[1, :T - len(text_only)] = 0
    return ids, mask


CASES = [("llama", "clip", "default", 16), ("qwen2", "clip", "default", 16),  # CLIP: class token dropped
         ("llama", "siglip", "full", 16), ("llama", "siglip", "default", 15)]  # "default" drops a SigLIP patch too


@pytest.mark.parametrize("family,tower,select,tokens", CASES)
def test_llava_matches_transformers_with_and_without_images(tmp_path, family, tower, select, tokens):
    import transformers as tf

    ref = tiny_llava(family, tower, select)
    ref.save_pretrained(tmp_path / "hf")
    ours = load_llava(tmp_path / "hf")
    assert ours.config.tokens_per_image == tokens
    ids, mask = _batch(ours.config.tokens_per_image)
    assert int((ids == IMAGE).sum()) == tokens
    pixels = torch.randn(1, 3, 24, 24)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    real = mask.bool()
    with torch.no_grad():
        want = ref(input_ids=ids, pixel_values=pixels, attention_mask=mask, position_ids=positions).logits
        got = ours(ids, pixels, attention_mask=mask)
        torch.testing.assert_close(got[real], want[real], atol=1e-4, rtol=0)
        # a text-only batch takes the language model's own path, bit for bit
        text = ids[1:, -7:]
        torch.testing.assert_close(ours(text), ours.language_model(text), atol=0, rtol=0)
        torch.testing.assert_close(ours(text), ref(input_ids=text).logits, atol=1e-4, rtol=0)

    save_llava(ours, tmp_path / "ours")
    back = tf.LlavaForConditionalGeneration.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        again = back(input_ids=ids, pixel_values=pixels, attention_mask=mask, position_ids=positions).logits
    torch.testing.assert_close(again[real], want[real], atol=1e-5, rtol=0)


def test_llava_refuses_a_prompt_whose_image_tokens_do_not_match_the_images(tmp_path):
    tiny_llava().save_pretrained(tmp_path)
    ours = load_llava(tmp_path)
    ids = torch.tensor([[5, IMAGE, 6]])  # not expanded: 1 slot for 16 features
    with pytest.raises(LmforgeError, match="1 image token.*16 features"):
        ours(ids, torch.randn(1, 3, 24, 24))
