"""Bad input never ends a data run (issue 20, items 7, 8 and 20): each corrupt file is reported with its reason
and dropped, each bad line counted, and the clean output equals the run without the bad files; `--strict` stops
at the first bad input with a one-line error; off a terminal, progress is log lines, not bars. Through the CLI."""

import json
from pathlib import Path

import pytest

from lmforge.data.readers import BadInput, ReaderConfig, ReadStats, read_documents, read_file
from tests.cli_util import assert_user_error, run_cli
from tests.unit.data.corrupt_inputs import BAD_FILES, write_corrupt_folders


def _pipeline(tmp_path: Path, inputs: Path, out: Path) -> Path:
    toml = tmp_path / f"{out.name}.toml"
    toml.write_text(f'[input]\npaths = ["{inputs}"]\n[output]\ndir = "{out}"\nkeep_removed = true\n'
                    '[[steps]]\ntype = "normalize"\n[[steps]]\ntype = "exact_dedup"\n')
    return toml


def _documents(out: Path) -> list[tuple]:
    """Every output document in order (the shards the manifest lists), as (id, text, meta)."""
    return [(d.id, d.text, d.meta) for d in read_documents(str(out / "data"))]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return write_corrupt_folders(tmp_path_factory.mktemp("corrupt"))


def test_corrupt_files_are_reported_and_the_output_equals_the_clean_run(tmp_path, folders):
    clean, dirty = folders
    results = {}
    for name, folder in (("clean", clean), ("dirty", dirty)):
        result = run_cli("data", "run", str(_pipeline(tmp_path, folder, tmp_path / name)))
        assert result.returncode == 0, result.stderr
        results[name] = result
    stats = {n: json.loads((tmp_path / n / "stats.json").read_text()) for n in ("clean", "dirty")}
    assert _documents(tmp_path / "dirty") == _documents(tmp_path / "clean")
    assert len(_documents(tmp_path / "clean")) == stats["clean"]["output"]["docs"] == 8 + 6 + 7 + 2 + 1 + 2
    # every bad file, and only those, with its reason: in stats.json, report.md and the summary printed
    reasons = {Path(f["file"]).name: f["reason"] for f in stats["dirty"]["read"]["bad_files"]}
    assert set(reasons) == set(BAD_FILES)
    report = (tmp_path / "dirty" / "report.md").read_text()
    for name, why in BAD_FILES.items():
        assert why in reasons[name]
        assert f"{name}`: {reasons[name]}" in report and f"{name}: {reasons[name]}" in results["dirty"].stdout
    read = stats["dirty"]["read"]
    assert (read["invalid_unicode"], read["malformed_json"], read["undecodable"]) == (1, 0, 0)
    assert "invalid_unicode at s.jsonl:2" in read["examples"] and "invalid_unicode at s.jsonl:2" in report
    assert read["records"] == stats["clean"]["read"]["records"] and read["files"] == 6 + len(BAD_FILES)
    assert stats["clean"]["steps"] == stats["dirty"]["steps"]  # removed documents of bad files are not counted
    # off a terminal (captured output), progress is one log line per stage, not a rich bar cut at 80 columns
    log = results["dirty"].stderr
    assert "━" not in log and "stage 0: normalize: 11/11 shards" in log and "stage 1: exact_dedup: 11/11" in log


def test_a_truncated_stream_is_a_bad_file_and_its_documents_are_dropped(tmp_path, folders):
    """Item 8: the reader meets the truncation after yielding the first documents of the file; the run reports
    the file (not a malformed line) and writes none of them, wherever the file was cut."""
    _, dirty = folders
    stats, docs = ReadStats(), []
    with pytest.raises(BadInput, match="truncated zstd stream"):
        docs.extend(read_file(dirty / "cut.jsonl.zst", ReaderConfig(), stats))
    assert len(docs) > 50 and stats.malformed_json == 0  # what zstandard's stream_reader used to keep silently
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "cut.jsonl.zst").write_bytes((dirty / "cut.jsonl.zst").read_bytes())
    (inputs / "ok.jsonl").write_bytes((dirty / "a.jsonl").read_bytes())
    result = run_cli("data", "run", str(_pipeline(tmp_path, inputs, tmp_path / "out")), "--quiet")
    assert result.returncode == 0, result.stderr
    read = json.loads((tmp_path / "out" / "stats.json").read_text())["read"]
    assert [f["reason"].split(" (")[0] for f in read["bad_files"]] == ["truncated zstd stream"]
    assert (read["malformed_json"], read["records"]) == (0, 8)
    assert [d[0] for d in _documents(tmp_path / "out")] == [f"a{i}" for i in range(8)]
    assert not list((tmp_path / "out" / "removed").rglob("*.tmp"))


def test_strict_stops_at_the_first_bad_input_with_one_line(tmp_path, folders):
    clean, dirty = folders
    assert_user_error(run_cli("data", "run", str(_pipeline(tmp_path, dirty, tmp_path / "s1")), "--strict"),
                      "bad input", "bad-crc.jsonl.gz", "CRC check failed")
    lines = tmp_path / "lines"
    lines.mkdir()
    (lines / "x.jsonl").write_text('{"text": "good"}\n{"text": "cut\n')
    assert_user_error(run_cli("data", "run", str(_pipeline(tmp_path, lines, tmp_path / "s2")), "--strict"),
                      "bad input x.jsonl:2: malformed JSON")
    # without --strict the same input is counted and the run goes on
    result = run_cli("data", "run", str(_pipeline(tmp_path, lines, tmp_path / "s2")), "--quiet")
    assert result.returncode == 0 and json.loads((tmp_path / "s2" / "stats.json").read_text())["read"][
        "malformed_json"] == 1
