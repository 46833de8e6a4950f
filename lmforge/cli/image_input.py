"""`--image PATH` for `lmforge generate` and `lmforge chat` (and chat's `/image PATH`): a LLaVA model's prompt with
images. In a chat message each image comes first, as LLaVA prompts put it (`<image>\\n` then the text); before a raw
PROMPT its visual tokens come first (after BOS). The images travel as encoded features to the one decode loop.
"""

from collections.abc import Sequence
from pathlib import Path

import typer

from lmforge.common.errors import LmforgeError

IMAGE = typer.Option(None, "--image", metavar="PATH",
                     help="An image file (PNG, JPEG, ...) for a LLaVA model; repeatable. With --chat it comes before "
                          "the message; with a raw PROMPT first, or where the PROMPT writes the image token (<image>).")


def check_files(paths: Sequence[Path] | None) -> None:
    """A one-line error for an --image that is not a file, before any model loads."""
    missing = next((p for p in paths or () if not Path(p).is_file()), None)
    if missing is not None:
        raise LmforgeError(f"--image {missing}: no such file")


def image_encoder(lm, paths: Sequence[Path] | None):
    """The model's ImageEncoder (None for a text model); a one-line error when images are given to a text model."""
    from lmforge.generation.images import ImageEncoder

    vision = ImageEncoder.from_lm(lm)
    if paths and vision is None:
        raise LmforgeError(f"--image needs a LLaVA model directory; {lm.source} is a text-only model")
    return vision


def image_message(text: str, paths: Sequence[Path]) -> str | list[dict]:
    """A user message's content: the text alone, or the images (by path) then the text."""
    if not paths:
        return text
    return [*({"type": "image", "image": str(p)} for p in paths), {"type": "text", "text": text}]


def chat_prompt(tokenizer, vision, messages: list[dict]):
    """(prompt ids, PromptImages or None) of a conversation whose user contents may hold image parts."""
    paths = [part["image"] for m in messages if isinstance(m["content"], list) for part in m["content"]
             if part.get("type") == "image"]
    if not paths:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True), None
    from lmforge.generation.images import placeholder_char

    texts = [m["content"] if isinstance(m["content"], str) else
             "".join(part.get("text", "") for part in m["content"]) for m in messages]
    mark = placeholder_char(texts + [tokenizer.chat_template or ""])
    flat = [m if isinstance(m["content"], str) else
            {**m, "content": "".join(mark + "\n" if part.get("type") == "image" else part.get("text", "")
                                     for part in m["content"])} for m in messages]
    ids = tokenizer.apply_chat_template(flat, add_generation_prompt=True, tokenize=True,
                                        placeholders={mark: vision.image_token_id})
    ids = vision.expand(ids)
    return ids, vision.encode(ids, vision.open(paths))


def raw_prompt(tokenizer, vision, prompt: str, paths: Sequence[Path]):
    """(prompt ids, PromptImages or None) of a raw PROMPT: the images' tokens first (after BOS), or where the
    PROMPT writes the image token itself (one per image)."""
    ids = tokenizer.encode(prompt)
    if not paths:
        if vision is not None:  # a typed image token with no image to put there
            vision.check(ids, 0)
        return ids, None
    if vision.image_token_id not in ids:  # else the PROMPT places them itself ("USER: <image>\nWhat is it?")
        at = 1 if ids and tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id else 0
        ids = ids[:at] + [vision.image_token_id] * len(paths) + ids[at:]
    ids = vision.expand(ids)
    return ids, vision.encode(ids, vision.open(paths))
