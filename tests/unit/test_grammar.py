"""Constrained decoding (issue 25 item 3) in the one decode core: a random tiny model, whose free output is never
JSON, produces only documents its JSON schema accepts (checked by `jsonschema`, an independent validator) when each
request carries a grammar, in the batched engine (each request its own matcher, mixed with free requests) and in
`generate`; free rows in the same batch are untouched by the masks of the others."""

import dataclasses
import json

import jsonschema
import pytest
import torch

from lmforge.common.errors import LmforgeError
from lmforge.engine.llm import LLM, EngineConfig
from lmforge.formats.loader import LM
from lmforge.generation.generate import generate
from lmforge.generation.grammar import GrammarError, json_schema_grammar, token_masks
from lmforge.generation.sampling_params import SamplingParams
from lmforge.model import Transformer, get_preset
from tests.tiny_lm import tiny_tokenizer

STOP = [2]
NESTED = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
        "address": {"type": "object", "properties": {"zip": {"type": "integer", "minimum": 10, "maximum": 99},
                                                       "ok": {"type": "boolean"}},
                    "required": ["zip", "ok"], "additionalProperties": False},
    },
    "required": ["name", "age", "tags", "address"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    config = get_preset("tiny-llama", vocab_size=320, eos_token_id=2).replace(init_std=0.2)
    return LM(model=Transformer(config).eval(), tokenizer=tiny_tokenizer(), source="tiny",
              generation_config={"eos_token_id": 2})


def _parses(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None


def test_100_constrained_generations_in_the_batched_engine_all_validate(lm):
    llm = LLM(lm.model, lm.tokenizer, EngineConfig(num_blocks=256, max_num_seqs=32))
    grammar = json_schema_grammar(NESTED)
    prompt = lm.tokenizer.encode("the cat")
    params = [SamplingParams(max_new_tokens=160, temperature=1.0, seed=i, stop_token_ids=STOP, grammar=grammar)
              for i in range(100)]
    outs = llm.generate([prompt] * 100, params)
    for out in outs:
        jsonschema.validate(json.loads(out.text), NESTED)
        assert out.finish_reason == "stop"
    assert len({out.text for out in outs}) > 50  # sampled, not one document repeated
    free = llm.generate([prompt] * 10, [SamplingParams(max_new_tokens=40, temperature=1.0, seed=i,
                                                       stop_token_ids=STOP) for i in range(10)])
    assert not any(isinstance(_parses(out.text), dict) for out in free)  # without the grammar this model writes no JSON
    assert llm.block_manager.num_free == llm.block_manager.num_blocks


def test_json_object_always_parses_and_free_rows_in_the_batch_are_untouched(lm):
    llm = LLM(lm.model, lm.tokenizer, EngineConfig(num_blocks=256, max_num_seqs=32))
    prompt = lm.tokenizer.encode("hello there")
    free = SamplingParams(max_new_tokens=12, temperature=1.0, seed=7, stop_token_ids=STOP)
    alone = llm.generate([prompt], [free])[0].output_ids
    objects = json_schema_grammar({"type": "object", "properties": {"k": {"type": "integer", "minimum": 0,
                                                                          "maximum": 9}},
                                   "required": ["k"], "additionalProperties": False})
    mixed = [SamplingParams(max_new_tokens=60, temperature=1.0, seed=i, stop_token_ids=STOP, grammar=objects)
             for i in range(20)]
    outs = llm.generate([prompt] * 21, [*mixed[:10], free, *mixed[10:]])
    assert outs[10].output_ids == alone
    for out in outs[:10] + outs[11:]:
        assert isinstance(json.loads(out.text), dict)


def test_generate_follows_the_grammar_greedy_and_sampled(lm):
    grammar = json_schema_grammar(NESTED)
    prompts = [lm.tokenizer.encode("a"), lm.tokenizer.encode("the dog and the cat")]  # padded batch
    rows = [SamplingParams(max_new_tokens=160, stop_token_ids=STOP, grammar=grammar),
            SamplingParams(max_new_tokens=160, temperature=1.0, seed=3, stop_token_ids=STOP, grammar=grammar)]
    for ids in generate(lm.model, prompts, rows, tokenizer=lm.tokenizer):
        text = lm.tokenizer.decode([t for t in ids if t not in STOP])
        jsonschema.validate(json.loads(text), NESTED)


def test_bad_grammars_are_refused_at_admission(lm):
    llm = LLM(lm.model, lm.tokenizer, EngineConfig(num_blocks=16))
    bad = json_schema_grammar({"type": "strange"})
    with pytest.raises(LmforgeError, match="strange"):
        llm.add_request([5, 6], SamplingParams(stop_token_ids=STOP, grammar=bad))
    with pytest.raises(LmforgeError, match="stop token"):
        llm.add_request([5, 6], SamplingParams(grammar=json_schema_grammar({"type": "object"})))
    with pytest.raises(LmforgeError, match="grammar"):
        SamplingParams(grammar="")
    assert not llm.has_unfinished()


def test_token_masks_leave_free_rows_whole_and_refuse_a_dead_end(lm):
    from lmforge.generation.grammar import TokenConstraint

    c = TokenConstraint(json_schema_grammar({"const": 7}), lm.tokenizer, 320, STOP)
    allowed = token_masks([None, c], 320)
    assert allowed[0].all() and 0 < int(allowed[1].sum()) < 5  # only tokens spelling a prefix of "7"
    assert token_masks([None, None], 320) is None
    c.advance(lm.tokenizer.encode("7")[0])
    assert c.done
    with pytest.raises(GrammarError):
        c.advance(lm.tokenizer.encode("8")[0])


@pytest.mark.parametrize("draft", ["ngram", "model"])
def test_speculative_decoding_follows_the_grammar_as_plain_decoding_does(lm, draft):
    from lmforge.generation.speculative import speculative_generate

    grammar = json_schema_grammar(NESTED)
    prompt = lm.tokenizer.encode("the cat and the dog")
    greedy = SamplingParams(max_new_tokens=160, stop_token_ids=STOP, grammar=grammar)
    plain = generate(lm.model, [prompt], greedy, tokenizer=lm.tokenizer)[0]
    torch.manual_seed(1)  # a draft model that disagrees with the target: rejections at many positions
    drafter = "ngram" if draft == "ngram" else Transformer(lm.model.config).eval()
    out = speculative_generate(lm.model, prompt, drafter, greedy, num_draft=4, tokenizer=lm.tokenizer)
    assert out.tokens == plain  # greedy: exactly the tokens of plain constrained decoding
    sampled = SamplingParams(max_new_tokens=160, temperature=1.0, seed=4, stop_token_ids=STOP, grammar=grammar)
    for seed in range(3):
        out = speculative_generate(lm.model, prompt, drafter, dataclasses.replace(sampled, seed=seed), num_draft=3,
                                   tokenizer=lm.tokenizer)
        text = lm.tokenizer.decode([t for t in out.tokens if t not in STOP])
        jsonschema.validate(json.loads(text), NESTED)
