"""What `lmforge vlm` trains and measures on: drawn scenes (data/drawn_images.py) as chat examples.

A user turn "<image>\\nQUESTION" rendered with the LLM's own chat template (as LLaVA does; `<image>` is a special
token added to the tokenizer), the placeholder expanded to one slot per visual token, and the assistant's answer
as the only target. Stage 1 asks for a caption, stage 2 asks the visual questions, each followed by a response-format
instruction (LLaVA-1.5's "Answer the question using a single word or phrase."), so that the one-word answers the
exact match wants are asked for, not learned as the model's manner of answering everything. Held-out exact match:
greedy answers (KV-cached, batched) compared with the reference after stripping whitespace.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmforge.common.errors import LmforgeError
from lmforge.data.drawn_images import DESCRIBE, Scene
from lmforge.generation.cache.contiguous import new_kv_cache
from lmforge.model.transformer import float32_logits
from lmforge.model.vision.projector import expand_image_tokens

IMAGE_TOKEN = "<image>"
IGNORE = -100


@dataclass(frozen=True)
class Example:
    prompt: list[int]  # chat prompt up to the assistant's turn, image slots expanded
    answer: list[int]  # the assistant's reply through its end-of-turn marker
    image: int  # index into the split's pixel tensor
    kind: str  # caption | shape | colour | count | where
    text: str  # the reference answer


def add_image_token(tokenizer) -> int:
    """The id of `<image>` (added to the tokenizer as a special token if new)."""
    tokenizer.add_tokens([IMAGE_TOKEN], special=True)
    return tokenizer.token_to_id(IMAGE_TOKEN)


def encode(tokenizer, question: str, answer: str, image: int, kind: str, image_token_id: int,
           tokens_per_image: int) -> Example:
    if tokenizer.chat_template is None:
        raise LmforgeError("lmforge vlm needs a tokenizer with a chat template (the LLM's instruct template)")
    user = [{"role": "user", "content": f"{IMAGE_TOKEN}\n{question}"}]
    prompt = tokenizer.apply_chat_template(user, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": answer}])
    if not full.startswith(prompt):
        raise LmforgeError("the chat template's generation prompt is not a prefix of the conversation it renders")
    # our own text: encoding the rendering is safe here, and turns <image> into its special id
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    if ids.count(image_token_id) != 1:
        raise LmforgeError(f"the rendered prompt holds {ids.count(image_token_id)} {IMAGE_TOKEN} tokens, not 1")
    ids = expand_image_tokens(ids, image_token_id, tokens_per_image)
    return Example(ids, tokenizer.encode(full[len(prompt):], add_special_tokens=False), image, kind, answer)


def caption_examples(tokenizer, scenes: list[Scene], image_token_id: int, tokens_per_image: int) -> list[Example]:
    return [encode(tokenizer, DESCRIBE, s.caption, i, "caption", image_token_id, tokens_per_image)
            for i, s in enumerate(scenes)]


def vqa_examples(tokenizer, scenes: list[Scene], image_token_id: int, tokens_per_image: int,
                 answer_format: str = "") -> list[Example]:
    """The visual questions of every scene; `answer_format` (if any) follows each question on a line of its own."""
    suffix = f"\n{answer_format}" if answer_format else ""
    return [encode(tokenizer, question + suffix, answer, i, kind, image_token_id, tokens_per_image)
            for i, s in enumerate(scenes) for kind, question, answer in s.qa()]


def collate(examples: list[Example], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids [B, T] right-padded, targets [B, T] (IGNORE off the answers), image index [B]): the targets are the
    next tokens, so position t predicts ids[t + 1]."""
    rows = [e.prompt + e.answer for e in examples]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    targets = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for r, (e, row) in enumerate(zip(examples, rows, strict=True)):
        ids[r, :len(row)] = torch.tensor(row)
        start = len(e.prompt) - 1
        targets[r, start:start + len(e.answer)] = torch.tensor(e.answer)
    return ids, targets, torch.tensor([e.image for e in examples])


@torch.no_grad()
def greedy_answers(model, examples: list[Example], pixels: torch.Tensor, stop_ids: list[int], tokenizer,
                   max_new: int = 8, batch_size: int = 64) -> list[str]:
    """Each example's greedy reply (decoded, up to its stop token), prompts left-padded and KV-cached."""
    was_training = model.training
    model.eval()
    out: list[str] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        width = max(len(e.prompt) for e in chunk)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros((len(chunk), width + max_new), dtype=torch.long)
        for r, e in enumerate(chunk):
            ids[r, width - len(e.prompt):] = torch.tensor(e.prompt)
            mask[r, width - len(e.prompt):] = 1
        ids, mask = ids.to(pixels.device), mask.to(pixels.device)  # built on the CPU; the model sits with pixels
        lm = model.language_model
        cache = new_kv_cache(lm, len(chunk), width + max_new)
        features = model.patch_features(pixels[[e.image for e in chunk]])
        h = model.hidden_states(ids, None, mask[:, :width], cache, features)
        made = [[] for _ in chunk]
        done = torch.zeros(len(chunk), dtype=torch.bool)
        for step in range(max_new):
            token = float32_logits(lm.lm_head, h[:, -1]).argmax(-1)
            for r in range(len(chunk)):
                if not done[r]:
                    if int(token[r]) in stop_ids:
                        done[r] = True
                    else:
                        made[r].append(int(token[r]))
            if bool(done.all()) or step == max_new - 1:
                break
            h = model.hidden_states(token[:, None], None, mask[:, :width + step + 1], cache, features)
        out += [tokenizer.decode(m, skip_special_tokens=True).strip() for m in made]
    model.train(was_training)
    return out


def exact_match(model, examples: list[Example], pixels: torch.Tensor, stop_ids: list[int], tokenizer) -> dict:
    """{"vqa_exact_match": share right, "em_<kind>": per question kind} over `examples`."""
    answers = greedy_answers(model, examples, pixels, stop_ids, tokenizer)
    right = [a == e.text for a, e in zip(answers, examples, strict=True)]
    figures = {"vqa_exact_match": sum(right) / max(len(right), 1)}
    for kind in sorted({e.kind for e in examples}):
        hits = [r for r, e in zip(right, examples, strict=True) if e.kind == kind]
        figures[f"em_{kind}"] = sum(hits) / len(hits)
    return figures
