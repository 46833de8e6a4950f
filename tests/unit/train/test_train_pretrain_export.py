"""End to end: pretrain() on packed shards writes metrics, plots, report and a Hugging Face directory that
transformers loads with the same logits; `lmforge report` rewrites the report."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_train_config

from lmforge.formats.hf_dir import load_hf_model
from lmforge.model import Transformer
from lmforge.train.pretrain import pretrain

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_pretrain_exports_hf_and_reports(tmp_path, packed):
    data, tok_dir, _ = packed
    cfg = tiny_train_config(tmp_path, data_dir=str(data), tokenizer_dir=str(tok_dir), preset="tiny-llama",
                            max_steps=6, export_hf=True, sample_every=3)
    summary = pretrain(cfg, log=lambda m: None)
    run = Path(cfg.out)
    assert summary["status"] == "finished" and summary["step"] == 6
    for name in ("loss.png", "lr.png", "throughput.png", "report.md", "summary.json", "samples.jsonl"):
        assert (run / name).is_file(), name
    report = (run / "report.md").read_text()
    assert "![loss](loss.png)" in report and "unigram-entropy baseline" in report
    from transformers import AutoModelForCausalLM

    ours, _ = load_hf_model(run / "hf")
    theirs = AutoModelForCausalLM.from_pretrained(run / "hf", dtype=torch.float32).eval()
    ids = torch.randint(0, ours.config.vocab_size, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(theirs(ids, attention_mask=torch.ones_like(ids)).logits, ours(ids),
                                   rtol=1e-4, atol=1e-4)
    assert isinstance(ours, Transformer)
    (run / "report.md").unlink()
    result = subprocess.run([sys.executable, "-m", "lmforge", "report", str(run)], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 0 and (run / "report.md").is_file(), result.stderr
    assert json.loads((run / "summary.json").read_text())["unigram_entropy"] > 0
