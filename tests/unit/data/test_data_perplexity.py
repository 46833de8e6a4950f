"""The perplexity filter: scores equal exp(mean NLL) computed independently, padding and batching do not change
them, threshold and percentile cuts, the pipeline records the score; and on the real SmolLM2, prose scores
lower than shuffled words and keyboard noise."""

import dataclasses
import json
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmforge.common.errors import ConfigError
from lmforge.data.perplexity_filter import PerplexityConfig, PerplexityFilter, PerplexityScorer
from lmforge.data.pipeline import PipelineRunner
from lmforge.data.pipeline_config import PipelineConfig
from lmforge.data.readers import read_documents
from lmforge.data.sample_corpus import SampleConfig, generate
from lmforge.data.steps import make_config
from lmforge.formats.loader import LM
from lmforge.model import Transformer, get_preset
from lmforge.tokenizer import train_tokenizer

PROSE = (
    "The history of the city begins with a small settlement on the banks of the river. Farmers grew wheat and "
    "barley in the fertile fields, and traders brought salt, cloth and tools from the coast. Over the centuries "
    "the village became a market town, and in the twelfth century the bishop built a stone church that still "
    "stands in the main square. Today the old town is a popular destination for visitors, who come to walk "
    "along the narrow streets, to see the medieval walls and to enjoy the food and wine of the region."
)


@pytest.fixture(scope="module")
def texts():
    docs, _ = generate(SampleConfig(seed=5, good=16, per_language=1, spam=4, blocked_urls=0, exact_duplicates=0,
                                    near_duplicates=0, pii=0))
    return [d["text"] for d in docs]


@pytest.fixture(scope="module")
def tiny(texts):
    tok = train_tokenizer(texts, type="byte-bpe", vocab_size=300)
    torch.manual_seed(1)
    cfg = get_preset("tiny-llama")
    model = Transformer(type(cfg)(**{**cfg.__dict__, "vocab_size": len(tok), "max_seq_len": 512})).eval()
    return model, tok


def reference_perplexity(model, tok, text: str, max_tokens: int) -> float:
    """exp(mean next-token cross-entropy) of one unpadded sequence, straight from torch."""
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    ids = torch.tensor((bos + tok.encode(text, add_special_tokens=False))[:max_tokens])
    with torch.no_grad():
        logits = model(ids[None])[0]
    return math.exp(F.cross_entropy(logits[:-1], ids[1:]).item())


def test_score_is_exp_of_mean_nll(tiny, texts):
    model, tok = tiny
    scorer = PerplexityScorer(model, tok, max_tokens=64, batch_size=4)
    got = scorer.scores(texts)
    want = [reference_perplexity(model, tok, t, 64) for t in texts]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert all(1.0 < s < 10 * len(tok) for s in got)  # a random model is near-uniform over the vocabulary


def test_padding_and_batching_do_not_change_a_score(tiny, texts):
    model, tok = tiny
    short = "A short line of text."
    alone = PerplexityScorer(model, tok, max_tokens=256, batch_size=1).scores([short])[0]
    batched = PerplexityScorer(model, tok, max_tokens=256, batch_size=8).scores([*texts[:7], short])[-1]
    assert len(tok.encode(short)) < len(tok.encode(texts[0]))  # the short text really was padded
    assert batched == pytest.approx(alone, rel=1e-5)
    assert alone == pytest.approx(reference_perplexity(model, tok, short, 256), rel=1e-5)


def test_text_without_a_prediction_is_dropped_as_too_short(tiny):
    model, tok = tiny
    step = PerplexityFilter(PerplexityConfig(prepend_bos=False), model=model, tokenizer=tok)
    removals = step.find_removals(["", "a", "several words of ordinary text"])
    assert removals == {0: "perplexity:too_short", 1: "perplexity:too_short"}
    assert step.annotations()[0] == {"perplexity": None} and step.annotations()[2]["perplexity"] > 1


def test_threshold_and_percentile_cuts(tiny, texts):
    model, tok = tiny
    scores = PerplexityScorer(model, tok, max_tokens=64).scores(texts)
    threshold = float(np.median(scores))
    step = PerplexityFilter(PerplexityConfig(max_perplexity=threshold, max_tokens=64), model=model, tokenizer=tok)
    removals = step.find_removals(texts)
    assert set(removals) == {i for i, s in enumerate(scores) if s > threshold}
    assert set(removals.values()) == {"perplexity:above_threshold"}
    assert step.annotations()[3]["perplexity"] == pytest.approx(scores[3], abs=1e-4)

    step = PerplexityFilter(PerplexityConfig(keep_percentile=75, max_tokens=64), model=model, tokenizer=tok)
    removals = step.find_removals(texts)
    worst = sorted(range(len(texts)), key=lambda i: scores[i])[math.ceil(0.75 * (len(texts) - 1)) + 1:]
    assert set(removals) == set(worst) and 0 < len(removals) <= 0.3 * len(texts)
    assert set(removals.values()) == {"perplexity:above_percentile"}


def test_config_validation_names_the_bad_value():
    with pytest.raises(ConfigError, match="keep_percentile=150"):
        PerplexityConfig(keep_percentile=150)
    with pytest.raises(ConfigError, match="max_perplexity=0.5"):
        PerplexityConfig(max_perplexity=0.5)
    with pytest.raises(ConfigError, match="max_tokens=1"):
        make_config("perplexity", {"max_tokens": 1})
    with pytest.raises(ConfigError, match="both model and tokenizer"):
        PerplexityFilter(model=torch.nn.Linear(2, 2))


def test_pipeline_records_the_score_and_cuts_the_worst(tmp_path, tiny, texts):
    model, tok = tiny
    LM(model=model, tokenizer=tok, source="tiny").save(tmp_path / "tiny")
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    step = {"type": "perplexity", "model": str(tmp_path / "tiny"), "keep_percentile": 50.0, "max_tokens": 64}
    config = PipelineConfig(inputs=(str(src),), output_dir=str(tmp_path / "out"), steps=({"type": "normalize"}, step),
                            keep_removed=True)
    stats = PipelineRunner(config).run()
    kept = list(read_documents(str(tmp_path / "out" / "data")))
    removed = list(read_documents(str(tmp_path / "out" / "removed")))
    assert len(kept) + len(removed) == len(texts) and 0 < len(removed) <= len(texts) // 2 + 1
    assert max(d.meta["perplexity"] for d in kept) <= min(d.meta["perplexity"] for d in removed)
    assert {d.meta["removed_reason"] for d in removed} == {"perplexity:above_percentile"}
    by_name = {s["name"]: s for s in stats["steps"]}
    assert by_name["perplexity"]["removed"] == {"perplexity:above_percentile": len(removed)}
    (tmp_path / "out" / "data" / "part-00000.jsonl").unlink()  # a re-run rebuilds it from the cached scores
    PipelineRunner(config).run()
    again = list(read_documents(str(tmp_path / "out" / "data")))
    assert [(d.id, d.meta["perplexity"]) for d in again] == [(d.id, d.meta["perplexity"]) for d in kept]
    dedup = dataclasses.replace(config, steps=({"type": "normalize"}, {"type": "exact_dedup"}))
    for _ in range(2):  # the stage's cached scores are not reused by the step that replaced the scorer
        PipelineRunner(dedup).run()
        assert not any("perplexity" in d.meta for d in read_documents(str(tmp_path / "out" / "data")))


def _gibberish(rng: random.Random) -> tuple[str, str]:
    words = PROSE.split()
    rng.shuffle(words)
    noise = " ".join("".join(rng.choice("qwertyuiopasdfghjklzxcvbnm;[]") for _ in range(rng.randint(2, 9)))
                     for _ in range(80))
    return " ".join(words), noise


@pytest.mark.slow
def test_smollm2_prefers_prose_to_gibberish():
    from lmforge import load

    lm = load("smollm2-135m")
    shuffled, noise = _gibberish(random.Random(0))
    step = PerplexityFilter(PerplexityConfig(max_perplexity=100.0, batch_size=3), model=lm.model,
                            tokenizer=lm.tokenizer)
    removals = step.find_removals([PROSE, shuffled, noise])
    prose_ppl, shuffled_ppl, noise_ppl = (step.annotations()[i]["perplexity"] for i in range(3))
    # (noise splits into many short, fairly guessable tokens, so per token it need not beat shuffled words)
    assert prose_ppl < 30 and min(shuffled_ppl, noise_ppl) > 10 * prose_ppl, (prose_ppl, shuffled_ppl, noise_ppl)
    assert removals == {1: "perplexity:above_threshold", 2: "perplexity:above_threshold"}
