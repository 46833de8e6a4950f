"""The fastText-style classifier and the quality_classifier / toxicity steps: held-out accuracy on the sample
corpus's ground truth (and chance level on shuffled labels, so the accuracy is earned), precision and recall on
toxicity templates never seen in training, save/load, the steps in a pipeline with their audit examples, and the
CLI with its errors."""

import json
import random
import zlib

import pytest

from lmforge.common.errors import ConfigError, LmforgeError
from lmforge.data.document import Document
from lmforge.data.labelled_samples import quality_samples, toxicity_samples
from lmforge.data.ngram_classifier import NgramClassifier, NgramClassifierConfig, evaluate, features, train_classifier
from lmforge.data.pipeline import PipelineRunner
from lmforge.data.pipeline_config import load_pipeline
from lmforge.data.sample_corpus import SampleConfig, generate, write_sample
from lmforge.data.steps import build_step
from tests.cli_util import assert_user_error, run_cli

FAST = NgramClassifierConfig(buckets=1 << 16, dim=16, epochs=6)


def _split(rows, holdout=0.25, seed=0):
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    cut = int(len(rows) * (1 - holdout))
    return rows[:cut], rows[cut:]


@pytest.fixture(scope="module")
def quality_rows():
    return quality_samples(*generate(SampleConfig(seed=3, good=120, spam=48, per_language=0, blocked_urls=0,
                                                  exact_duplicates=0, near_duplicates=0, pii=0)))


@pytest.fixture(scope="module")
def toxicity_model(tmp_path_factory):
    rows = toxicity_samples(400)
    model = train_classifier([r["text"] for r in rows], [r["label"] for r in rows], FAST)
    return model.save(tmp_path_factory.mktemp("tox") / "toxicity")


def test_features_are_stable_hashed_word_ngrams():
    cfg = NgramClassifierConfig(buckets=1000, ngrams=3)
    h = {w: zlib.crc32(w.encode()) for w in ("the", "cat", "sat")}
    mix = lambda a, b: (a * 1_000_003 ^ b) % 2**64  # noqa: E731
    grams = [h["the"], h["cat"], h["sat"], mix(h["the"], h["cat"]), mix(h["cat"], h["sat"]),
             mix(mix(h["the"], h["cat"]), h["sat"])]
    assert features("The cat, sat!", cfg).tolist() == [g % 1000 for g in grams]


def test_quality_classifier_heldout_accuracy(quality_rows):
    """Good prose vs spam / boilerplate from the sample corpus's ground truth, on pages kept out of training;
    a constant answer would score the majority share (0.69 here), far below the bar."""
    train, test = _split(quality_rows)
    majority = max(sum(r["label"] == y for r in test) for y in ("good", "bad")) / len(test)
    model = train_classifier([r["text"] for r in train], [r["label"] for r in train], FAST)
    result = evaluate(model, [r["text"] for r in test], [r["label"] for r in test], "good")
    assert result["accuracy"] >= 0.9 > majority + 0.15, (result, majority)
    scores = model.score([r["text"] for r in test], "good")
    good = [s for s, r in zip(scores, test, strict=True) if r["label"] == "good"]
    bad = [s for s, r in zip(scores, test, strict=True) if r["label"] == "bad"]
    assert min(good) > max(bad)  # the score ranks every good page above every spam page


def test_toxicity_on_unseen_templates(toxicity_model):
    rows = toxicity_samples(200, heldout=True)
    train_texts = {r["text"] for r in toxicity_samples(400)}
    assert not train_texts & {r["text"] for r in rows}
    result = evaluate(NgramClassifier.load(toxicity_model), [r["text"] for r in rows], [r["label"] for r in rows],
                      "toxic")
    assert result["precision"] >= 0.9 and result["recall"] >= 0.6, result


def test_save_load_roundtrip_and_bad_directory(toxicity_model, tmp_path):
    model = NgramClassifier.load(toxicity_model)
    texts = ["You worthless clown.", "Thanks for explaining the recipe."]
    again = NgramClassifier.load(model.save(tmp_path / "copy"))
    assert again.labels == ["clean", "toxic"] and again.predict_proba(texts).equal(model.predict_proba(texts))
    with pytest.raises(LmforgeError, match="not a classifier directory"):
        NgramClassifier.load(tmp_path)
    hostile = tmp_path / "hostile"
    model.save(hostile)
    meta = json.loads((hostile / "classifier.json").read_text())
    meta["config"].update(buckets=1 << 24, dim=1024)  # 64 GiB if it were allocated
    (hostile / "classifier.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="buckets x dim"):
        NgramClassifier.load(hostile)


def test_steps_need_a_model_and_a_known_label(toxicity_model):
    with pytest.raises(ConfigError, match="needs model"):
        build_step({"type": "quality_classifier"})
    step = build_step({"type": "toxicity", "model": str(toxicity_model), "label": "rude"})[1]
    with pytest.raises(ConfigError, match="label='rude'"):
        step.apply(Document("a", "hello there"))


def test_pipeline_with_classifier_steps_and_audit_examples(quality_rows, toxicity_model, tmp_path):
    write_sample(tmp_path / "s", SampleConfig(seed=4, good=30, spam=12, per_language=2, blocked_urls=0,
                                              exact_duplicates=0, near_duplicates=0, pii=0, shards=2))
    train, _ = _split(quality_rows)
    train_classifier([r["text"] for r in train], [r["label"] for r in train], FAST).save(tmp_path / "s" / "q")
    (tmp_path / "s" / "p.toml").write_text(
        '[input]\npaths = ["corpus"]\n[output]\ndir = "out"\n'
        '[[steps]]\ntype = "quality_classifier"\nmodel = "q"\n'  # relative to the TOML file
        f'[[steps]]\ntype = "toxicity"\nmodel = "{toxicity_model}"\n')
    stats = PipelineRunner(load_pipeline(tmp_path / "s" / "p.toml")).run()
    truth = {t["id"]: t["kind"] for t in map(json.loads, (tmp_path / "s" / "ground_truth.jsonl").open())}
    shards = sorted((tmp_path / "s" / "out" / "data").glob("part-*.jsonl"))
    kept = [json.loads(line) for f in shards for line in f.open()]
    kinds = {truth[r["id"]] for r in kept}
    assert "good" in kinds and not any(k.startswith("spam") for k in kinds)
    assert all(0.5 <= r["quality_score"] <= 1 and "toxicity" in r for r in kept)
    quality = stats["steps"][0]
    assert quality["removed"]["quality_classifier:low_score"] >= 12
    examples = quality["examples"]["quality_classifier:low_score"]
    assert len(examples) == 3 and all(truth[e["id"]] != "good" for e in examples)
    report = (tmp_path / "s" / "out" / "report.md").read_text()
    assert f"quality_classifier:low_score, e.g. `{examples[0]['id']}`" in report


def test_cli_train_and_eval(tmp_path):
    rows = toxicity_samples(200)
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = run_cli("data", "quality", "train", str(tmp_path / "t.jsonl"), "--out", str(tmp_path / "m"),
                  "--positive", "toxic", "--epochs", "4")
    assert out.returncode == 0, out.stderr
    assert "held-out (40 records)" in out.stdout and (tmp_path / "m" / "eval.json").is_file()
    result = run_cli("data", "quality", "eval", str(tmp_path / "m"), str(tmp_path / "t.jsonl"), "--positive", "toxic")
    assert json.loads(result.stdout)["documents"] == 200
    (tmp_path / "one.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b"}\n')
    assert_user_error(run_cli("data", "quality", "train", str(tmp_path / "one.jsonl"), "--out", str(tmp_path / "n")),
                      "has no 'label' field")


def test_seo_pages_pass_the_rules_and_the_classifier_catches_them():
    """The reason for a model-based step: promotional prose keeps every rule filter happy, a classifier trained
    on labelled pages of another seed removes it and keeps the good prose."""
    small = dict(per_language=0, spam=12, blocked_urls=0, exact_duplicates=0, near_duplicates=0, pii=0)
    records, truth = generate(SampleConfig(seed=7, good=60, seo=30, **small))
    rules = [build_step({"type": t})[1] for t in ("gopher_quality", "gopher_repetition", "c4", "fineweb")]

    def passes(text):
        doc = Document("d", text)
        for step in rules:
            doc = step.apply(doc)
            if not isinstance(doc, Document):
                return False
        return True

    seo = [r["text"] for r, t in zip(records, truth, strict=True) if t["kind"] == "spam:seo"]
    good = [r["text"] for r, t in zip(records, truth, strict=True) if t["kind"] == "good"]
    assert sum(map(passes, seo)) >= 0.8 * len(seo)
    labelled = quality_samples(*generate(SampleConfig(seed=8, good=80, seo=30, **small)))
    model = train_classifier([r["text"] for r in labelled], [r["label"] for r in labelled], FAST)
    assert sum(s < 0.5 for s in model.score(seo, "good")) >= 0.9 * len(seo)
    assert sum(s >= 0.5 for s in model.score(good, "good")) >= 0.95 * len(good)
