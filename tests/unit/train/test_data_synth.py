"""`lmforge data synth`: Self-Instruct generation filtered by exact and near-duplicate (MinHash) checks and a
verifier, each drop counted by its reason — on a scripted "model" whose every candidate's fate is known — and the
command end to end on a tiny model through the engine, with a user verifier that raises on some samples."""

import json

from lmforge.train.post.rewards import parse_reward
from lmforge.train.post.synth import DuplicateFilter, synthesize
from tests.cli_util import assert_user_error
from tests.inprocess_cli import run_main
from tests.tiny_lm import tiny_lm

FRANCE = ("Give the name of the capital city of France as one JSON object with the single key city and no other "
          "keys, text or explanation around it.")
SEEDS = [{"instruction": FRANCE, "output": ""},
         {"instruction": "List three colors of the rainbow as a JSON array.", "output": ""}]


def test_synthesize_drops_duplicates_and_failed_verifications_by_reason():
    script = [  # (the task the model writes, its answer)
        (FRANCE, '{"city": "Paris"}'),  # exact: a seed
        (FRANCE.upper().replace(",", ""), '{"city": "Paris"}'),  # exact once normalized
        (FRANCE.replace("France", "Spain"), '{"city": "Madrid"}'),  # near: one word of 25 changed (Jaccard 0.85)
        ("Name two planets as a JSON array of strings.", '["Mars", "Venus"]'),  # kept
        ("Write the number seven as a JSON number.", "seven"),  # verifier: not JSON
        ("", "{}"),  # empty task
        ("Name two planets as a JSON array of strings.", '["Mars", "Venus"]'),  # exact: a kept one
        ("Spell the word dog backwards inside a JSON string value.", '"god"'),  # kept
    ]
    answers, tasks = dict(script), iter(script)

    def generate(conversations):
        asks = conversations[0][0]["content"].startswith("Here are some example tasks")
        return [next(tasks)[0] if asks else answers[c[0]["content"]] for c in conversations]

    result = synthesize(generate, SEEDS, n=5, verifier=parse_reward("json"), batch_size=4, max_tries=8)
    assert [r["instruction"] for r in result.kept] == [script[3][0], script[7][0]]
    assert result.generated == 8
    assert dict(result.dropped) == {"exact_duplicate": 3, "near_duplicate": 1, "verifier": 1, "empty": 1}


def test_near_duplicate_filter_by_minhash():
    dup = DuplicateFilter(max_jaccard=0.7)
    poem = "Write a short poem about the {} sea at night with exactly four lines, a rhyme and a title in capitals."
    dup.add(poem.format("calm"))
    assert dup.reason(poem.format("stormy")) == "near_duplicate"
    assert dup.reason("Translate the word apple into French and German.") is None


def test_synth_cli_on_a_tiny_model(tmp_path, capsys):
    tiny_lm().save(tmp_path / "tiny")
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps(s) + "\n" for s in SEEDS))
    check = tmp_path / "check.py"
    check.write_text("def fn(prompts, completions, **kw):\n"
                     "    return [1 / (len(c) % 2) for c in completions]  # raises on even lengths\n")
    args = ("data", "synth", "--model", tmp_path / "tiny", "--seeds", seeds, "--n", "3", "--max-tries", "8",
            "--batch-size", "4", "--max-new-tokens", "6", "--verify", f"{check}:fn", "-q")
    result = run_main(capsys, *args, "--out", tmp_path / "out.jsonl")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out.report.json").read_text())
    kept = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert report["kept"] == len(kept) <= 3 and report["generated"] <= 8
    assert report["kept"] + sum(report["dropped"].values()) == report["generated"]
    assert all(len(r["output"]) % 2 == 1 for r in kept)  # the verifier's 0 (a raise) dropped the even ones
    errors = (tmp_path / "out.verifier_errors.jsonl")
    assert report["verifier_errors"] == (len(errors.read_text().splitlines()) if errors.is_file() else 0)
    assert f"generated {report['generated']}, kept {report['kept']}" in result.stdout
    assert run_main(capsys, *args, "--out", tmp_path / "again.jsonl").returncode == 0  # seeded: the same pairs
    assert (tmp_path / "again.jsonl").read_text() == (tmp_path / "out.jsonl").read_text()


def test_synth_bad_input_is_a_one_line_error(tmp_path, capsys):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(json.dumps({"text": "no instruction"}) + "\n")
    base = ("data", "synth", "--model", "none", "--out", tmp_path / "o.jsonl", "--n", "2")
    assert_user_error(run_main(capsys, *base, "--seeds", seeds), "seeds.jsonl:1", "'instruction'")
    assert_user_error(run_main(capsys, *base, "--seeds", tmp_path / "missing.jsonl"), "seed file not found")
    assert_user_error(run_main(capsys, *base, "--seeds", seeds, "--verify", "exact"), "answer")
    assert_user_error(run_main(capsys, *base[:-1], "0", "--seeds", seeds), "--n (0)")
