"""Issue 27 item 5, the server: a LLaVA directory served over the OpenAI API takes `image_url` content parts holding
data: URLs. The official `openai` client gets an answer whose first-token log-probabilities equal transformers'
LlavaForConditionalGeneration within 1e-4, with the image's visual tokens in usage; the prefix cache keys image
blocks by the image's content (two images never share KV); remote URLs, malformed or unsupported images and
decompression bombs are 4xx and the server goes on; a text-only request still works."""

import io
import struct
import zlib

import httpx
import pytest
import torch

from lmforge.engine.llm import EngineConfig
from lmforge.server import images as server_images
from tests.server_util import live_server
from tests.tiny_llava import TOKENS_PER_IMAGE, data_url, png
from tests.unit.server.conftest import post

NAME = "tiny-llava"
RED, BLUE = png((220, 30, 30), "square"), png((30, 60, 220), "circle")


def ask(image: bytes | None, text="what is it?", **fields) -> dict:
    content = [{"type": "text", "text": text}]
    if image is not None:
        content.append({"type": "image_url", "image_url": {"url": data_url(image)}})
    return {"model": NAME, "messages": [{"role": "user", "content": content}], "max_tokens": 2, "temperature": 0,
            "logprobs": True, "top_logprobs": 20, **fields}


def top_logprobs(response: dict) -> list[float]:
    return sorted(t["logprob"] for t in response["choices"][0]["logprobs"]["content"][0]["top_logprobs"])


@pytest.fixture(scope="module")
def reference(llava_dir, llava_lm):
    """The 20 largest first-token log-probabilities transformers gives for `ask(image)`'s prompt."""
    import transformers as tf
    from PIL import Image

    model = tf.LlavaForConditionalGeneration.from_pretrained(llava_dir).eval()
    processor = tf.CLIPImageProcessor.from_pretrained(llava_dir)
    tokenizer, image_id = llava_lm.tokenizer, llava_lm.vision.config.image_token_id

    def top(image: bytes | None, text="what is it?") -> list[float]:
        user = text + ("<image>\n" if image is not None else "")  # the part order of `ask`; <image>: one token
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True)
        ids = [i for t in tokenizer.encode(rendered, add_special_tokens=False)
               for i in ([t] * TOKENS_PER_IMAGE if t == image_id else [t])]
        pixels = processor(Image.open(io.BytesIO(image)), return_tensors="pt")["pixel_values"] if image else None
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids]), pixel_values=pixels).logits[0, -1]
        return sorted(torch.log_softmax(logits.double(), -1).topk(20).values.tolist()), len(ids)

    return top


def close(got: list[float], want: list[float]) -> bool:
    return max(abs(a - b) for a, b in zip(got, want, strict=True)) < 1e-4


def test_openai_client_sends_an_image_and_usage_counts_it(llava_lm, reference):
    import openai

    with live_server(llava_lm, name=NAME) as (url, _):
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        answer = client.chat.completions.create(**ask(RED))
        text_only = client.chat.completions.create(**ask(None))
        streamed = client.chat.completions.create(**ask(RED, n=2, logprobs=False, top_logprobs=None), stream=True)
        pieces = ["", ""]
        for chunk in streamed:
            for choice in chunk.choices:
                pieces[choice.index] += choice.delta.content or ""
    assert pieces == [answer.choices[0].message.content] * 2  # streamed, and each of n choices, as not streamed
    want, n_image = reference(RED)
    got = sorted(t.logprob for t in answer.choices[0].logprobs.content[0].top_logprobs)
    assert close(got, want) and answer.choices[0].message.content
    assert answer.usage.prompt_tokens == n_image == text_only.usage.prompt_tokens + TOKENS_PER_IMAGE + 1
    want, n_text = reference(None)
    assert close(sorted(t.logprob for t in text_only.choices[0].logprobs.content[0].top_logprobs), want)
    assert text_only.usage.prompt_tokens == n_text


def test_prefix_cache_keys_image_blocks_by_the_image(llava_lm, reference):
    config = EngineConfig(num_blocks=64, block_size=4, enable_prefix_caching=True)
    with live_server(llava_lm, name=NAME, config=config) as (url, llm):
        red = post(url, "/v1/chat/completions", ask(RED)).json()
        before = llm.stats().computed_tokens_total
        blue = post(url, "/v1/chat/completions", ask(BLUE)).json()  # same tokens, another image in the same slots
        blue_cost = llm.stats().computed_tokens_total - before
        red_again = post(url, "/v1/chat/completions", ask(RED)).json()
        red_again_cost = llm.stats().computed_tokens_total - before - blue_cost
    assert close(top_logprobs(red), reference(RED)[0]) and close(top_logprobs(blue), reference(BLUE)[0])
    assert not close(top_logprobs(red), top_logprobs(blue))
    assert close(top_logprobs(red_again), top_logprobs(red))
    # the blue image reused only the blocks before it; the red one again reused its image blocks too
    assert red_again_cost < blue_cost - TOKENS_PER_IMAGE // 2


def _png_claiming(width: int, height: int) -> bytes:
    """A valid small PNG whose header says width x height (the CRC fixed): a decompression bomb's header."""
    data = bytearray(png())
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])))
    return bytes(data)


def _noise_png(size: int = 64) -> bytes:
    """A PNG that does not compress (random pixels): about 12 KB."""
    from PIL import Image

    out = io.BytesIO()
    Image.frombytes("RGB", (size, size), bytes(torch.randint(0, 256, (size * size * 3,), dtype=torch.uint8))).save(
        out, format="PNG")
    return out.getvalue()


def _with_url(url: str) -> dict:
    body = ask(None)
    body["messages"][0]["content"].append({"type": "image_url", "image_url": {"url": url}})
    return body


BAD = [
    (_with_url("https://example.com/cat.png"), "image_url_not_supported", "no network access"),
    (_with_url("file:///etc/passwd"), "image_url_not_supported", "must be a data: URL"),
    (_with_url("data:image/png;base64,%%%not-base64%%%"), "invalid_image", "base64 is malformed"),
    (_with_url("data:image/png,rawbytes"), "invalid_image", "must be base64"),
    (_with_url(data_url(b"GIF89a but not really")), "invalid_image_format", "cannot be decoded"),
    (_with_url(data_url(b"<svg/>", "image/svg+xml")), "invalid_image_format", "unsupported image type"),
    (_with_url(data_url(_png_claiming(5000, 5000))), "image_too_large", "5000x5000 pixels"),
    (_with_url(data_url(_png_claiming(100_000, 100_000))), "image_too_large", "decompression bomb"),
    (_with_url(data_url(_noise_png())), "image_too_large", "larger than 4000 bytes"),
    ({"model": NAME, "messages": [{"role": "system", "content": [
        {"type": "image_url", "image_url": {"url": data_url(RED)}}]}]}, "invalid_image", "user messages only"),
    (_with_url(data_url(RED)) | {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": "not an object"}]}]}, "invalid_image", "'url' string"),
    (ask(RED) | {"n": 1, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(RED)}}] * 9}]}, "too_many_images", "at most 8"),
]


def test_bad_images_are_4xx_and_the_server_goes_on(llava_lm, lm, monkeypatch):
    monkeypatch.setattr(server_images, "MAX_IMAGE_BYTES", 4000)  # the drawn images are ~300 bytes
    with live_server(llava_lm, name=NAME) as (url, llm):
        for body, code, needle in BAD:
            r = post(url, "/v1/chat/completions", body)
            assert r.status_code == 400 and r.json()["error"]["code"] == code, (needle, r.text[:300])
            assert needle in r.json()["error"]["message"], r.text[:300]
        # an image token typed as text is text; one in a raw completions prompt has no image: refused
        typed = post(url, "/v1/chat/completions", ask(RED, text="<image> what is it?")).json()
        assert typed["usage"]["prompt_tokens"] > ask_tokens(url, RED)
        r = post(url, "/v1/completions", {"model": NAME, "prompt": "<image> hi", "max_tokens": 2})
        assert r.status_code == 400 and "image token" in r.json()["error"]["message"]
        assert post(url, "/v1/chat/completions", ask(RED)).status_code == 200
        assert httpx.get(url + "/health").status_code == 200 and not llm.requests
    with live_server(lm, name=NAME) as (url, _):  # a text model refuses images
        r = post(url, "/v1/chat/completions", ask(RED))
        assert r.status_code == 400 and r.json()["error"]["code"] == "images_not_supported"


def ask_tokens(url: str, image: bytes) -> int:
    return post(url, "/v1/chat/completions", ask(image)).json()["usage"]["prompt_tokens"]
