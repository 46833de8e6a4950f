"""Who answers a judge's prompts: an lmforge model on the batched engine (greedy, chat template), or any
OpenAI-compatible /chat/completions endpoint at temperature 0. Both are `Judge` callables (judge.py).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from lmforge.common.chat_endpoint import ChatEndpoint
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
    client = ChatEndpoint(endpoint, api_key, timeout, flag="--endpoint")
    model = model or client.first_model("--judge-model")

    def ask(messages: list[dict]) -> str:
        return client.chat(model, messages, max_tokens)["answer"]

    def answer(conversations: list[list[dict]]) -> list[str]:
        with ThreadPoolExecutor(concurrency) as pool:
            return list(pool.map(ask, conversations))

    return answer
