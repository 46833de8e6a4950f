"""Model annotation of pages for the quality classifier (the FineWeb-Edu recipe, Penedo et al. 2024: an LLM
labels a sample, a small classifier learns the labels and filters the corpus): an lmforge chat model is asked
whether a page is prose worth learning from, and the page's score is its probability of answering "Yes" rather
than "No" as the next token. Special-token strings are removed from the page, so its text never acts as a
control token in the prompt."""

from __future__ import annotations

from collections.abc import Callable

import torch

from lmforge.common.errors import ConfigError

PROMPT = (
    "Here is an extract from a web page.\n\n{text}\n\n"
    "Is this extract informative prose worth learning from (an article, a story, an explanation), rather than "
    "advertising, spam, a list of links or boilerplate? Answer Yes or No."
)


class PageAnnotator:
    """`scores(texts)` -> P(Yes) / (P(Yes) + P(No)) of the first answer token, for each page."""

    def __init__(self, model: torch.nn.Module, tokenizer, max_chars: int = 2000) -> None:
        if tokenizer.chat_template is None:
            raise ConfigError("the annotating model needs a chat template (an instruct model, e.g. smollm2-135m)")
        self.model, self.tokenizer, self.max_chars = model.eval(), tokenizer, max_chars
        self.answer_ids = [self._first_id(word) for word in ("Yes", "No")]
        self.specials = sorted({tokenizer.decode([i]) for i in tokenizer.all_special_ids}, key=len, reverse=True)
        self.device = next(model.parameters()).device

    def _first_id(self, word: str) -> int:
        ids = self.tokenizer.encode(word, add_special_tokens=False)
        if not ids:
            raise ConfigError(f"the tokenizer encodes {word!r} to no token")
        return ids[0]

    def prompt_ids(self, text: str) -> list[int]:
        for special in self.specials:
            text = text.replace(special, "")
        messages = [{"role": "user", "content": PROMPT.format(text=text[: self.max_chars])}]
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)

    @torch.inference_mode()
    def scores(self, texts: list[str], on_page: Callable[[int], None] | None = None) -> list[float]:
        out = []
        for i, text in enumerate(texts):
            ids = torch.tensor([self.prompt_ids(text)], device=self.device)
            logits = self.model(ids)[0, -1].float()
            yes, no = logits[self.answer_ids[0]], logits[self.answer_ids[1]]
            out.append(float(torch.sigmoid(yes - no)))  # softmax over the two answers
            if on_page:
                on_page(i + 1)
        return out
