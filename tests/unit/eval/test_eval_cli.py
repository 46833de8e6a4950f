"""`lmforge eval MODEL --tasks ...` through the real CLI: results JSON + markdown on a tiny model with the project's
task files (English and Chinese), and every bad input as one line on stderr with exit code 2."""

import json
from pathlib import Path

import pytest

from lmforge.eval.tasks import build_data
from tests.cli_util import assert_user_error, run_cli
from tests.tiny_lm import tiny_lm

GOOD_YAML = """task: my_task
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: multiple_choice
test_split: test
doc_to_text: "Q: {{{{question}}}}\\nA:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_model")
    tiny_lm().save(path)
    return path


def write_task(tmp_path: Path, rows: list[dict], yaml_text: str = GOOD_YAML) -> Path:
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = tmp_path / "my_task.yaml"
    task.write_text(yaml_text.format(data=data))
    return task


ROWS = [{"question": "the cat sat on the", "choices": ["mat", "sky"], "answer": 0},
        {"question": "hello", "choices": ["world", "log"], "answer": 0}]


def test_tasks_run_and_write_json_and_markdown(model_dir, tmp_path):
    task = write_task(tmp_path, ROWS)
    out = tmp_path / "out"
    r = run_cli("eval", str(model_dir), "--tasks", f"lmforge_mc,lmforge_ceval,lmforge_ceval_gen,{task}",
                "--limit", "3", "--num-fewshot", "1", "--out", str(out), "--log-samples", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert set(results["results"]) == {"lmforge_mc", "lmforge_ceval", "lmforge_ceval_gen", "my_task"}
    assert 0 <= results["results"]["lmforge_mc"]["acc,none"] <= 1
    assert "acc_norm,none" in results["results"]["lmforge_ceval"]
    assert "exact_match,letter" in results["results"]["lmforge_ceval_gen"]
    assert results["n-samples"]["my_task"]["effective"] == 2 and results["n-samples"]["lmforge_mc"]["effective"] == 3
    table = (out / "results.md").read_text()
    assert "| lmforge_mc | none | 1 | acc |" in table and "| my_task |" in table
    assert "| lmforge_ceval |" in r.stdout
    ceval = [json.loads(line) for line in (out / "samples_lmforge_ceval.jsonl").read_text().splitlines()]
    assert ceval[0]["arguments"][0][0].endswith("答案：")  # the Chinese prompt reached the model


def test_bad_inputs_are_one_line_errors(model_dir, tmp_path):
    missing = tmp_path / "nope.yaml"
    assert_user_error(run_cli("eval", str(model_dir), "--tasks", str(missing)), "task file not found", "nope.yaml")
    assert_user_error(run_cli("eval", str(model_dir), "--tasks", "no_such_task"), "unknown task", "lmforge_mc")
    broken = tmp_path / "broken.yaml"
    broken.write_text("task: broken\ndoc_to_text: [unclosed\n")
    assert_user_error(run_cli("eval", str(model_dir), "--tasks", str(broken)), "not valid YAML", "line")
    no_answer = write_task(tmp_path, [ROWS[0], {"question": "hello", "choices": ["a", "b"]}])
    assert_user_error(run_cli("eval", str(model_dir), "--tasks", str(no_answer)), "item 2", "'answer'",
                      "doc_to_target")
    (tmp_path / "items.jsonl").unlink()
    assert_user_error(run_cli("eval", str(model_dir), "--tasks", str(no_answer)), "data file not found")
    assert_user_error(run_cli("eval", str(model_dir), "--tasks", "lmforge_mc", "--limit", "0"), "--limit")


def test_ppl_and_needle_are_still_subcommands():
    r = run_cli("eval", "--help")
    assert r.returncode == 0 and "ppl" in r.stdout and "needle" in r.stdout and "--tasks" in r.stdout
    assert "--stride" in run_cli("eval", "ppl", "--help").stdout


def test_generated_task_files_match_their_builder():
    for name, rows in build_data.files().items():
        assert (build_data.DATA / name).read_text(encoding="utf-8") == build_data.render(rows), name
