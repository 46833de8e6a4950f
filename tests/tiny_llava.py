"""A tiny random LLaVA directory (CLIP tower 24 px / 6 px patches -> 16 visual tokens, MLP projector, tiny Llama
with vocab 320) with the tiny BPE tokenizer plus an `<image>` token, ChatML, and a CLIP preprocessor_config.json:
what `lmforge vlm` saves, small enough for unit tests. Also drawn test images as PNG bytes / data URLs."""

import base64
import io
import json

import pytest

IMAGE_TOKEN = "<image>"
TOKENS_PER_IMAGE = 16
SIZE = 24


def write_tiny_llava(path, seed: int = 0):
    import torch

    from lmforge.data.images import ImageProcessor
    from lmforge.formats.hf_llava import save_llava
    from lmforge.model import get_preset
    from lmforge.model.vision.projector import LlavaConfig, LlavaModel
    from lmforge.model.vision.vit import ViTConfig
    from lmforge.tokenizer import Tokenizer
    from tests.tiny_lm import tiny_tokenizer

    tiny_tokenizer().save(path)
    tokenizer = Tokenizer.from_dir(path)  # a copy: the cached tiny tokenizer stays as it is
    tokenizer.add_tokens([IMAGE_TOKEN], special=True)
    tokenizer.save(path)
    image_token_id = tokenizer.token_to_id(IMAGE_TOKEN)
    torch.manual_seed(seed)
    # init_std 0.2: the tiny LM's answers then depend on the image (at 0.02 it says one token whatever it sees)
    text = get_preset("tiny-llama", vocab_size=320, eos_token_id=2).replace(init_std=0.2)
    vision = ViTConfig(kind="clip", image_size=SIZE, patch_size=6, dim=32, n_layers=3, n_heads=4, ffn_dim=48)
    model = LlavaModel(LlavaConfig(vision=vision, text=text, image_token_id=image_token_id))
    with torch.no_grad():  # the tower's and projector's default inits are fine; make the projector's output count
        model.multi_modal_projector.linear_2.weight.mul_(4)
    save_llava(model.eval(), path)
    (path / "preprocessor_config.json").write_text(json.dumps(ImageProcessor(shortest_edge=SIZE, crop=(SIZE, SIZE))
                                                              .to_hf()))
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": 2}))
    return path


@pytest.fixture(scope="session")
def llava_dir(tmp_path_factory):
    return write_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture(scope="session")
def llava_lm(llava_dir):
    from lmforge.formats.loader import load

    return load(llava_dir)


def png(color=(220, 30, 30), shape="square", size=48) -> bytes:
    """A drawn image as PNG bytes: a coloured square or circle on white."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    box = (size // 4, size // 4, 3 * size // 4, 3 * size // 4)
    (draw.rectangle if shape == "square" else draw.ellipse)(box, fill=color)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def data_url(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64,{base64.b64encode(data).decode()}"
