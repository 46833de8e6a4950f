"""Who answers a judge's prompts: an lmforge model on the batched engine (greedy, chat template), or any
OpenAI-compatible /chat/completions endpoint at temperature 0. Both are `Judge` callables (judge.py).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from lmforge.common.errors import LmforgeError
from lmforge.eval.judge import Judge


def engine_judge(lm, max_tokens: int = 256, max_num_seqs: int = 16) -> Judge:
    """Greedy answers from an lmforge LM (formats.loader.LM) on the serving engine, all prompts batched together."""
    from lmforge.engine.llm import LLM, EngineConfig
    from lmforge.generation.sampling_params import SamplingParams

    if lm.tokenizer is None:
        raise LmforgeError(f"{lm.source} has no tokenizer; a judge model needs one")
    engine = LLM(lm.model, lm.tokenizer, EngineConfig(max_num_seqs=max_num_seqs))
    params = SamplingParams(max_new_tokens=max_tokens, temperature=0.0, stop_token_ids=lm.stop_token_ids(),
                            truncate=True)

    def answer(conversations: list[list[dict]]) -> list[str]:
        prompts = [lm.tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=True)
                   for c in conversations]
        outputs = engine.generate(prompts, params)
        return [lm.tokenizer.decode(o.output_ids, skip_special_tokens=True) for o in outputs]

    return answer


def endpoint_judge(endpoint: str, api_key: str | None = None, model: str | None = None, max_tokens: int = 256,
                   concurrency: int = 8, timeout: float = 300.0) -> Judge:
    """Answers from an OpenAI-compatible server (base URL such as http://127.0.0.1:8000/v1), temperature 0."""
    import httpx

    if not endpoint.startswith(("http://", "https://")):
        raise LmforgeError(f"--endpoint must be an http(s) URL such as http://127.0.0.1:8000/v1, got {endpoint!r}")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    client = httpx.Client(base_url=endpoint.rstrip("/"), headers=headers, timeout=timeout)
    if model is None:
        try:
            r = client.get("/models")
            r.raise_for_status()
            model = r.json()["data"][0]["id"]
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as err:
            raise LmforgeError(f"cannot list the models of {endpoint} (pass --judge-model): {err}") from None

    def ask(messages: list[dict]) -> str:
        body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0}
        try:
            r = client.post("/chat/completions", json=body)
        except httpx.HTTPError as err:
            raise LmforgeError(f"cannot reach {endpoint}: {err}") from None
        if r.status_code != 200:
            raise LmforgeError(f"{endpoint} answered {r.status_code}: {r.text[:200]}")
        try:
            return r.json()["choices"][0]["message"].get("content") or ""
        except (KeyError, IndexError, ValueError) as err:
            raise LmforgeError(f"{endpoint} sent no chat completion: {err}") from None

    def answer(conversations: list[list[dict]]) -> list[str]:
        with ThreadPoolExecutor(concurrency) as pool:
            return list(pool.map(ask, conversations))

    return answer
