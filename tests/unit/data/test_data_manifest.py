"""The output folder matches its manifest (issue 20, items 9 and 12): a re-run with fewer inputs leaves no stale
shard, finished shards are still reused, `data pack` reads only the shards data/manifest.json lists, and a
hand-edited manifest or an output directory that cannot be written is a one-line error. Through the CLI."""

import json
import shutil
from pathlib import Path

import pytest

from lmforge.data.manifest import MANIFEST_FILE
from lmforge.tokenizer import train_tokenizer
from tests.cli_util import assert_user_error, run_cli


def _write_inputs(folder: Path, files: int, docs: int = 6) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        records = [{"id": f"f{f}-{i}", "text": f"file {f} says sentence number {i} about rivers."} for i in range(docs)]
        (folder / f"x{f}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def _pipeline(tmp_path: Path, inputs: Path, out: Path) -> Path:
    toml = tmp_path / "p.toml"
    toml.write_text(f'[input]\npaths = ["{inputs}"]\n[output]\ndir = "{out}"\nkeep_removed = true\n'
                    '[[steps]]\ntype = "normalize"\n[[steps]]\ntype = "exact_dedup"\n')
    return toml


def _count_lines(files: list[Path]) -> int:
    return sum(len(p.read_text().splitlines()) for p in files)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    train_tokenizer([f"file {i} says sentence number {i} about rivers." for i in range(50)], type="byte-bpe",
                    vocab_size=300).save(path)
    return path


def test_fewer_inputs_leave_no_stale_shard_and_pack_reads_the_manifest(tmp_path, tokenizer_dir):
    inputs, out = tmp_path / "in", tmp_path / "out"
    _write_inputs(inputs, 3)
    toml = _pipeline(tmp_path, inputs, out)
    assert run_cli("data", "run", str(toml), "-q").returncode == 0
    (inputs / "x2.jsonl").unlink()
    result = run_cli("data", "run", str(toml))
    assert result.returncode == 0, result.stderr
    shards = sorted((out / "data").glob("part-*.jsonl"))
    stats = json.loads((out / "stats.json").read_text())
    assert _count_lines(shards) == stats["output"]["docs"] == 12  # the folder holds what stats.json says
    for folder in ("_work", "removed", "data"):  # no file of the third shard anywhere
        assert not [p for p in (out / folder).rglob("part-00002*")], folder
    manifest = json.loads((out / "data" / MANIFEST_FILE).read_text())
    assert [s["file"] for s in manifest["shards"]] == [p.name for p in shards] == ["part-00000.jsonl",
                                                                                   "part-00001.jsonl"]
    assert manifest["docs"] == 12
    again = run_cli("data", "run", str(toml))  # resuming still works: both stages reuse both shards
    assert again.returncode == 0 and "4 finished shards reused" in again.stdout
    (out / "data" / "part-00001.stats.json").write_text("{truncated")  # damaged bookkeeping: redone, no traceback
    again = run_cli("data", "run", str(toml))
    assert again.returncode == 0 and "3 finished shards reused" in again.stdout, again.stderr
    (out / "_pipeline.json").write_text("[]")
    assert run_cli("data", "run", str(toml), "-q").returncode == 0
    assert json.loads((out / "stats.json").read_text()) == stats
    # a shard the manifest does not list (copied in by hand) is not packed
    shutil.copy(shards[0], out / "data" / "part-00007.jsonl")
    packed = tmp_path / "packed"
    result = run_cli("data", "pack", "-t", str(tokenizer_dir), "-i", str(out / "data"), "-o", str(packed),
                     "--seq-len", "8", "--val-fraction", "0")
    assert result.returncode == 0, result.stderr
    index = json.loads((packed / "index.json").read_text())
    assert index["splits"]["train"]["documents"] == 12
    assert "read 12 documents" in result.stdout


def test_a_hand_edited_manifest_is_a_one_line_error(tmp_path, tokenizer_dir):
    data = tmp_path / "data"
    _write_inputs(data, 1)
    (data / "x0.jsonl").rename(data / "part-00000.jsonl")
    pack = ("data", "pack", "-t", str(tokenizer_dir), "-i", str(data), "-o", str(tmp_path / "p"), "--seq-len", "8")
    (data / MANIFEST_FILE).write_text('{"format": "lmforge-data-manifest-v1", "shards": [')
    assert_user_error(run_cli(*pack), "manifest", "is unreadable")
    (data / MANIFEST_FILE).write_text(json.dumps({"format": "lmforge-data-manifest-v1",
                                                  "shards": [{"file": "part-00001.jsonl"}]}))
    assert_user_error(run_cli(*pack), "lists 'part-00001.jsonl', which is missing")
    (data / MANIFEST_FILE).write_text(json.dumps({"format": "lmforge-data-manifest-v1",
                                                  "shards": [{"file": "../../etc/passwd"}]}))
    assert_user_error(run_cli(*pack), "not a shard file name")


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_an_output_directory_that_cannot_be_written_is_a_one_line_error(tmp_path, where, tokenizer_dir):
    (tmp_path / "file").write_text("not a directory")
    out = str(tmp_path / "file" / "out") if where == "under_a_file" else "/proc/lmforge-out"
    _write_inputs(tmp_path / "in", 1)
    assert_user_error(run_cli("data", "run", str(_pipeline(tmp_path, tmp_path / "in", tmp_path / "o")), "--out", out),
                      "cannot write the output directory", out)
    assert_user_error(run_cli("data", "sample", "--out", out), "cannot write the output directory", out)
    assert_user_error(run_cli("data", "pack", "-t", str(tokenizer_dir), "-i", str(tmp_path / "in"), "-o", out,
                              "--seq-len", "8"), "cannot write the output directory", out)
