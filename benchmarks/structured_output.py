"""Constrained decoding on CPU with SmolLM2's 49k vocabulary: per-token overhead of llguidance, xgrammar and
outlines-core against one unconstrained SmolLM2-135M decode step, all measured in the same run.

Each library replays the same nested-schema JSON document token by token: compute the mask of allowed tokens, apply
it to a [1, V] logits row, consume the token (its vocabulary setup, schema compile and time to the first mask are
timed apart: they are paid per tokenizer, per schema and per request). Then the
serving engine runs one request with and without lmforge's grammar (llguidance) and the median decode step of each
is compared: `engine.overhead` is the share of an unconstrained step that the constraint adds (target <= 0.10).
Libraries that are not installed are reported as such (`pip install -e .[bench]` brings xgrammar and outlines-core).
Prints one JSON line. Usage: python benchmarks/structured_output.py [--tokens 48] [--repeat 3] [--rounds 4]
"""

import argparse
import json
import statistics
import time

import torch

from lmforge import load
from lmforge.engine.llm import LLM, EngineConfig
from lmforge.generation.grammar import TokenConstraint, json_schema_grammar, token_masks, token_vocabulary
from lmforge.generation.logits_process import apply_token_mask
from lmforge.generation.sampling_params import SamplingParams
from lmforge.model.inference import prepare_for_inference

SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string"}, "age": {"type": "integer"},
    "address": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
                "required": ["city", "zip"]},
    "tags": {"type": "array", "items": {"type": "string"}},
    "scores": {"type": "array", "items": {"type": "object", "properties": {"k": {"type": "string"},
                                                                            "v": {"type": "number"}}}}},
    "required": ["name", "age", "address", "tags", "scores"]}
PERSON = {"type": "object", "properties": {  # bounded, so that the engine's constrained runs complete
    "name": {"type": "string", "maxLength": 24}, "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "home": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24},
                                              "country": {"type": "string", "maxLength": 24}},
             "required": ["city", "country"], "additionalProperties": False},
    "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 24}, "maxItems": 3}},
    "required": ["name", "age", "home", "hobbies"], "additionalProperties": False}
DOCUMENT = {"name": "Ada Lovelace", "age": 36, "address": {"city": "London", "zip": "W1 1AA"},
            "tags": ["mathematician", "writer", "analyst"], "scores": [{"k": "engines", "v": 9.5},
                                                                        {"k": "poetry", "v": 7.25}]}


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def replay(new_matcher, step, tokens: list[int], repeat: int) -> dict:
    """Figures of `step(matcher, token, apply)` along the document: first_token_ms (a new matcher and the first
    mask: a schema's time to its first token), per_token_us (mask, apply it to the logits row, advance) and
    mask_us (mask and advance only), each the best over `repeat` passes."""
    first, full, mask_only = float("inf"), float("inf"), float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        matcher = new_matcher()
        step(matcher, tokens[0], True)
        first = min(first, time.perf_counter() - start)
        for apply in (True, False):
            matcher = new_matcher()
            start = time.perf_counter()
            for token in tokens:
                step(matcher, token, apply)
            seconds = (time.perf_counter() - start) / len(tokens)
            full, mask_only = (min(full, seconds), mask_only) if apply else (full, min(mask_only, seconds))
    return {"first_token_ms": first * 1e3, "per_token_us": full * 1e6, "mask_us": mask_only * 1e6}


def bench_llguidance(lm, vocab: int, stops: list[int], tokens: list[int], repeat: int) -> dict:
    import llguidance

    setup, _ = timed(lambda: llguidance.LLTokenizer(lm.tokenizer.backend.to_str(), n_vocab=vocab, eos_token=stops))
    token_vocabulary(lm.tokenizer, vocab, stops)  # lmforge's cached one, used below
    compile_s, grammar = timed(lambda: json_schema_grammar(SCHEMA))
    logits = torch.randn(1, vocab)

    row = torch.empty(1, (vocab + 31) // 32, dtype=torch.int32)

    def step(constraint, token, apply):
        if apply:  # lmforge's path: the batch's bitmask, unpacked to [B, V] booleans, masked_fill
            apply_token_mask(logits, token_masks([constraint], vocab))
        else:  # the library alone: its bitmask row
            constraint.fill(row[0])
        constraint.advance(token)

    figures = replay(lambda: TokenConstraint(grammar, lm.tokenizer, vocab, stops), step, tokens, repeat)
    return {"setup_ms": setup * 1e3, "compile_ms": compile_s * 1e3, **figures}


def bench_xgrammar(lm, vocab: int, stops: list[int], tokens: list[int], repeat: int) -> dict:
    import transformers
    import xgrammar as xgr

    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=lm.tokenizer.backend)
    setup, info = timed(lambda: xgr.TokenizerInfo.from_huggingface(hf, vocab_size=vocab, stop_token_ids=stops))
    compiler = xgr.GrammarCompiler(info, max_threads=1)
    compile_s, compiled = timed(lambda: compiler.compile_json_schema(json.dumps(SCHEMA), any_whitespace=False,
                                                                     separators=(", ", ": ")))
    logits = torch.randn(1, vocab)
    bitmask = xgr.allocate_token_bitmask(1, vocab)

    def step(matcher, token, apply):
        matcher.fill_next_token_bitmask(bitmask)
        if apply:
            xgr.apply_token_bitmask_inplace(logits, bitmask)
        if not matcher.accept_token(token):
            raise RuntimeError("xgrammar refused a token of the document")

    figures = replay(lambda: xgr.GrammarMatcher(compiled), step, tokens, repeat)
    return {"setup_ms": setup * 1e3, "compile_ms": compile_s * 1e3, **figures}


def bench_outlines(lm, vocab: int, stops: list[int], tokens: list[int], repeat: int) -> dict:
    from outlines_core import Guide, Index, Vocabulary
    from outlines_core.json_schema import build_regex_from_schema

    ll = token_vocabulary(lm.tokenizer, vocab, stops)

    def vocabulary():
        entries: dict[bytes, list[int]] = {}
        special = set(lm.tokenizer.all_special_ids)
        for i in range(lm.tokenizer.vocab_size):
            if i not in special and i not in stops:
                entries.setdefault(ll.decode_bytes([i]), []).append(i)
        return Vocabulary(stops[0], entries)

    setup, vocab_obj = timed(vocabulary)
    compile_s, index = timed(lambda: Index(build_regex_from_schema(json.dumps(SCHEMA), r"[ ]?"), vocab_obj))
    logits = torch.randn(1, vocab)
    bitmask = torch.zeros(1, (vocab + 31) // 32, dtype=torch.int32)
    bit = torch.arange(8, dtype=torch.uint8)

    def step(guide, token, apply):
        if token in stops:  # outlines' guide ends with the document (its final state takes no EOS step)
            return
        guide.write_mask_into(bitmask.data_ptr(), bitmask.numel(), bitmask.element_size())
        if apply:  # the same unpacking and masking as lmforge's (outlines-core has no CPU apply of its own)
            allowed = ((bitmask.view(torch.uint8).unsqueeze(-1) >> bit) & 1).view(1, -1)[:, :vocab].bool()
            apply_token_mask(logits, allowed)
        guide.advance(token, return_tokens=False)

    figures = replay(lambda: Guide(index), step, tokens, repeat)
    return {"setup_ms": setup * 1e3, "compile_ms": compile_s * 1e3, **figures}


def engine_steps(llm: LLM, prompt: list[int], params: SamplingParams) -> tuple[list[float], str]:
    """Seconds of each decode step (the prefill step left out) of one request, and its text."""
    llm.add_request(prompt, params)
    steps, text = [], ""
    while llm.has_unfinished():
        seconds, outs = timed(llm.step)
        steps.append(seconds)
        text += "".join(o.text_delta for o in outs)
    return steps[1:], text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=48, help="decode steps of the engine runs")
    parser.add_argument("--repeat", type=int, default=3, help="replays of the document per library (best kept)")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved free / constrained engine runs")
    args = parser.parse_args()
    torch.manual_seed(0)
    lm = load("smollm2-135m")
    prepare_for_inference(lm.model)
    vocab, stops = lm.config.vocab_size, lm.stop_token_ids()
    tokens = lm.tokenizer.encode(json.dumps(DOCUMENT), add_special_tokens=False) + [stops[-1]]

    llm = LLM(lm.model, lm.tokenizer, EngineConfig(num_blocks=64))
    prompt = lm.tokenizer.encode(lm.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Invent a person and describe them as JSON."}], add_generation_prompt=True),
        add_special_tokens=False)
    engine_steps(llm, prompt, SamplingParams(max_new_tokens=4))  # warm-up
    grammar = json_schema_grammar(PERSON)
    free, constrained, texts = [], [], []
    for _ in range(args.rounds):  # interleaved, so that a busy moment of the machine hits both
        free += engine_steps(llm, prompt, SamplingParams(max_new_tokens=args.tokens))[0]
        steps, text = engine_steps(llm, prompt, SamplingParams(max_new_tokens=4 * args.tokens,
                                                               stop_token_ids=stops, grammar=grammar))
        constrained += steps
        texts.append(text)
    step_s = statistics.median(free)
    result = {"vocab": vocab, "document_tokens": len(tokens), "decode_step_ms": step_s * 1e3, "libraries": {}}
    for name, bench in (("llguidance", bench_llguidance), ("xgrammar", bench_xgrammar),
                        ("outlines-core", bench_outlines)):
        try:
            figures = bench(lm, vocab, stops, tokens, args.repeat)
        except ImportError as err:
            result["libraries"][name] = {"error": f"not installed ({err.name})"}
            continue
        figures["overhead_vs_decode_step"] = figures["per_token_us"] / 1e6 / step_s
        result["libraries"][name] = figures
    constrained_s = statistics.median(constrained)
    result["engine"] = {"library": "llguidance", "unconstrained_step_ms": step_s * 1e3,
                        "constrained_step_ms": constrained_s * 1e3, "overhead": constrained_s / step_s - 1,
                        "constrained_steps": len(constrained), "outputs_parse": all(_parses(t) for t in texts)}
    print(json.dumps(result))


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


if __name__ == "__main__":
    main()
