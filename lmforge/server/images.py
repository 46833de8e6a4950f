"""Images in chat requests: OpenAI's `image_url` content parts, taken as `data:` URLs only and decoded under limits.

There is no network at run time, so an http(s) URL is refused with a 400 that says so. A data URL is checked
before anything is decoded: its media type (PNG, JPEG, WebP, GIF), its size (MAX_IMAGE_BYTES once decoded from
base64), then the image header's width x height (MAX_IMAGE_PIXELS, far under Pillow's own decompression-bomb limit,
which stays on), and only then are the pixels decoded, by the decoder of the format the header names. Each
refusal is a 400 naming the message and content part; nothing a client sends reaches the model undecoded.
"""

import base64
import binascii
import io
from dataclasses import dataclass

import torch
from PIL import Image

from lmforge.common.errors import LmforgeError
from lmforge.generation.images import placeholder_char
from lmforge.server.protocol import OpenAIError

MAX_IMAGE_BYTES = 8 * 2**20  # one image, decoded from base64 (the request body limit applies first)
MAX_IMAGE_PIXELS = 4096 * 4096  # width x height; Pillow's own limit (~89 M pixels, an error at twice that) stays
MAX_IMAGES = 8  # per request: each costs the tower a forward pass and the prompt tokens_per_image tokens
MEDIA_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/jpg": "JPEG", "image/webp": "WEBP", "image/gif": "GIF"}


@dataclass(frozen=True)
class RequestImages:
    """A chat request's images: `mark` is the character that stands for each one in the messages' text."""

    mark: str
    pixels: torch.Tensor  # [n, 3, H, W], in the order the messages show them


def _refuse(where: str, message: str, code: str = "invalid_image") -> OpenAIError:
    return OpenAIError(400, f"{where}: {message}", param=where, code=code)


def decode_data_url(url: str, where: str) -> Image.Image:
    """The image a `data:image/...;base64,...` URL holds, decoded; a 400 for anything else."""
    scheme = url.split(":", 1)[0].strip().lower() if ":" in url else ""
    if scheme in ("http", "https"):
        raise _refuse(where, "remote image URLs are not fetched (this server has no network access); send the image "
                             "inline as a data URL: data:image/png;base64,...", "image_url_not_supported")
    if scheme != "data":
        raise _refuse(where, f"image_url.url must be a data: URL (data:image/png;base64,...), got {url[:40]!r}",
                      "image_url_not_supported")
    header, comma, payload = url.split(":", 1)[1].partition(",")
    params = [p.strip().lower() for p in header.split(";")]
    media = params[0]
    if not comma or "base64" not in params[1:]:
        raise _refuse(where, "a data URL must be base64: data:image/png;base64,<data>")
    if media not in MEDIA_TYPES:
        raise _refuse(where, f"unsupported image type {media[:60]!r}; supported: "
                             f"{', '.join(sorted(set(MEDIA_TYPES) - {'image/jpg'}))}", "invalid_image_format")
    if len(payload) > (MAX_IMAGE_BYTES + 2) // 3 * 4 + 4:  # refused before decoding it
        raise _refuse(where, f"the image is larger than {MAX_IMAGE_BYTES} bytes", "image_too_large")
    try:
        data = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise _refuse(where, "the data URL's base64 is malformed") from None
    try:
        image = Image.open(io.BytesIO(data), formats=sorted(set(MEDIA_TYPES.values())))
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:  # read from the header: no pixel is decoded yet
            raise _refuse(where, f"the image is {width}x{height} pixels; at most {MAX_IMAGE_PIXELS} pixels are "
                                 "accepted", "image_too_large")
        image.load()  # the first frame of an animation
    except OpenAIError:
        raise
    except Image.DecompressionBombError:
        raise _refuse(where, "the image has too many pixels (decompression bomb)", "image_too_large") from None
    except Exception as err:  # noqa: BLE001 - whatever the decoders refuse is the client's data
        raise _refuse(where, f"the image cannot be decoded as PNG, JPEG, WebP or GIF: {str(err)[:120]}",
                      "invalid_image_format") from None
    return image


def _texts(body) -> list[str]:
    out = []
    for message in body.messages:
        content = message.content
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out += [part.get("text") for part in content if isinstance(part.get("text"), str)]
    return out


def take_images(body, vision, model_name: str, template: str | None) -> RequestImages | None:
    """Decode the `image_url` parts of a chat request, in order, and put a text part holding the mark (then a
    newline, as LLaVA prompts put `<image>\\n`) in each one's place. None when the request has no image."""
    found = []
    for i, message in enumerate(body.messages):
        if not isinstance(message.content, list):
            continue
        for j, part in enumerate(message.content):
            if part.get("type") != "image_url":
                continue
            where = f"messages[{i}].content[{j}]"
            if vision is None:
                raise _refuse(where, f"the model {model_name!r} takes no images (it is a text-only model)",
                              "images_not_supported")
            if message.role != "user":
                raise _refuse(where, f"images are accepted in user messages only, not in a {message.role!r} one")
            spec = part.get("image_url")
            url = spec.get("url") if isinstance(spec, dict) else None
            if not isinstance(url, str):
                raise _refuse(where, "image_url must be an object with a 'url' string")
            if len(found) == MAX_IMAGES:
                raise _refuse(where, f"at most {MAX_IMAGES} images are accepted per request", "too_many_images")
            found.append((i, j, decode_data_url(url, where)))
    if not found:
        return None
    try:
        mark = placeholder_char(_texts(body) + [template or ""])
    except LmforgeError as err:
        raise OpenAIError(400, str(err), param="messages") from None
    for i, j, _ in found:
        body.messages[i].content[j] = {"type": "text", "text": mark + "\n"}
    try:
        pixels = vision.pixels([image for _, _, image in found])
    except Exception as err:  # noqa: BLE001 - an image mode the processor cannot convert is the client's data
        raise OpenAIError(400, f"cannot process the image: {str(err)[:200]}", param="messages",
                          code="invalid_image") from None
    return RequestImages(mark, pixels)
