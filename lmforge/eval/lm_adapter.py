"""`lm_eval --model lmforge`: lm-evaluation-harness's model interface on lmforge (Gao et al., the LM Evaluation
Harness). Log-likelihoods come from lmforge.eval.loglikelihood (each distinct context run once, batched by tokens);
generation runs on the serving engine (`LLM`: continuous batching, paged KV cache with prefix caching) with the
task's stop sequences. Tokenization, truncation and stop handling follow lm-eval's `hf` model, so both give the same
numbers on the same weights.

model_args: pretrained (embedded name, HF directory or .gguf; default smollm2-135m), dtype (float32), device (auto),
max_batch_tokens (2048, rows x padded length of one scoring batch), max_length (default: the model's context),
max_gen_toks (256), kv_cache_gb (1.0, the engine's cache), prepare (true: fused kernels for inference), add_bos_token.
Registered in lm-eval's model registry on import; `python -m lmforge.eval.harness` is lm-eval's CLI with it loaded.
"""

from __future__ import annotations

from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, has_bos_prefix, normalize_gen_kwargs, postprocess_generated_text
from tqdm import tqdm

from lmforge.common.device import resolve_device
from lmforge.common.errors import LmforgeError
from lmforge.eval.loglikelihood import score_continuations

SCORE_CHUNK = 512  # requests scored between progress updates (and cache-hook writes)


def _flag(value) -> bool:
    return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")


@register_model("lmforge")
class LmforgeLM(TemplateLM):
    def __init__(self, pretrained: str = "smollm2-135m", dtype: str = "float32", device: str | None = None,
                 max_batch_tokens: int = 2048, max_length: int | None = None, max_gen_toks: int = 256,
                 kv_cache_gb: float = 1.0, prepare: bool | str = True, add_bos_token: bool | str | None = None,
                 batch_size=None, max_batch_size=None, **unused) -> None:
        super().__init__()

        from lmforge.formats.loader import load
        from lmforge.model.inference import prepare_for_inference

        where = resolve_device(device or "auto", "device")
        lm = load(pretrained, dtype=dtype)
        if lm.tokenizer is None:
            raise LmforgeError(f"{pretrained} has no tokenizer (tokenizer.json); lm-eval needs one")
        lm.model.to(where).eval()
        if _flag(prepare):
            prepare_for_inference(lm.model)
        self.lm, self.model, self.tokenizer = lm, lm.model, lm.tokenizer
        self.pretrained = str(pretrained)
        self.max_batch_tokens = int(max_batch_tokens)
        self._max_length = int(max_length) if max_length else lm.config.max_seq_len
        self._max_gen_toks = int(max_gen_toks)
        self.kv_cache_gb = float(kv_cache_gb)
        self.add_bos_token = None if add_bos_token is None else _flag(add_bos_token)
        self._engine = None
        self._chat = False

    # -- what lm-eval reads ------------------------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        eos = self.tokenizer.eos_token_id
        return eos if eos is not None else self.lm.config.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.eot_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def tokenizer_name(self) -> str:
        return self.pretrained.replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return self.tokenizer.chat_template if chat_template not in (False, None) else None

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        self._chat = True  # answers then end at the end-of-turn token too (see _stop_ids)
        return self.tokenizer.apply_chat_template(chat_history, add_generation_prompt=add_generation_prompt)

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, left_truncate_len: int | None = None,
                   **kwargs) -> list[int]:
        """As lm-eval's hf model: the tokenizer's own special tokens unless told, none if the text starts with BOS."""
        if add_special_tokens is None:
            add_special_tokens = self.add_bos_token if self.add_bos_token is not None else True
            if has_bos_prefix(string, self.tokenizer.bos_token):
                add_special_tokens = False
        ids = self.tokenizer.encode(string, add_special_tokens=add_special_tokens)
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def tok_decode(self, tokens, skip_special_tokens: bool = True) -> str:
        tokens = [tokens] if isinstance(tokens, int) else list(tokens)
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    # -- log-likelihood ----------------------------------------------------------------------------------------
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """requests: (cache key, context ids, continuation ids); (sum of logprobs, all tokens greedy) each."""
        order = sorted(range(len(requests)), key=lambda i: (-len(requests[i][1]), tuple(requests[i][1])))
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        with tqdm(total=len(requests), disable=disable_tqdm, desc="lmforge loglikelihood") as bar:
            for start in range(0, len(order), SCORE_CHUNK):  # same contexts sit together: a chunk keeps them
                chunk = order[start:start + SCORE_CHUNK]
                scores = score_continuations(self.model, [(requests[i][1], requests[i][2]) for i in chunk],
                                             max_batch_tokens=self.max_batch_tokens,
                                             max_len=self.max_length)
                for i, score in zip(chunk, scores, strict=True):
                    results[i] = (score.total, score.is_greedy)
                    if requests[i][0] is not None:
                        self.cache_hook.add_partial("loglikelihood", requests[i][0], results[i])
                bar.update(len(chunk))
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Whole-text log-likelihood over disjoint windows of max_length tokens (lm-eval's perplexity tasks)."""
        windows, owner = [], []
        for n, (string,) in enumerate(req.args for req in requests):
            for ctx, cont in map(lm_utils.make_disjoint_window, lm_utils.get_rolling_token_windows(
                    token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                windows.append((None, ctx, cont))
                owner.append(n)
        totals = [0.0] * len(requests)
        for n, (logprob, _) in zip(owner, self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm),
                                   strict=True):
            totals[n] += logprob
        for req, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # -- generation --------------------------------------------------------------------------------------------
    def _llm(self):
        if self._engine is None:
            from lmforge.engine.llm import LLM, EngineConfig

            self._engine = LLM(self.model, self.tokenizer, EngineConfig(kv_cache_gb=self.kv_cache_gb))
        return self._engine

    def _stop_ids(self, until: list[str]) -> list[int]:
        """The model's EOS id(s), as transformers' generate stops on them, and the id of each stop string that is one
        special token (the engine matches stop strings on text without special tokens). With a chat template, also
        the end-of-turn token (<|im_end|>): a fine-tuned export whose generation config names only <|endoftext|>
        would otherwise run past its answer into the next turn (lm-eval's hf model does)."""
        eos = self.lm.generation_config.get("eos_token_id")
        ids = {*(eos if isinstance(eos, list) else [eos]), self.lm.config.eos_token_id}
        if self._chat:
            ids.update(self.lm.stop_token_ids())
        for text in until:
            encoded = self.tokenizer.encode(text, add_special_tokens=False) if text else []
            if len(encoded) == 1 and not self.tokenizer.decode(encoded, skip_special_tokens=True):
                ids.add(encoded[0])
        return sorted(i for i in ids if i is not None)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy (or sampled, when the task asks) continuations on the engine, cut at the task's stop sequences
        and the EOS text, as lm-eval's hf model cuts them."""
        from lmforge.generation.sampling_params import SamplingParams

        eos = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        prompts, params, stops = [], [], []
        for context, gen_kwargs in (req.args for req in requests):
            kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_gen = kwargs.pop("max_gen_toks")
            ids = self.tok_encode(context, left_truncate_len=self.max_length - max_gen)
            sampled = kwargs.get("do_sample") and kwargs.get("temperature", 1.0) > 0
            params.append(SamplingParams(
                max_new_tokens=max_gen, temperature=float(kwargs.get("temperature", 1.0)) if sampled else 0.0,
                top_p=float(kwargs.get("top_p", 1.0)) if sampled else 1.0,
                top_k=int(kwargs.get("top_k", 0) or 0) if sampled else 0,
                stop=[s for s in until if s], stop_token_ids=self._stop_ids(until)))
            prompts.append(ids)
            stops.append(until)
        outputs = self._llm().generate(prompts, params) if prompts else []
        texts = []
        for req, out, until in zip(requests, outputs, stops, strict=True):
            text = postprocess_generated_text(self.tok_decode(out.output_ids), until, None)
            texts.append(text)
            self.cache_hook.add_partial("generate_until", req.args, text)
        return texts
