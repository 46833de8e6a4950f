"""lm-eval's `--model hf` (transformers), `--model lmforge` and `--model local-completions` against `lmforge serve`
give the same per-item log-likelihoods, accuracy and greedy outputs on the same tiny random Llama: a multiple-choice
task and a generative one from the project's task files. (tests/integration/test_lm_eval_three_ways.py: SmolLM2.)"""

import pytest
import torch

from lmforge.formats.loader import load
from tests.hf_models import tiny_hf_model
from tests.server_util import live_server
from tests.tiny_lm import tiny_tokenizer

TASKS = ["lmforge_mc", "lmforge_instruct"]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_hf")
    torch.manual_seed(1)
    tiny_hf_model("llama", tie=False, vocab_size=320, noise=0.3).save_pretrained(path)
    tiny_tokenizer().save(path)
    return path


def evaluate(model, model_args, **kw):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    import lmforge.eval.lm_adapter  # noqa: F401 - registers --model lmforge
    from lmforge.eval.task_files import TASKS_DIR

    out = simple_evaluate(model=model, model_args=model_args, tasks=TASKS, num_fewshot=0, limit=4,
                          task_manager=TaskManager(include_path=str(TASKS_DIR), include_defaults=False),
                          log_samples=True, bootstrap_iters=0, gen_kwargs={"max_gen_toks": 12}, **kw)
    return {task: sorted(out["samples"][task], key=lambda s: (s["doc_id"], s.get("idx", 0))) for task in TASKS}, \
        out["results"]


def loglikelihoods(samples):
    """Every choice's log-likelihood, item after item."""
    return [float(r[0]) for s in samples["lmforge_mc"] for r in s["filtered_resps"]]


def test_hf_lmforge_and_local_completions_agree(hf_dir, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    hf, hf_results = evaluate("hf", {"pretrained": str(hf_dir), "dtype": "float32", "device": "cpu"})
    ours, our_results = evaluate("lmforge", {"pretrained": str(hf_dir)})
    lm = load(hf_dir)
    with live_server(lm, name="tiny") as (url, _):
        api, api_results = evaluate("local-completions", {"base_url": f"{url}/v1/completions", "model": "tiny",
                                                          "batch_size": 4, "max_length": 256})
    for other in (ours, api):
        assert loglikelihoods(other) == pytest.approx(loglikelihoods(hf), abs=1e-3)
        assert [s["filtered_resps"] for s in other["lmforge_instruct"]] == \
            [s["filtered_resps"] for s in hf["lmforge_instruct"]]
    for results in (our_results, api_results):
        assert results["lmforge_mc"]["acc,none"] == hf_results["lmforge_mc"]["acc,none"]
        assert results["lmforge_mc"]["acc_norm,none"] == hf_results["lmforge_mc"]["acc_norm,none"]
        assert results["lmforge_instruct"]["exact_match,none"] == hf_results["lmforge_instruct"]["exact_match,none"]
    # the generations are real text, not all empty (else "identical" would say little)
    assert any(s["resps"][0][0] for s in hf["lmforge_instruct"])
