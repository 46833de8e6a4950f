"""`lmforge serve --rag INDEX`: chat completions grounded in an index. The last user message is the question: the
top chunks are retrieved for it and put into that message as numbered data blocks (lmforge.rag.answer), the model
answers through the same engine, and the response carries a documented extra field:

    "sources": [{"index": 1, "source": path, "doc": id, "start": c0, "end": c1, "chunk_id": n, "score": s,
                 "cited": true if the answer cites [1], "support": content words of the answer found in the chunk,
                 "text": chunk}, ...]

(in a streamed answer, on the first chunk, with "cited" false: the answer is not known yet).
"""

import threading

from lmforge.common.errors import LmforgeError
from lmforge.rag.answer import ANSWER_PREFIX, SYSTEM, Answer, cited_numbers, prompt_ids, rag_messages
from lmforge.server.protocol import OpenAIError
from lmforge.server.served import ServedModel


class RagServedModel(ServedModel):
    def __init__(self, *args, retriever, top_k: int = 3, mode: str = "hybrid", **kwargs):
        super().__init__(*args, **kwargs)
        self.retriever, self.top_k, self.mode = retriever, top_k, mode
        self._local = threading.local()

    def prepare(self, body, kind: str, max_request_tokens: int | None = None):
        self._local.body = body  # _encode_chat gets the request's plan; the retrieval result goes on the body
        try:
            return super().prepare(body, kind, max_request_tokens)
        finally:
            self._local.body = None

    def _encode_chat(self, plan) -> list[int]:
        body, messages = self._local.body, plan.messages
        if not messages or messages[-1]["role"] != "user" or not str(messages[-1].get("content") or "").strip():
            raise OpenAIError(400, "with --rag the last message must be the user's question", param="messages")
        question = messages[-1]["content"]
        hits = self.retriever.retrieve(question, self.top_k, self.mode)
        rules = "\n\n".join([SYSTEM, *(m["content"] for m in messages[:-1] if m["role"] == "system")])
        history = [m for m in messages[:-1] if m["role"] != "system"]
        chat = rag_messages(question, hits, self.tokenizer, history)
        chat[0] = {"role": "system", "content": rules}
        # tools or a response_format constrain the answer's form: no prefilled start then
        prefix = "" if plan.grammar is not None or plan.template_kwargs else ANSWER_PREFIX
        body._extras["rag"] = (question, hits, prefix)
        try:  # the tokenizer's safe path: the client's messages and the chunks are encoded as plain text
            return prompt_ids(self.tokenizer, chat, prefix, **plan.template_kwargs)
        except LmforgeError as err:
            raise OpenAIError(400, f"cannot render the chat template: {err}", param="messages") from None
        except Exception as err:  # noqa: BLE001 - whatever the tokenizer refuses is the client's text
            raise OpenAIError(400, f"the tokenizer cannot encode this text: {str(err)[:200]}",
                              param="messages") from None

    def answer_prefix(self, body) -> str:
        return body._extras["rag"][2] if "rag" in body._extras else ""

    def response_extras(self, body, choices) -> dict:
        if "rag" not in body._extras:
            return {}
        question, hits, _ = body._extras["rag"]
        text = choices[0].text if choices else ""
        return {"sources": Answer(question, text, hits, cited_numbers(text, len(hits))).sources()}
