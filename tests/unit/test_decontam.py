"""`lmforge decontam`: planted 13-gram overlaps are all found (through case, whitespace and punctuation changes, in
text, JSONL and token shards), and clean items — even ones sharing 12-word spans with the training data — are not."""

import json
import random

import pytest

from lmforge.eval.decontam import NgramIndex, normalize_words
from tests.cli_util import assert_user_error, run_cli
from tests.tiny_lm import tiny_tokenizer

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima",
         "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey",
         "xray", "yankee", "zulu", "river", "stone", "cloud", "maple", "amber", "cedar"]


def _sentence(rng: random.Random, k: int) -> list[str]:
    return [rng.choice(WORDS) for _ in range(k)]


def _garble(words: list[str], rng: random.Random) -> str:
    """The same words as a human copy might show them: other case, extra whitespace, punctuation."""
    out = []
    for w in words:
        w = w.upper() if rng.random() < 0.3 else w.capitalize() if rng.random() < 0.3 else w
        out.append(w + rng.choice(["", ",", ".", ";", " -", "!"]) + rng.choice([" ", "  ", "\n", "\t "]))
    return "".join(out)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(0)
    root = tmp_path_factory.mktemp("decontam")
    docs = [_sentence(rng, 200) for _ in range(12)]  # text file docs 0-3, JSONL 4-7, token shards 8-11
    (root / "web.txt").write_text(" ".join(" ".join(d) for d in docs[:4]))
    with open(root / "books.jsonl", "w") as f:
        for d in docs[4:8]:
            f.write(json.dumps({"text": " ".join(d), "id": 1}) + "\n")
    tok = tiny_tokenizer()
    tok_dir = root / "tok"
    tok.save(tok_dir)
    from lmforge.data.document import Document
    from lmforge.data.pack import PackConfig, pack_documents

    pack_documents([Document(id=str(i), text=" ".join(d)) for i, d in enumerate(docs[8:])], tok, root / "shards",
                   PackConfig(seq_len=32, val_fraction=0.25, shard_rows=7))
    tasks, planted = {}, {}
    for name, n_items in (("arc", 30), ("trivia", 24)):
        items, hits = [], []
        for i in range(n_items):
            kind = i % 3  # 0: planted 13+ words from a training doc; 1: clean random; 2: near miss (12-word span)
            src = docs[rng.randrange(12)]
            start = rng.randrange(0, 150)
            if kind == 0:
                words = _sentence(rng, 5) + src[start:start + rng.randint(13, 30)] + _sentence(rng, 4)
                hits.append(i)
            elif kind == 1:
                words = _sentence(rng, 40)
            else:
                words = src[start:start + 12] + ["zzz"] + src[start + 13:start + 25]
            items.append({"question": _garble(words, rng), "answer": rng.choice(["A", "B"]), "n": i})
        path = root / f"{name}.jsonl"
        path.write_text("".join(json.dumps(x) + "\n" for x in items))
        tasks[name], planted[name] = path, hits
    # a short item (under 13 words) is matched whole; a Chinese one by characters
    short = root / "short.jsonl"
    short.write_text(json.dumps({"q": " ".join(docs[1][10:16]).upper()}) + "\n" + json.dumps({"q": "海上生明月"})
                     + "\n" + json.dumps({"q": "天涯共此时，这句诗不在训练集里面"}) + "\n")
    (root / "poem.txt").write_text("海 上 生 明 月，天涯")
    return root, tasks, planted, short


def test_normalisation_is_case_whitespace_and_punctuation_blind():
    assert normalize_words("The  CAT,\n sat!") == normalize_words("the cat sat") == ["the", "cat", "sat"]
    assert normalize_words("东京 Tokyo") == ["东", "京", "tokyo"]
    index = NgramIndex(3)
    index.add(0, 0, ["a", "b", "c", "d"])
    assert [k for k, _ in index.matches(["x", "a", "b", "c", "y", "b", "c", "d"])] == [(0, 1, 2), (1, 2, 3)]


def test_planted_overlaps_found_with_no_false_positives(corpus, tmp_path):
    root, tasks, planted, short = corpus
    res = run_cli("decontam", "--tasks", str(tasks["arc"]), "--tasks", str(tasks["trivia"]),
                  "--train", str(root / "web.txt"), "--train", str(root / "books.jsonl"),
                  "--train", str(root / "shards"), "--tokenizer", str(root / "tok"), "--fields", "question",
                  "--clean-dir", str(tmp_path / "clean"), "--out", str(tmp_path / "r.json"))
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    for name in tasks:
        row = report["tasks"][name]
        found = [r["index"] for r in row["contaminated_items"]]
        assert found == planted[name]  # recall 1.0 and no false positives (clean and 12-word near misses)
        assert row["contaminated"] == len(planted[name]) and name in res.stdout
        clean = [json.loads(x)["n"] for x in (tmp_path / "clean" / f"{name}.jsonl").read_text().splitlines()]
        assert clean == [i for i in range(row["items"]) if i not in planted[name]]
    res = run_cli("decontam", "--tasks", str(short), "--train", str(root / "web.txt"),
                  "--train", str(root / "poem.txt"), "--out", str(tmp_path / "short.json"))
    assert res.returncode == 0, res.stderr
    rows = json.loads((tmp_path / "short.json").read_text())["tasks"]["short"]["contaminated_items"]
    assert [r["index"] for r in rows] == [0, 1]


def test_user_errors(corpus, tmp_path):
    root, tasks, _, _ = corpus
    assert_user_error(run_cli("decontam", "--tasks", str(tmp_path / "nope.jsonl"), "--train", str(root / "web.txt")),
                      "nope.jsonl", "does not exist")
    assert_user_error(run_cli("decontam", "--tasks", str(tasks["arc"]), "--train", str(root / "shards")),
                      "--tokenizer")
    assert_user_error(run_cli("decontam", "--tasks", str(tasks["arc"]), "--train", str(root / "web.txt"),
                              "--fields", "prompt"), "'prompt'", "absent")
