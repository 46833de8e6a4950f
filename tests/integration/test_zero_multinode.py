"""ZeRO stages and multi-node launch under torchrun on CPU (gloo, 2 processes).

- ZeRO-0/1 (DDP, + ZeroRedundancyOptimizer) and ZeRO-2/3 (FSDP2 keeping / resharding the gathered parameters),
  and ZeRO-3 with CPU offload: the bytes of parameters, gradients and Adam states a rank holds equal what `lmforge
  calc --zero-stage S --dp 2` predicts within 5%, and every stage trains to the same losses.
- Two "nodes" (two torchrun agents, one rank each) meet through the c10d rendezvous on 127.0.0.1; when one node's
  rank is killed, both agents exit non-zero within KILL_TIMEOUT_S (no hang), and `--resume` on both nodes continues
  from the last checkpoint to the losses of the uninterrupted run.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmforge.train.metrics import read_metrics
from tests.cli_util import run_cli
from tests.integration.test_parallel_layouts import _pretrain, _records, _run, packed  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
KILL_TIMEOUT_S = 60  # collective_timeout is 30 s: a rank left waiting on a dead peer gives up by then at the latest


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def zero_runs(tmp_path_factory, packed):  # noqa: F811
    runs = {}
    for name, flags in (("0", ("--parallel", "ddp", "--zero", "0")), ("1", ("--parallel", "ddp", "--zero", "1")),
                        ("2", ("--parallel", "fsdp", "--zero", "2")), ("3", ("--parallel", "fsdp", "--zero", "3")),
                        ("3-offload", ("--parallel", "fsdp", "--zero", "3", "--offload"))):
        out = tmp_path_factory.mktemp(f"zero{name}") / "run"
        _run(_pretrain(out, packed, "dense", *flags, ranks=2, batch_size=4, max_steps=3))
        runs[name] = out
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["0", "1", "2", "3", "3-offload"])
def test_zero_stage_bytes_per_rank_match_calc(zero_runs, stage):
    run = zero_runs[stage]
    states = _records(run, "model_states")[1]
    zero = int(stage[0])
    assert (states["zero"], states["dp"]) == (zero, 2)
    calc = run_cli("calc", "--model-config", str(run / "model_config.json"), "--dp", "2", "--zero-stage", str(zero),
                   "--dtype", "fp32", "--json")
    assert calc.returncode == 0, calc.stderr
    predicted = json.loads(calc.stdout)["memory"]["zero"][str(zero)]
    print(f"ZeRO-{stage}: measured {states}, calc {predicted}")
    for key, name in (("param_bytes", "weights"), ("grad_bytes", "gradients"), ("optimizer_bytes", "optimizer")):
        assert states[key] == pytest.approx(predicted[name], rel=0.05), (key, states, predicted)
    # the same optimisation whatever is sharded
    want, got = _records(zero_runs["0"], "train"), _records(run, "train")
    for step in (1, 2, 3):
        assert got[step]["loss"] == pytest.approx(want[step]["loss"], rel=1e-5), (step, got, want)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_cmds(out, packed, port, *extra):  # noqa: F811
    """The two "nodes": torchrun agents on 127.0.0.1 meeting through the c10d rendezvous, one rank each."""
    cmd = _pretrain(out, packed, "dense", "--parallel", "ddp", "--set", "collective_timeout=30", *extra, ranks=1,
                    batch_size=4, max_steps=6)
    cmd[cmd.index("--checkpoint-every") + 1] = "2"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"job{port}",
                "--max-restarts", "0"]
    return [[*launcher, *cmd[1:]] for _ in range(2)]


def _start(cmds, out):
    logs = [open(out.parent / f"node{i}.log", "w") for i in range(2)]  # noqa: SIM115
    return [subprocess.Popen(c, env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            for c, log in zip(cmds, logs, strict=True)]


def _wait(procs, timeout):
    deadline = time.time() + timeout
    for p in procs:
        p.wait(timeout=max(deadline - time.time(), 1))
    return [p.returncode for p in procs]


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


@pytest.mark.slow
def test_two_nodes_rendezvous_killed_rank_fails_cleanly_and_resume_continues(packed, tmp_path):  # noqa: F811
    ref, out = tmp_path / "ref" / "run", tmp_path / "killed" / "run"
    ref.parent.mkdir()
    out.parent.mkdir()
    assert _wait(_start(_node_cmds(ref, packed, _free_port()), ref), 300) == [0, 0], (ref.parent / "node0.log")
    want = _records(ref, "train")
    assert sorted(want) == list(range(1, 7))

    procs = _start(_node_cmds(out, packed, _free_port()), out)
    deadline = time.time() + 240
    while time.time() < deadline and all(p.poll() is None for p in procs) and not (
            (out / "metrics.jsonl").is_file() and max(_records(out, "train") or {0: 0}) >= 3):
        time.sleep(0.05)
    assert all(p.poll() is None for p in procs), "the run ended before a rank could be killed"
    workers = [pid for p in procs for pid in _children(p.pid)]
    assert len(workers) == 2, workers
    victim = workers[1]  # the rank of the second node
    killed_at = time.time()
    os.kill(victim, signal.SIGKILL)
    codes = _wait(procs, KILL_TIMEOUT_S)  # raises TimeoutExpired on a hang
    took = time.time() - killed_at
    print(f"killed a rank at step {max(_records(out, 'train'))}: both nodes exited {codes} after {took:.1f} s")
    assert all(code != 0 for code in codes), codes
    assert took < KILL_TIMEOUT_S

    procs = _start(_node_cmds(out, packed, _free_port(), "--resume"), out)
    assert _wait(procs, 300) == [0, 0], (out.parent / "node0.log").read_text()[-3000:]
    log = (out.parent / "node0.log").read_text() + (out.parent / "node1.log").read_text()
    assert "resumed from" in log, log[-3000:]
    got = {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"}
    assert sorted(got) == list(range(1, 7))
    assert [got[s] for s in range(1, 7)] == [want[s]["loss"] for s in range(1, 7)]  # bitwise: DDP resumes exactly
