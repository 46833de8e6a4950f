"""Stop strings across token boundaries, incremental detokenization, and generate() with text, stops and truncation."""

import random

import pytest
import torch

from lmforge.common.errors import LmforgeError
from lmforge.generation.generate import generate, generate_stream
from lmforge.generation.sampling_params import SamplingParams
from lmforge.generation.stop import IncrementalDetokenizer, StopStringMatcher, TextStream
from tests.tiny_lm import tiny_lm, tiny_tokenizer

TEXT = "the cat sat on the mat END OF ANSWER café 東京 🙂 hello world"


def test_incremental_detokenizer_equals_full_decode_and_waits_for_whole_characters():
    tok = tiny_tokenizer()
    ids = tok.encode(TEXT)
    assert any(tok.decode([i]).endswith("\ufffd") for i in ids)  # multi-byte characters really are split
    detok = IncrementalDetokenizer(tok)
    pieces = [detok.push(i) for i in ids]
    assert "".join(pieces) + detok.flush() == tok.decode(ids) == TEXT
    assert not any("\ufffd" in p for p in pieces)


def test_stop_string_split_over_tokens_is_honoured_and_never_streamed():
    tok = tiny_tokenizer()
    ids = tok.encode(TEXT)
    boundaries = {len(tok.decode(ids[:n])) for n in range(len(ids) + 1)}
    for stop in ("END OF ANSWER", "at END", "東京", "🙂 h", "sat on"):
        start = TEXT.index(stop)
        assert any(start < b < start + len(stop) for b in boundaries), stop  # the stop spans a token boundary
        stream = TextStream(tok, stops=[stop, "never seen"])
        emitted, stopped = "", False
        for i in ids:
            piece, stopped = stream.push(i)
            emitted += piece
            assert TEXT[:start].startswith(emitted)  # nothing is shown that the stop string later removes
            if stopped:
                break
        assert stopped and emitted + stream.finish() == TEXT[:start]


def test_stop_matcher_releases_held_text_once_disambiguated_and_at_the_end():
    rng = random.Random(0)
    for _ in range(200):
        text = "".join(rng.choice("ab#") for _ in range(30))
        stops = ["##a", "b#b#"]
        matcher, out, stopped = StopStringMatcher(stops), "", False
        cuts = sorted(rng.sample(range(1, 30), 8))
        for lo, hi in zip([0, *cuts], [*cuts, 30], strict=True):
            piece, stopped = matcher.push(text[lo:hi])
            out += piece
            if stopped:
                break
        out += matcher.flush()
        hits = [i for i in (text.find(s) for s in stops) if i >= 0]
        assert out == (text[:min(hits)] if hits else text)


def test_generate_stops_on_a_string_and_returns_the_text_before_it():
    lm = tiny_lm()
    prompt = lm.tokenizer.encode("hello")
    free = list(generate_stream(lm.model, [prompt], SamplingParams(max_new_tokens=24), tokenizer=lm.tokenizer))
    text = "".join(step[0].text for step in free)
    assert free[-1][0].finish_reason == "length" and text == lm.tokenizer.decode([s[0].token for s in free])
    stop = text[5:8]
    cut = text.index(stop)
    stopped = list(generate_stream(lm.model, [prompt], SamplingParams(max_new_tokens=24, stop=stop),
                                   tokenizer=lm.tokenizer))
    assert "".join(step[0].text for step in stopped) == text[:cut]
    assert stopped[-1][0].finish_reason == "stop" and len(stopped) < len(free)
    with pytest.raises(LmforgeError, match="tokenizer"):
        generate(lm.model, [prompt], SamplingParams(stop="x"))


def test_rows_with_different_params_match_running_alone():
    lm = tiny_lm()
    prompts = [[5, 6, 7], [9, 9, 9, 9, 9], [42]]
    params = [SamplingParams(max_new_tokens=6), SamplingParams(max_new_tokens=10, repetition_penalty=1.5),
              SamplingParams(max_new_tokens=8, temperature=1.0, seed=3, top_k=20)]
    together = generate(lm.model, prompts, params)
    alone = [generate(lm.model, [p], sp)[0] for p, sp in zip(prompts, params, strict=True)]
    assert together == alone and [len(t) for t in together] == [6, 10, 8]


def test_repetition_penalty_changes_greedy_output_as_the_reference_does(tmp_path):
    from tests.hf_models import tiny_hf_model

    ref = tiny_hf_model("llama", tie=False)
    ref.save_pretrained(tmp_path)
    from lmforge.formats.loader import load

    model = load(tmp_path).model
    prompt = torch.randint(0, 256, (1, 6))
    with torch.no_grad():
        expected = ref.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=15, do_sample=False,
                                repetition_penalty=1.8, pad_token_id=0, eos_token_id=None)[0, 6:].tolist()
    got = generate(model, [prompt[0].tolist()], SamplingParams(max_new_tokens=15, repetition_penalty=1.8))[0]
    assert got == expected


def test_prompt_too_long_errors_or_keeps_its_last_tokens():
    lm = tiny_lm()
    context = lm.config.max_seq_len
    prompt = list(range(3, 3 + 100)) * 3  # 300 tokens > 256
    with pytest.raises(LmforgeError, match="context of 256 .*truncate"):
        generate(lm.model, [prompt], SamplingParams(max_new_tokens=6))
    kept = prompt[-(context - 6):]
    assert generate(lm.model, [prompt], SamplingParams(max_new_tokens=6, truncate=True)) == \
        generate(lm.model, [kept], SamplingParams(max_new_tokens=6))
