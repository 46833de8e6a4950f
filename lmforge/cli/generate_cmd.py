"""`lmforge generate`: complete a prompt or answer one chat message, streaming tokens to stdout (or --json)."""

import dataclasses
import json
import sys
import time
from pathlib import Path

import typer

from lmforge.cli import generate_extras as extra
from lmforge.cli import image_input as images
from lmforge.cli import sampling_options as opt
from lmforge.cli.device_option import DEVICE, pick_device, place
from lmforge.cli.safety_cmd import SAFETY, load_rails
from lmforge.cli.stream_summary import stream_summary
from lmforge.common.errors import LmforgeError
from lmforge.common.threads import set_threads


@opt.with_sampling_flags
def generate(
    prompt: str = typer.Argument(None, help="Raw text to continue (omit when using --chat)."),
    chat: str = typer.Option(None, "--chat", help="A user message, wrapped in the model's chat template."),
    system: str = typer.Option(None, "--system", help="System prompt for --chat (default: the template's own)."),
    model: str = opt.MODEL,
    sampling: dict = opt.SAMPLING,
    stop: list[str] = typer.Option(None, "--stop", help="Stop when the text contains this (repeatable); "
                                                        "the stop text is not printed."),
    logprobs: int = typer.Option(None, "--logprobs", help="With --json: each token's log-probability and its N "
                                                          "most likely alternatives (0-20), from the raw model."),
    num_beams: int = typer.Option(1, "--num-beams", help="Beam search with this many beams (deterministic; "
                                                         "no streaming, no sampling flags)."),
    length_penalty: float = typer.Option(1.0, "--length-penalty", help="Beam search: score = logprob sum / "
                                                                       "length^P (>0 favours longer answers)."),
    seed: int = opt.SEED,
    truncate: bool = typer.Option(False, "--truncate", help="Keep the last tokens of a prompt too long for the "
                                                            "context instead of failing."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (text, token counts, timings, "
                                                       "finish_reason, threads) instead of streaming."),
    dtype: str = opt.DTYPE,
    device: str = DEVICE,
    draft: str = extra.DRAFT,
    num_draft: int = extra.NUM_DRAFT,
    rope_scaling: str = extra.ROPE_SCALING,
    rope_factor: float = extra.ROPE_FACTOR,
    original_max_len: int = extra.ORIGINAL_MAX_LEN,
    max_context: int = extra.MAX_CONTEXT,
    safety: str = SAFETY,
    threads: int = opt.THREADS,
    image: list[Path] = images.IMAGE,
) -> None:
    """Generate text with a KV cache; stops at the model's end-of-turn / end-of-text token or a --stop string.

    An encoder-decoder model (a T5 directory) encodes the PROMPT (or the --chat message, without a template) once
    and prints what its decoder writes from decoder_start_token_id (no --draft, --num-beams, --safety or context
    options)."""
    if (prompt is None) == (chat is None):
        raise LmforgeError("give either a PROMPT argument or --chat MESSAGE (exactly one)")
    if system is not None and chat is None:
        raise LmforgeError("--system only applies with --chat")
    if logprobs is not None and not as_json:
        raise LmforgeError("--logprobs needs --json (the log-probabilities are part of the JSON output)")
    if num_beams < 1:
        raise LmforgeError(f"--num-beams must be >= 1, got {num_beams}")
    if image and (draft is not None or num_beams > 1):
        raise LmforgeError("--image runs the one decode loop: it cannot be combined with --draft or --num-beams")
    images.check_files(image)
    params = opt.sampling_params(**sampling, seed=seed, stop=tuple(stop or ()), logprobs=logprobs, truncate=truncate)
    rails = load_rails(safety)
    if rails is not None:
        if draft is not None or num_beams > 1:
            raise LmforgeError("--safety checks the answer as it streams: it cannot be combined with --draft or "
                               "--num-beams")
        verdict = rails.check_input([chat if chat is not None else prompt])  # input rail, before loading
        if verdict.blocked:
            refuse(rails.refusal, verdict.categories, as_json)
            return
        chat, prompt = (verdict.texts[0], prompt) if chat is not None else (chat, verdict.texts[0])
    set_threads(threads)
    where = pick_device(device, dtype)  # torch loads here, after the argument checks
    from lmforge.formats.loader import load
    from lmforge.model.inference import prepare_for_inference  # torch loads here, after the argument checks

    lm = place(load(model, dtype=dtype), where)
    if getattr(lm.model, "is_encoder_decoder", False):  # T5: encoder input -> decoder output
        from lmforge.cli.generate_seq2seq import check_seq2seq_options, run_seq2seq

        check_seq2seq_options(lm, draft, num_beams, rails, (rope_scaling, rope_factor, original_max_len, max_context))
        prepare_for_inference(lm.model)
        params = dataclasses.replace(params, stop_token_ids=lm.stop_token_ids())
        result = run_seq2seq(lm, chat if chat is not None else prompt, params, echo=not as_json)
        if as_json:
            print(json.dumps(result, ensure_ascii=False))
        return
    prepare_for_inference(lm.model)  # fused projections, packed linears, CPU kernels (inference only)
    extra.apply_context_options(lm, rope_scaling, rope_factor, original_max_len, max_context)
    if lm.tokenizer is None:
        raise LmforgeError(f"{model} has no tokenizer (tokenizer.json); cannot encode text")
    vision = images.image_encoder(lm, image)
    if chat is not None:
        messages = ([{"role": "system", "content": system}] if system is not None else [])
        messages.append({"role": "user", "content": images.image_message(chat, image)})
        ids, pictures = images.chat_prompt(lm.tokenizer, vision, messages)
    else:
        ids, pictures = images.raw_prompt(lm.tokenizer, vision, prompt, image)
    params = dataclasses.replace(params, stop_token_ids=lm.stop_token_ids())
    if draft is not None:
        if num_beams > 1:
            raise LmforgeError("--draft (speculative decoding) cannot be combined with --num-beams")
        result = extra.run_speculative(lm, ids, params, draft, num_draft, dtype, echo=not as_json, device=where)
    elif num_beams > 1:
        result = run_beams(lm, ids, params, num_beams, length_penalty, sampling["temperature"])
        if not as_json:
            print(result["text"])
    else:
        result = run_stream(lm, ids, params, echo=not as_json, rail=rails.output_rail() if rails else None,
                            images=pictures)
    if as_json:
        import torch

        print(json.dumps({**result, "threads": torch.get_num_threads()}, ensure_ascii=False))


def refuse(refusal: str, categories: list[str], as_json: bool) -> None:
    """The answer to an input the safety policy blocks (the model does not run)."""
    print(json.dumps({"text": refusal, "finish_reason": "content_filter", "categories": categories},
                     ensure_ascii=False) if as_json else refusal)


def run_stream(lm, ids: list[int], params, echo: bool, rail=None, images=None) -> dict:
    """Stream one answer; the JSON summary (text, counts, timings, finish_reason, logprobs). `rail`: a safety
    OutputRail the text passes through (a blocked answer stops with finish_reason content_filter). `images`: the
    prompt's encoded images (prompt_tokens counts their visual tokens)."""
    from lmforge.generation.generate import generate_stream

    logprobs = []

    def keep_logprobs(event) -> None:
        if event.logprob is not None:
            logprobs.append({"token": lm.tokenizer.decode([event.token]), "id": event.token, "logprob": event.logprob,
                             "top_logprobs": [{"token": lm.tokenizer.decode([i]), "id": i, "logprob": lp}
                                              for i, lp in event.top_logprobs]})

    steps = generate_stream(lm.model, [ids], params, tokenizer=lm.tokenizer, pad_id=lm.config.pad_token_id or 0,
                            images=None if images is None else [images])
    if rail is not None:
        from lmforge.safety.stream import guard_steps

        steps = guard_steps(steps, rail)
    out = stream_summary(steps, len(ids), echo, keep_logprobs)
    if out["finish_reason"] == "content_filter":
        print("lmforge: the safety policy stopped the answer (finish_reason content_filter)", file=sys.stderr)
    if params.logprobs is not None:
        out["logprobs"] = logprobs
    return out


def run_beams(lm, ids: list[int], params, num_beams: int, length_penalty: float, temperature) -> dict:
    """Beam search (no streaming: the best beam is only known at the end)."""
    from lmforge.generation.beam_search import BeamSearchParams, beam_search

    sampling = (temperature not in (None, 0), params.top_k, params.top_p < 1, params.min_p, params.uses_history,
                params.stop, params.logprobs is not None)
    if any(sampling):
        raise LmforgeError("--num-beams searches deterministically: it cannot be combined with --temperature, "
                           "--top-k/--top-p/--min-p, penalties, --stop or --logprobs")
    start = time.perf_counter()
    best = beam_search(lm.model, ids, BeamSearchParams(
        num_beams=num_beams, max_new_tokens=params.max_new_tokens, length_penalty=length_penalty,
        stop_token_ids=params.stop_token_ids, truncate=params.truncate))[0]
    end = time.perf_counter()
    answer = [t for t in best.tokens if t not in params.stop_token_ids]
    text = lm.tokenizer.decode(answer, skip_special_tokens=True)
    return {"text": text, "prompt_tokens": len(ids), "completion_tokens": len(best.tokens),
            "finish_reason": best.finish_reason, "score": best.score, "total_s": round(end - start, 4)}
