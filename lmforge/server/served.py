"""What the server knows about its model: name, tokenizer, chat template, stop tokens, context length.

`prepare` turns a validated OpenAI request into prompt token ids and one SamplingParams per choice, rejecting
prompts that do not fit the context or the KV cache with OpenAI's `context_length_exceeded` error, and any text the
chat template or the tokenizer refuses with a 400. A LLaVA model's chat requests may hold images (images.py):
each becomes its run of image tokens, counted in the prompt's tokens (usage, context) like any other.
"""

import time
from dataclasses import replace
from functools import lru_cache

from lmforge.common.errors import LmforgeError
from lmforge.generation.sampling_params import SamplingParams
from lmforge.server.images import take_images
from lmforge.server.protocol import CompletionRequest, OpenAIError
from lmforge.server.tools import ChatPlan, plan_chat


class ServedModel:
    def __init__(self, name: str, tokenizer, stop_token_ids: list[int], context_len: int,
                 default_max_tokens: int = 1024, vocab_size: int | None = None, vision=None):
        """`vocab_size`: the model's logits width (grammars mask every logit); default: the tokenizer's.
        `vision`: a LLaVA model's ImageEncoder (generation/images.py): chat messages may then hold images."""
        self.name = name
        self.vision = vision
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size or tokenizer.vocab_size
        self.stop_token_ids = list(stop_token_ids)
        self.context_len = context_len
        self.default_max_tokens = default_max_tokens
        self.created = int(time.time())
        self.token_text = lru_cache(maxsize=65536)(lambda token: tokenizer.decode([token], skip_special_tokens=False))

    def take_images(self, body, kind: str) -> None:
        """Decode a chat request's images (server/images.py) before anything reads its text (the safety rail, the
        template): each image_url part becomes a placeholder text part; the pixels wait on the body."""
        if kind == "chat":
            taken = take_images(body, self.vision, self.name, self.tokenizer.chat_template)
            if taken is not None:
                body._extras["images"] = taken

    def images_of(self, body):
        """The request's pixel_values [n, 3, H, W] (None without images): what the engine encodes."""
        taken = getattr(body, "_extras", {}).get("images")
        return None if taken is None else taken.pixels

    def num_images(self, body) -> int:
        pixels = self.images_of(body)
        return 0 if pixels is None else pixels.shape[0]

    def _encode_chat(self, plan: ChatPlan) -> list[int]:
        try:  # tokenize=True: content is encoded as plain text, never as control tokens (`<|im_start|>`)
            return self.tokenizer.apply_chat_template(plan.messages, add_generation_prompt=True, tokenize=True,
                                                      placeholders=plan.placeholders, **plan.template_kwargs)
        except LmforgeError as err:
            raise OpenAIError(400, f"cannot render the chat template: {err}", param="messages") from None
        except Exception as err:  # noqa: BLE001 - whatever the tokenizer refuses is the client's text
            raise OpenAIError(400, f"the tokenizer cannot encode this text: {str(err)[:200]}",
                              param="messages") from None

    def response_extras(self, body, choices) -> dict:
        """Fields added to a chat response beyond OpenAI's (e.g. `sources` with --rag: rag_served.py)."""
        return {}

    def answer_prefix(self, body) -> str:
        """Text the prompt already opened the answer with (prefilled; part of the response's content)."""
        return ""

    def _encode(self, text: str, param: str, add_special_tokens: bool = True) -> list[int]:
        try:  # encode_batch releases the GIL (encode does not): a long text does not stall the event loop
            return self.tokenizer.encode_batch([text], add_special_tokens=add_special_tokens)[0]
        except Exception as err:  # noqa: BLE001 - whatever the tokenizer refuses is the client's text
            raise OpenAIError(400, f"the tokenizer cannot encode this text: {str(err)[:200]}", param=param) from None

    def _encode_prompts(self, body: CompletionRequest) -> list[list[int]]:
        prompt = body.prompt
        if isinstance(prompt, str):
            return [self._encode(prompt, "prompt")]
        if all(isinstance(p, int) for p in prompt):
            return [self._checked_ids(prompt)]
        return [self._encode(p, "prompt") if isinstance(p, str) else self._checked_ids(p) for p in prompt]

    def _checked_ids(self, ids: list[int]) -> list[int]:
        vocab = self.tokenizer.vocab_size
        bad = [i for i in ids if not 0 <= i < vocab]
        if bad:
            raise OpenAIError(400, f"prompt token id {bad[0]} is outside the vocabulary [0, {vocab})", param="prompt")
        return list(ids)

    def prepare(self, body, kind: str, max_request_tokens: int | None = None
                ) -> list[tuple[list[int], list[SamplingParams]]]:
        """`max_request_tokens`: the engine's limit on prompt + completion (its KV cache may hold less than the
        context); a request over it is refused here, with the limit, rather than failed by the engine."""
        plan = plan_chat(body, self) if kind == "chat" else None  # tools, response_format: prompt and grammar
        taken = body._extras.get("images") if kind == "chat" else None
        if taken is not None:  # each image's mark becomes the image token, then one per visual token
            plan = replace(plan, placeholders={taken.mark: self.vision.image_token_id})
        prompts = [self._encode_chat(plan)] if kind == "chat" else self._encode_prompts(body)
        if taken is not None:
            prompts = [self.vision.expand(ids) for ids in prompts]
        limit = self.context_len if max_request_tokens is None else min(self.context_len, max_request_tokens)
        what = (f"this model's context is {self.context_len} tokens" if limit == self.context_len else
                f"this server's KV cache holds {limit} tokens per request (the model's context is {self.context_len})")
        jobs = []
        for ids in prompts:
            room = limit - len(ids)
            if room < 1:
                raise OpenAIError(400, f"the prompt has {len(ids)} tokens; {what}",
                                  param="messages" if kind == "chat" else "prompt", code="context_length_exceeded")
            asked = (body.max_completion_tokens or body.max_tokens) if kind == "chat" else body.max_tokens
            if asked is not None and asked > room:
                raise OpenAIError(400, f"max_tokens={asked} plus the prompt's {len(ids)} tokens exceeds the "
                                       f"limit of {limit} tokens: {what}", param="max_tokens",
                                  code="context_length_exceeded")
            max_new = asked or min(room, self.default_max_tokens)
            chat_logprobs = (body.top_logprobs or 0) if kind == "chat" and body.logprobs else None
            logprobs = chat_logprobs if kind == "chat" else body.logprobs
            try:
                params = [SamplingParams(
                    max_new_tokens=max_new, temperature=1.0 if body.temperature is None else body.temperature,
                    top_p=1.0 if body.top_p is None else body.top_p, presence_penalty=body.presence_penalty,
                    frequency_penalty=body.frequency_penalty, logit_bias=body.logit_bias,
                    top_k=max(body.top_k, 0), min_p=body.min_p, repetition_penalty=body.repetition_penalty,
                    seed=None if body.seed is None else (body.seed + i) % 2**63, stop=body.stop or (),
                    stop_token_ids=self.stop_token_ids, logprobs=logprobs,
                    grammar=plan.grammar if plan is not None else None) for i in range(body.n)]
            except LmforgeError as err:
                raise OpenAIError(400, str(err)) from None
            jobs.append((ids, params))
        return jobs
