"""The TOML pipeline end to end on the sample corpus: accuracy against ground truth, audit files,
idempotent re-runs, and the CLI."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmforge.cli.data_cmd import app
from lmforge.common.errors import ConfigError, LmforgeError
from lmforge.data.pipeline import PipelineRunner
from lmforge.data.pipeline_config import load_pipeline
from lmforge.data.readers import read_documents
from lmforge.data.sample_corpus import SampleConfig, write_sample

SMALL = SampleConfig(seed=3, good=80, per_language=4, spam=18, blocked_urls=4, exact_duplicates=10,
                     near_duplicates=10, pii=10, shards=3)


def _outputs(out_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out_dir / "data").glob("part-*")) if "stats" not in p.name}


@pytest.fixture()
def sample_dir(tmp_path):
    write_sample(tmp_path / "sample", SMALL)
    return tmp_path / "sample"


def test_pipeline_matches_ground_truth(sample_dir):
    stats = PipelineRunner(load_pipeline(sample_dir / "pipeline.toml")).run()
    truth = [json.loads(line) for line in (sample_dir / "ground_truth.jsonl").read_text().splitlines()]
    expected = {t["id"] for t in truth if t["expect"] == "keep"}
    kept = [d for d in read_documents(str(sample_dir / "clean" / "data"))]
    kept_ids = {d.id for d in kept}
    assert len(kept_ids & expected) / len(expected) >= 0.97  # good prose survives
    assert len(kept_ids & expected) / len(kept_ids) >= 0.97  # and little else does
    pii = [p for t in truth for p in t["pii"]]
    assert pii and not any(p in d.text for d in kept for p in pii)
    assert stats["read"]["malformed_json"] == 1 and stats["read"]["undecodable"] == 1
    assert stats["read"]["missing_text"] == 1
    by_name = {s["name"]: s for s in stats["steps"]}
    assert by_name["exact_dedup"]["removed"]["exact_dedup:duplicate"] >= 10
    assert by_name["url_filter"]["removed"]["url_filter:blocked_domain"] == 4
    assert stats["output"]["docs"] == len(kept)
    assert by_name["pii"]["modified"] >= SMALL.pii and by_name["url_filter"]["modified"] == 0
    for s in stats["steps"]:  # the accounting adds up
        assert s["docs_in"] == s["docs_out"] + sum(s["removed"].values())
    report = (sample_dir / "clean" / "report.md").read_text()
    assert "| gopher_quality |" in report and "minhash_dedup:near_duplicate" in report
    removed = list(read_documents(str(sample_dir / "clean" / "removed")))
    assert removed and all(":" in d.meta["removed_reason"] for d in removed)
    assert len(removed) + len(kept) == stats["read"]["records"]


def test_rerun_is_idempotent_and_resumes_missing_shards(sample_dir):
    config = load_pipeline(sample_dir / "pipeline.toml")
    first = PipelineRunner(config).run()
    outputs = _outputs(sample_dir / "clean")
    mtimes = {p: p.stat().st_mtime_ns for p in (sample_dir / "clean" / "data").iterdir()}
    events = []
    second = PipelineRunner(config, progress=lambda *a: events.append(a)).run()
    assert second == first and _outputs(sample_dir / "clean") == outputs
    assert events and all(skip for *_, skip in events)  # every shard of every stage reused
    assert {p: p.stat().st_mtime_ns for p in (sample_dir / "clean" / "data").iterdir()} == mtimes
    (sample_dir / "clean" / "data" / "part-00001.jsonl").unlink()  # an interrupted run
    events.clear()
    third = PipelineRunner(config, progress=lambda *a: events.append(a)).run()
    assert third == first and _outputs(sample_dir / "clean") == outputs
    assert sum(not skip for *_, skip in events) == 1
    corpus = sample_dir / "corpus" / "part-00000.jsonl"
    corpus.write_bytes(corpus.read_bytes() + b'{"id": "new", "text": "A new short line."}\n')  # input changed
    events.clear()
    fourth = PipelineRunner(config, progress=lambda *a: events.append(a)).run()
    assert not any(skip for *_, skip in events) and fourth["read"]["records"] == first["read"]["records"] + 1


def test_changed_pipeline_recomputes(sample_dir):
    toml = sample_dir / "pipeline.toml"

    def not_allowed(stats):
        return next(s for s in stats["steps"] if s["name"] == "langid")["removed"]["langid:language_not_allowed"]

    before = not_allowed(PipelineRunner(load_pipeline(toml)).run())
    toml.write_text(toml.read_text().replace('allowed = ["en"]', 'allowed = ["en", "fr"]'))
    assert not_allowed(PipelineRunner(load_pipeline(toml)).run()) == before - SMALL.per_language


def test_parquet_output_and_zstd_jsonl(tmp_path, sample_dir):
    for fmt, comp, suffix in (("parquet", "none", ".parquet"), ("jsonl", "zstd", ".jsonl.zst")):
        toml = tmp_path / f"{fmt}.toml"
        toml.write_text(f'[input]\npaths = ["{sample_dir / "corpus"}"]\n[output]\ndir = "out-{fmt}"\n'
                        f'format = "{fmt}"\ncompression = "{comp}"\n[[steps]]\ntype = "gopher_quality"\n'
                        '[[steps]]\ntype = "exact_dedup"\n')
        stats = PipelineRunner(load_pipeline(toml)).run()
        files = sorted((tmp_path / f"out-{fmt}" / "data").glob(f"part-*{suffix}"))
        assert len(files) == SMALL.shards
        assert sum(1 for _ in read_documents([str(f) for f in files])) == stats["output"]["docs"] > 0


@pytest.mark.parametrize(
    "body, message",
    [
        ('[[steps]]\ntype = "sparkle"', "unknown step type 'sparkle'"),
        ('[[steps]]\ntype = "gopher_quality"\nmin_wordz = 3', "no parameter 'min_wordz'"),
        ('[[steps]]\ntype = "gopher_quality"\nmin_words = -1', "min_words=-1"),
        ('[[steps]]\ntype = "c4"\n[[steps]]\ntype = "c4"', "step names must be unique"),
        ('[[steps]]\ntype = "pii"\npreset = "chinese"', "no 'chinese' preset"),
        ('[extra]\nx = 1', "unknown pipeline section 'extra'"),
    ],
)
def test_pipeline_config_errors(tmp_path, body, message):
    toml = tmp_path / "p.toml"
    toml.write_text(f'[input]\npaths = ["x.jsonl"]\n[output]\ndir = "out"\n{body}\n')
    with pytest.raises(ConfigError, match=message):
        load_pipeline(toml)


def test_chinese_preset_and_named_steps(tmp_path):
    toml = tmp_path / "p.toml"
    (tmp_path / "zh.jsonl").write_text(json.dumps({"text": "短文。"}, ensure_ascii=False) + "\n")
    toml.write_text('[input]\npaths = ["zh.jsonl"]\n[output]\ndir = "out"\n'
                    '[[steps]]\ntype = "gopher_quality"\nname = "gopher_zh"\npreset = "chinese"\n')
    stats = PipelineRunner(load_pipeline(toml)).run()
    assert stats["steps"][0]["removed"] == {"gopher_zh:too_few_words": 1}


def test_cli_sample_is_deterministic_and_run_works(tmp_path):
    runner = CliRunner()
    for name in ("a", "b"):
        result = runner.invoke(app, ["sample", "--out", str(tmp_path / name), "--good", "40", "--seed", "5",
                                     "--near-duplicates", "5", "--exact-duplicates", "5", "--pii", "5"])
        assert result.exit_code == 0, result.output
    for rel in ("corpus/part-00000.jsonl", "corpus/part-00001.jsonl.zst", "ground_truth.jsonl"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    result = runner.invoke(app, ["run", str(tmp_path / "a" / "pipeline.toml"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "minhash_dedup" in result.output and (tmp_path / "o" / "stats.json").is_file()
    again = runner.invoke(app, ["run", str(tmp_path / "a" / "pipeline.toml"), "--out", str(tmp_path / "o")])
    assert "finished shards reused" in again.output


def test_cli_user_errors_raise_lmforge_error(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(tmp_path / "missing.toml")])
    assert isinstance(result.exception, LmforgeError) and "does not exist" in str(result.exception)
    result = runner.invoke(app, ["sample", "--out", str(tmp_path / "s"), "--shards", "0"])
    assert isinstance(result.exception, ConfigError) and "shards=0" in str(result.exception)
    for command in ([], ["run"], ["sample"], ["steps"]):
        assert runner.invoke(app, [*command, "--help"]).exit_code == 0
