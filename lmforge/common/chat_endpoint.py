"""A client of any OpenAI-compatible chat endpoint (`lmforge serve`, vLLM, llama.cpp's server, OpenAI): the model it
serves and greedy chat completions, every failure a one-line LmforgeError naming the endpoint. Used by `lmforge
judge --endpoint` and `lmforge redteam`."""

from __future__ import annotations

import httpx

from lmforge.common.errors import LmforgeError


class ChatEndpoint:
    def __init__(self, endpoint: str, api_key: str | None = None, timeout: float = 300.0, flag: str = "ENDPOINT"):
        if not endpoint.startswith(("http://", "https://")):
            raise LmforgeError(f"{flag} must be an http(s) URL such as http://127.0.0.1:8000/v1, got {endpoint!r}")
        self.endpoint = endpoint.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=self.endpoint, headers=headers, timeout=timeout)

    def __enter__(self) -> ChatEndpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.client.close()

    def first_model(self, flag: str = "--model") -> str:
        """The first model /models lists (what a one-model server serves)."""
        try:
            r = self.client.get("/models")
            r.raise_for_status()
            return r.json()["data"][0]["id"]
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as err:
            raise LmforgeError(f"cannot list the models of {self.endpoint} (pass {flag}): {err}") from None

    def chat(self, model: str, messages: list[dict], max_tokens: int, what: str = "") -> dict:
        """A greedy chat completion: {"answer": text, "finish_reason": ...}; `what` names the request in errors."""
        body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0}
        try:
            r = self.client.post("/chat/completions", json=body)
        except httpx.HTTPError as err:
            raise LmforgeError(f"cannot reach {self.endpoint}: {err}") from None
        if r.status_code != 200:
            raise LmforgeError(f"{self.endpoint} answered {r.status_code}{what}: {r.text[:200]}")
        try:
            choice = r.json()["choices"][0]
            return {"answer": choice["message"].get("content") or "", "finish_reason": choice.get("finish_reason")}
        except (KeyError, IndexError, ValueError, TypeError) as err:
            raise LmforgeError(f"{self.endpoint} sent no chat completion: {err}") from None
