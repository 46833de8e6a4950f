"""`lmforge classify train | predict` (issue 30, item 4): a sequence classifier on a decoder (the small pretrained
Llama of the tests) and a token classifier (NER) on a BERT encoder, fine-tuned on the project-written labelled
sets, reach a stated held-out accuracy / entity F1; their OUT/hf loads in transformers' classes; predict labels
texts and tags entities; a SIGKILLed run resumes bitwise; user mistakes are one-line errors. The commands run
through the `lmforge` entry point in this process (tests/inprocess_cli.py), the resume test in subprocesses."""

import json

import pytest
import torch

from lmforge.train.post.classify_data import entity_f1, entity_spans
from tests.cli_util import assert_user_error
from tests.inprocess_cli import run_main
from tests.kill_resume import kill_resume_and_compare, lmforge
from tests.pretrained_tiny import pretrained_tiny_dir

COMMON = ("--threads", "1", "--no-progress", "--checkpoint-every", "1000")


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    """A random tiny BERT encoder (lmforge's tiny-bert preset) with the tests' byte-level BPE tokenizer."""
    from lmforge.formats.loader import LM
    from lmforge.model import Transformer, get_preset
    from tests.tiny_lm import tiny_tokenizer

    torch.manual_seed(0)
    model = Transformer(get_preset("tiny-bert", vocab_size=320, max_seq_len=64, pad_token_id=0)).eval()
    directory = tmp_path_factory.mktemp("bert") / "hf"
    LM(model=model, tokenizer=tiny_tokenizer(), source="tiny-bert").save(directory)
    return directory


def test_entity_spans_and_f1_follow_conlleval():
    assert entity_spans(["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "I-ORG"]) == {("PER", 0, 2), ("LOC", 3, 5),
                                                                                 ("ORG", 5, 6)}
    gold, pred = [["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "O", "O", "B-LOC"]]
    assert entity_f1(gold, pred) == {"precision": 0.5, "recall": 0.5, "f1": 0.5}


def test_sequence_classifier_on_a_decoder(tmp_path, capsys):
    out = tmp_path / "seq"
    result = run_main(capsys, "classify", "train", "--model", str(pretrained_tiny_dir()), "--task", "sequence", "--out",
                     str(out), "--max-steps", "120", "--batch-size", "16", "--lr", "1e-3", "--eval-every", "120",
                     "--train-examples", "1500", *COMMON)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    print(f"sequence (review sentiment with negation), decoder: held-out accuracy {summary['accuracy_before']:.3f} -> "
          f"{summary['accuracy_after']:.3f} on {summary['heldout_examples']} examples in {summary['elapsed_s']:.0f} s")
    assert summary["accuracy_after"] >= 0.9 and summary["accuracy_before"] < 0.75
    import transformers

    back = transformers.AutoModelForSequenceClassification.from_pretrained(out / "hf", dtype=torch.float32)
    assert type(back).__name__ == "LlamaForSequenceClassification"
    assert back.config.id2label == {0: "negative", 1: "positive"}
    predicted = run_main(capsys, "classify", "predict", str(out / "hf"), "--text", "the film was really great .",
                         "--text", "the soup was not good .")
    assert predicted.returncode == 0, predicted.stderr
    rows = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert [r["label"] for r in rows] == ["positive", "negative"] and all(0.5 < r["score"] <= 1 for r in rows)


def test_token_classifier_on_an_encoder(tmp_path, tiny_bert_dir, capsys):
    out = tmp_path / "ner"
    result = run_main(capsys, "classify", "train", "--model", str(tiny_bert_dir), "--task", "token", "--out", str(out),
                     "--max-steps", "300", "--batch-size", "16", "--lr", "3e-3", "--eval-every", "300",
                     "--train-examples", "1500", *COMMON)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    print(f"token (NER, BIO PER/LOC/ORG), tiny BERT from random init: held-out entity F1 {summary['f1_before']:.3f} "
          f"-> {summary['f1_after']:.3f} on {summary['heldout_examples']} sentences in {summary['elapsed_s']:.0f} s")
    assert summary["f1_after"] >= 0.9 and summary["f1_before"] < 0.3
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text(json.dumps({"tokens": ["Olga", "works", "for", "Blue", "River", "Bank", "in", "Cape", "Town",
                                             "."], "id": 7}) + "\n")
    predicted = run_main(capsys, "classify", "predict", str(out / "hf"), "--input", str(inputs), "--out",
                         str(tmp_path / "pred.jsonl"))
    assert predicted.returncode == 0, predicted.stderr
    row = json.loads((tmp_path / "pred.jsonl").read_text())
    assert row["id"] == 7 and len(row["tags"]) == 10
    assert {(e["type"], e["text"]) for e in row["entities"]} == {("PER", "Olga"), ("ORG", "Blue River Bank"),
                                                                 ("LOC", "Cape Town")}


@pytest.mark.slow  # three CLI processes: ~30 s on a quiet machine
def test_classify_sigkill_then_resume_is_bitwise_exact(tmp_path, tiny_bert_dir):
    ref, steps = tmp_path / "ref", 12
    kill_resume_and_compare(lmforge("classify", "train", "--model", tiny_bert_dir, "--task", "token", "--out", ref,
                                    "--max-steps", steps, "--batch-size", "8", "--grad-accum", "2", "--eval-every", 4,
                                    "--checkpoint-every", 2, "--train-examples", 200, "--heldout-examples", 20,
                                    "--threads", "1", "--no-progress", "--no-export-hf"),
                            ref, tmp_path / "killed", steps, (3, steps - 3))


def test_user_data_and_mistakes(tmp_path, tiny_bert_dir, capsys):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": f"item {i} is {'red' if i % 2 else 'blue'}",
                                        "label": "odd" if i % 2 else "even"}) + "\n" for i in range(40)))
    run = run_main(capsys, "classify", "train", "--model", str(tiny_bert_dir), "--data", str(data), "--out",
                   str(tmp_path / "user"), "--max-steps", "3", "--batch-size", "8", *COMMON)
    assert run.returncode == 0, run.stderr
    summary = json.loads((tmp_path / "user" / "summary.json").read_text())
    assert summary["labels"] == ["even", "odd"] and summary["train_examples"] + summary["heldout_examples"] == 40
    assert "held-out accuracy" in run.stdout
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b"}\n')
    (tmp_path / "one.jsonl").write_text('{"text": "a", "label": "x"}\n' * 5)
    model = str(tiny_bert_dir)
    cases = [
        (["train", "--model", model, "--task", "ner"], "task='ner' is not allowed"),
        (["train", "--model", model, "--data", str(tmp_path / "nope.jsonl")], "does not exist"),
        (["train", "--model", model, "--data", str(tmp_path / "bad.jsonl")], "bad.jsonl:2 needs a \"label\""),
        (["train", "--model", model, "--data", str(tmp_path / "one.jsonl")], "a single label"),
        (["train", "--model", model, "--data", str(data), "--task", "token"], "needs \"tokens\""),
        (["train", "--model", str(tmp_path / "user" / "hf"), "--task", "token"], "is a sequence classifier"),
        (["predict", model, "--text", "hello"], "is not a classifier directory"),
        (["predict", str(tmp_path / "user" / "hf")], "nothing to predict"),
        (["train", "--model", model, "--heldout", str(data)], "--heldout goes with --data"),
    ]
    for args, message in cases:
        extra = ("--out", tmp_path / "x") if args[0] == "train" else ()
        assert_user_error(run_main(capsys, "classify", *args, *extra), message)
    for sub in ("train", "predict"):
        help_text = run_main(capsys, "classify", sub, "--help")
        assert help_text.returncode == 0, help_text.stderr
        assert ("--model" if sub == "train" else "MODEL_DIR") in help_text.stdout and "--out" in help_text.stdout
