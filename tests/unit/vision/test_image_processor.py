"""The image processor gives transformers' CLIP / SigLIP pixel values for Pillow images of any size and mode."""

import numpy as np
import pytest
import torch
from PIL import Image

from lmforge.common.errors import LmforgeError
from lmforge.data.images import ImageProcessor, open_image


def _images():
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (61, 97, 3), dtype=np.uint8))  # landscape, odd sizes
    tall = Image.fromarray(rng.integers(0, 256, (130, 40, 3), dtype=np.uint8))
    gray = Image.fromarray(rng.integers(0, 256, (50, 50), dtype=np.uint8), mode="L")
    rgba = Image.fromarray(rng.integers(0, 256, (33, 45, 4), dtype=np.uint8), mode="RGBA")
    return [noise, tall, gray, rgba]


@pytest.mark.parametrize("size,crop", [(224, 224), (30, 24)])
def test_clip_processor_matches_transformers(size, crop):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    ref = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": crop, "width": crop})
    ours = ImageProcessor.from_hf(ref.to_dict())
    assert ours == ImageProcessor(shortest_edge=size, crop=(crop, crop))
    for image in _images():
        want = ref(images=image, return_tensors="pt")["pixel_values"]
        torch.testing.assert_close(ours(image), want, atol=1e-5, rtol=0)


def test_siglip_processor_matches_transformers():
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    ref = SiglipImageProcessorPil(size={"height": 32, "width": 32})
    ours = ImageProcessor.from_hf(ref.to_dict())
    assert ours == ImageProcessor.siglip(32)
    images = _images()
    torch.testing.assert_close(ours(images), ref(images=images, return_tensors="pt")["pixel_values"], atol=1e-5, rtol=0)


def test_processor_round_trips_through_its_hf_dict_and_refuses_bad_files(tmp_path):
    proc = ImageProcessor(shortest_edge=40, crop=(36, 36))
    assert ImageProcessor.from_hf(proc.to_hf()) == proc
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(LmforgeError, match="cannot read image"):
        open_image(bad)
