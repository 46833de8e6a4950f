"""SFT data mixing (`lmforge sft --mix FILE:WEIGHT`): the run's own chat data and another file interleaved by weight
through data/mixing.py's MixedLoader, packed rows keeping their segment ids, the shares reported, and a run resumed
from a mid-epoch checkpoint ending with weights bitwise equal to an uninterrupted run's."""

import json
import shutil

import numpy as np
import torch

from lmforge.data.mixing import MixedLoader
from lmforge.train.checkpoint import latest_valid_checkpoint
from lmforge.train.post.sft_pack import SFTLoader, SFTRows
from tests.cli_util import assert_user_error
from tests.inprocess_cli import run_main
from tests.tiny_lm import tiny_lm


def _rows(n: int, start: int, packed: bool) -> SFTRows:
    x = np.arange(start, start + n)[:, None] * np.ones((1, 4), dtype=np.int64)
    return SFTRows(x, x + 1, np.ones_like(x) if packed else None, 1.0)


def test_mixed_sft_loader_blends_by_weight_and_resumes_mid_epoch():
    def loader():
        sources = [SFTLoader(_rows(30, 0, True), 1, seed=0), SFTLoader(_rows(6, 1000, True), 1, seed=1)]
        return MixedLoader(sources, [0.75, 0.25], 4, names=["data", "extra"])

    whole = loader()
    batches = _take(whole, 12)  # 9 batches per epoch (36 rows): crosses into the second epoch
    assert all(len(b) == 3 and b[0].shape == (4, 4) for b in batches)  # (x, y, segment ids) as SFTLoader yields
    assert whole.shares() == {"data": 0.75, "extra": 0.25}  # 48 rows: 36 of the own data, 12 (2 passes) of extra
    first = loader()
    _take(first, 5)
    state = json.loads(json.dumps(first.state_dict()))  # as a checkpoint stores it, mid-epoch
    resumed = loader()
    resumed.load_state_dict(state)
    for a, b in zip(batches[5:], _take(resumed, 7), strict=True):
        assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(np.array_equal(p, q) for p, q in zip(batches[0], batches[9], strict=True))  # epochs reshuffle


def _take(loader, n: int) -> list:
    """The next n batches, into the following epochs when one ends."""
    out = []
    while len(out) < n:
        out += [b for _, b in zip(range(n - len(out)), iter(loader), strict=False)]
    return out

def _chat(path, words, n):
    convs = [{"messages": [{"role": "user", "content": f"Say {w}."}, {"role": "assistant", "content": w}]}
             for w in words * n]
    path.write_text("".join(json.dumps(c) + "\n" for c in convs))
    return path


def test_sft_mix_cli_reports_shares_and_resumes_exactly(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("lmforge.train.post.sft.write_curves", lambda run_dir: [])  # PNGs: seconds, tested elsewhere
    monkeypatch.setattr("lmforge.train.trainer.measure_peak_flops", lambda *a: 1e12)  # MFU's matmul peak: 2 s
    tiny_lm().save(tmp_path / "base")
    own, extra = _chat(tmp_path / "own.jsonl", ("red", "blue", "green"), 8), _chat(tmp_path / "extra.jsonl",
                                                                                  ("cat", "dog"), 4)
    args = ["sft", "--model", tmp_path / "base", "--data", own, "--mix", f"{extra}:0.25", "--max-steps", "4",
            "--checkpoint-every", "2", "--keep-checkpoints", "2", "--batch-size", "2", "--seq-len", "32",
            "--no-pack", "--eval-examples", "1", "--max-new-tokens", "1", "--no-export-hf", "--lr", "3e-3",
            "--threads", "1", "--device", "cpu", "--precision", "fp32", "--no-progress"]
    result = run_main(capsys, *args, "--out", tmp_path / "a")
    assert result.returncode == 0, result.stderr
    assert f"mixed in {extra}: 8 rows, weight 0.25" in result.stdout
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["mix"] == {"data": 0.75, str(extra): 0.25}  # 8 rows: 6 own, 2 mixed in
    # resume from step 2 (mid-epoch: 23 + 8 rows make 15 batches of 2) equals the uninterrupted run
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step-00000004")
    result = run_main(capsys, *args, "--out", tmp_path / "b", "--resume")
    assert result.returncode == 0, result.stderr
    assert "resumed from" in result.stdout
    a, b = (latest_valid_checkpoint(tmp_path / r / "checkpoints").tensors["model"] for r in "ab")  # step 4 each
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert_user_error(run_main(capsys, *args, "--out", tmp_path / "c", "--mix", f"{extra}:0.8"), "sum to 1.05")
    assert_user_error(run_main(capsys, *args[:5], "--mix", "extra.jsonl", "--out", tmp_path / "d"), "PATH:WEIGHT")
