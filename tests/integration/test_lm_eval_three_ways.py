"""Same numbers three ways on the converted SmolLM2-135M-Instruct: lm-eval `--model hf` (transformers) vs
`--model lmforge` vs `--model local-completions` pointed at `lmforge serve`, on the project's multiple-choice task
and its GSM-style generative task: per-item log-likelihoods within 1e-3, identical accuracy, identical greedy outputs.
Also the Chinese C-Eval-format tasks run end to end through `lmforge eval`."""

import json

import pytest

from lmforge.formats.loader import load
from tests.cli_util import run_cli
from tests.embedded import embedded_gguf
from tests.server_util import live_server

pytestmark = pytest.mark.slow
TASKS = ["lmforge_mc", "lmforge_gsm"]


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory):
    """The embedded GGUF converted to a Hugging Face directory (what `lmforge convert` writes)."""
    embedded_gguf()
    path = tmp_path_factory.mktemp("smollm2_hf")
    load("smollm2-135m").save(path)
    return path


def evaluate(model, model_args):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    import lmforge.eval.lm_adapter  # noqa: F401 - registers --model lmforge
    from lmforge.eval.task_files import TASKS_DIR

    out = simple_evaluate(model=model, model_args=model_args, tasks=TASKS, num_fewshot=1, limit=4,
                          task_manager=TaskManager(include_path=str(TASKS_DIR), include_defaults=False),
                          log_samples=True, bootstrap_iters=0, gen_kwargs={"max_gen_toks": 24})
    samples = {t: sorted(out["samples"][t], key=lambda s: (s["doc_id"], s.get("idx", 0))) for t in TASKS}
    return samples, out["results"]


def test_hf_lmforge_and_local_completions_give_the_same_numbers(smollm2_dir, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    runs = {"hf": evaluate("hf", {"pretrained": str(smollm2_dir), "dtype": "float32", "device": "cpu"}),
            "lmforge": evaluate("lmforge", {"pretrained": str(smollm2_dir)})}
    with live_server(load(smollm2_dir), name="smollm2") as (url, _):
        runs["local-completions"] = evaluate("local-completions", {"base_url": f"{url}/v1/completions",
                                                                   "model": "smollm2", "batch_size": 8})
    hf_samples, hf_results = runs["hf"]
    hf_ll = [[float(r[0]) for r in s["filtered_resps"]] for s in hf_samples["lmforge_mc"]]
    hf_gen = [s["resps"] for s in hf_samples["lmforge_gsm"]]
    assert any(g[0][0].strip() for g in hf_gen)
    for name in ("lmforge", "local-completions"):
        samples, results = runs[name]
        ll = [[float(r[0]) for r in s["filtered_resps"]] for s in samples["lmforge_mc"]]
        worst = max(abs(a - b) for x, y in zip(ll, hf_ll, strict=True) for a, b in zip(x, y, strict=True))
        assert worst <= 1e-3, (name, worst)
        for metric in ("acc,none", "acc_norm,none"):
            assert results["lmforge_mc"][metric] == hf_results["lmforge_mc"][metric], (name, metric)
        assert [s["resps"] for s in samples["lmforge_gsm"]] == hf_gen, name
        for metric in ("exact_match,strict-match", "exact_match,flexible-extract"):
            assert results["lmforge_gsm"][metric] == hf_results["lmforge_gsm"][metric], (name, metric)
    assert hf_results["lmforge_mc"]["acc,none"] > 0.5  # SmolLM2 knows these easy questions (chance: 0.25)


def test_chinese_tasks_run_through_lmforge_eval(tmp_path):
    out = tmp_path / "out"
    r = run_cli("eval", "smollm2-135m", "--tasks", "lmforge_ceval,lmforge_ceval_gen", "--num-fewshot", "2",
                "--limit", "8", "--out", str(out), "--log-samples", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())["results"]
    assert 0 <= results["lmforge_ceval"]["acc,none"] <= 1  # SmolLM2 is an English model: near chance (0.25)
    samples = [json.loads(line) for line in (out / "samples_lmforge_ceval_gen.jsonl").read_text().splitlines()]
    assert len(samples) == 8 and all(s["filtered_resps"][0] in ("A", "B", "C", "D") for s in samples)
    matches = [s["filtered_resps"][0] == s["target"] for s in samples]
    assert results["lmforge_ceval_gen"]["exact_match,letter"] == pytest.approx(sum(matches) / len(matches))
    prompt, tokenizer = samples[0]["arguments"][0][0], load("smollm2-135m").tokenizer
    assert prompt.endswith("答案：") and tokenizer.decode(tokenizer.encode(prompt)) == prompt  # Chinese round-trips
