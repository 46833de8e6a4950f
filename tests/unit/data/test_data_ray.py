"""The Ray engine against the local runner on the same input: identical output files, removed documents,
statistics and report; MinHash LSH partitioned by band over Ray tasks against brute-force band buckets and
the single-process dedup; engine selection from the pipeline file and the CLI. One local Ray for the module."""

import dataclasses
import json
import logging
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lmforge.cli.data_cmd import app
from lmforge.common.errors import ConfigError, LmforgeError
from lmforge.data.minhash import MinHashConfig, MinHashDeduper
from lmforge.data.pipeline import PipelineRunner
from lmforge.data.pipeline_config import PipelineConfig, load_pipeline, parse_pipeline
from lmforge.data.readers import ReaderConfig
from lmforge.data.sample_corpus import SampleConfig, generate, write_sample
from tests.unit.data.corrupt_inputs import BAD_FILES, write_corrupt_folders

# Ray's own DataContext() sets deprecated fields to their defaults and warns about it
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")
SMALL = SampleConfig(seed=5, good=60, per_language=3, spam=12, blocked_urls=3, exact_duplicates=8,
                     near_duplicates=10, pii=8, shards=3)


@pytest.fixture(scope="module")
def ray_local():
    import ray
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    from ray.data.context import DataContext, ShuffleStrategy

    # as RayPipelineRunner.run does, for the functions of ray_dedup tested on their own
    DataContext.get_current().shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ray") / "sample"
    write_sample(out, SMALL)
    return out


def _files(root: Path) -> dict[str, bytes]:
    """Every shard under data/ and removed/ (not the local runner's resume bookkeeping)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("part-*"))
            if p.is_file() and "_work" not in p.parts and not p.name.endswith(".stats.json")}


def _run_both(config, root: Path) -> tuple[dict, dict]:
    from lmforge.data.ray_runner import RayPipelineRunner

    local = PipelineRunner(dataclasses.replace(config, output_dir=str(root / "local"))).run()
    ray_stats = RayPipelineRunner(dataclasses.replace(config, output_dir=str(root / "ray"), engine="ray")).run()
    return local, ray_stats


def _same_run(local: dict, ray_stats: dict, root: Path) -> None:
    assert {**ray_stats, "output_dir": ""} == {**local, "output_dir": ""}
    local_files, ray_files = _files(root / "local"), _files(root / "ray")
    assert ray_files.keys() == local_files.keys() and ray_files == local_files
    assert (root / "ray" / "report.md").read_text() == (root / "local" / "report.md").read_text()
    manifests = [(root / run / "data" / "manifest.json").read_text() for run in ("local", "ray")]
    assert manifests[0] == manifests[1]


def test_ray_output_equals_local_on_sample_corpus(ray_local, sample_dir, tmp_path):
    config = dataclasses.replace(load_pipeline(sample_dir / "pipeline.toml"), keep_removed=True)
    local, ray_stats = _run_both(config, tmp_path)
    _same_run(local, ray_stats, tmp_path)
    by_name = {s["name"]: s for s in ray_stats["steps"]}  # the run did real work at every kind of step
    assert by_name["exact_dedup"]["removed"] and by_name["minhash_dedup"]["removed"]
    assert by_name["pii"]["modified"] > 0 and ray_stats["read"]["malformed_json"] == 1
    assert len(_files(tmp_path / "ray")) == 3 * (1 + 3)  # data + removed of 3 stages, for each of 3 shards


def test_ray_output_equals_local_other_layout(ray_local, sample_dir, tmp_path):
    # near dedup first (with a similarity check), exact after; zstd output; nothing removed kept
    steps = ({"type": "normalize"}, {"type": "minhash_dedup", "min_similarity": 0.7, "bands": 20, "rows": 5},
             {"type": "pii"}, {"type": "exact_dedup", "name": "exact"})
    config = dataclasses.replace(load_pipeline(sample_dir / "pipeline.toml"), steps=steps, compression="zstd",
                                 keep_removed=False)
    local, ray_stats = _run_both(config, tmp_path)
    _same_run(local, ray_stats, tmp_path)
    assert not (tmp_path / "ray" / "removed").exists()
    assert [s["name"] for s in ray_stats["steps"]] == ["normalize", "minhash_dedup", "pii", "exact"]


def test_ray_reports_bad_files_and_lines_as_local_does(ray_local, tmp_path):
    from lmforge.data.ray_runner import RayPipelineRunner

    _, dirty = write_corrupt_folders(tmp_path / "inputs")
    config = PipelineConfig(inputs=(str(dirty),), output_dir="unused", keep_removed=True,
                            steps=({"type": "normalize"}, {"type": "exact_dedup"}))
    (tmp_path / "ray" / "data").mkdir(parents=True)
    (tmp_path / "ray" / "data" / "part-00042.jsonl").write_text('{"text": "from an older, larger run"}\n')
    local, ray_stats = _run_both(config, tmp_path)
    _same_run(local, ray_stats, tmp_path)  # also: the stale shard is gone, as in the local runner
    assert sorted(Path(f["file"]).name for f in ray_stats["read"]["bad_files"]) == sorted(BAD_FILES)
    assert ray_stats["read"]["invalid_unicode"] == 1 and ray_stats["output"]["docs"] == 26
    strict = dataclasses.replace(config, output_dir=str(tmp_path / "strict"), reader=ReaderConfig(strict=True))
    with pytest.raises(LmforgeError, match="bad input .*bad-crc.jsonl.gz: corrupt gzip stream"):
        RayPipelineRunner(strict).run()


def test_minhash_band_tasks_match_band_buckets_and_single_process(ray_local):
    import ray.data

    from lmforge.data.ray_dedup import band_candidates, minhash_removals

    docs, _ = generate(SampleConfig(seed=7, good=80, per_language=2, spam=6, blocked_urls=0, exact_duplicates=6,
                                    near_duplicates=20, pii=0, shards=1))
    texts = [d["text"] for d in docs] + ["", "!!!"]  # two documents without any word: they never match
    step = MinHashDeduper(MinHashConfig(bands=14, rows=8))
    sig = step.signatures(texts)
    empty = step.empty_rows(sig)
    pairs = band_candidates(step, sig, empty, tasks=3)  # 3 tasks bucket 5, 5 and 4 bands
    assert len(pairs) == 14 and sum(len(p) for p in pairs) > 0
    for band, band_pairs in enumerate(pairs):  # the pairs of a band link exactly its buckets of equal rows
        buckets = defaultdict(set)
        for i in np.flatnonzero(~empty):
            buckets[sig[i, band * 8 : (band + 1) * 8].tobytes()].add(int(i))
        expected = {frozenset(b) for b in buckets.values() if len(b) > 1}
        roots = MinHashDeduper.roots_from_pairs(len(sig), [band_pairs])
        found = defaultdict(set)
        for i, r in enumerate(roots.tolist()):
            found[r].add(i)
        assert {frozenset(c) for c in found.values() if len(c) > 1} == expected
    # the shards arrive in any order; removals are keyed by (shard, position) in corpus order
    rows = [{"shard": i % 4, "pos": i // 4, "text": t} for i, t in enumerate(texts)]
    ds = ray.data.from_items(rows[::-1], override_num_blocks=3)
    order = sorted(range(len(texts)), key=lambda i: (i % 4, i // 4))
    single = MinHashDeduper(MinHashConfig(bands=14, rows=8)).find_removals([texts[i] for i in order])
    assert single and minhash_removals(ds, step, tasks=2) == {
        (order[i] % 4, order[i] // 4): reason for i, reason in single.items()}


class _ShortTexts:
    """A stand-in for any other global step (such as perplexity): removals and annotations by index."""

    name = "short"

    def find_removals(self, texts):
        self.lengths = [len(t) for t in texts]
        return {i: "short:below_40" for i, n in enumerate(self.lengths) if n < 40}

    def annotations(self):
        return {i: {"chars": n} for i, n in enumerate(self.lengths)}


def test_other_global_steps_run_on_the_driver_in_corpus_order(ray_local):
    import ray.data

    from lmforge.data.ray_dedup import global_removals

    texts = [f"document {i} " + "word " * (i % 13) for i in range(40)]
    rows = [{"shard": i % 3, "pos": i // 3, "text": t} for i, t in enumerate(texts)]
    removals, notes = global_removals(ray.data.from_items(rows[::-1], override_num_blocks=4), _ShortTexts(), 2)
    keys = sorted((r["shard"], r["pos"]) for r in rows)  # corpus order: shard, then position
    local = _ShortTexts()
    by_key = {(r["shard"], r["pos"]): r["text"] for r in rows}
    expected = {keys[i]: why for i, why in local.find_removals([by_key[k] for k in keys]).items()}
    assert expected and removals == expected
    assert notes == {keys[i]: values for i, values in local.annotations().items()}


def test_engine_from_pipeline_file_and_cli(ray_local, sample_dir, tmp_path):
    data = {"input": {"paths": ["corpus"]}, "output": {"dir": "x"}, "run": {"engine": "ray", "ray_address": "auto"}}
    config = parse_pipeline(data, sample_dir)
    assert config.engine == "ray" and config.ray_address == "auto"
    with pytest.raises(ConfigError, match="engine='spark'"):
        parse_pipeline({**data, "run": {"engine": "spark"}}, sample_dir)
    with pytest.raises(ConfigError, match="workers"):
        parse_pipeline({**data, "run": {"workers": 2}}, sample_dir)
    toml = sample_dir / "pipeline.toml"
    local = CliRunner().invoke(app, ["run", str(toml), "--out", str(tmp_path / "local"), "--quiet"])
    ray_run = CliRunner().invoke(app, ["run", str(toml), "--out", str(tmp_path / "ray"), "--quiet",
                                       "--engine", "ray"])
    assert local.exit_code == 0 and ray_run.exit_code == 0, ray_run.output
    assert _files(tmp_path / "ray") == _files(tmp_path / "local")
    stats = [json.loads((tmp_path / d / "stats.json").read_text()) for d in ("local", "ray")]
    assert [s["steps"] for s in stats[1:]] == [stats[0]["steps"]]
    bad = CliRunner().invoke(app, ["run", str(toml), "--out", str(tmp_path / "bad"), "--engine", "spark"])
    assert isinstance(bad.exception, ConfigError) and "engine='spark'" in str(bad.exception)


def test_missing_ray_is_a_clear_error(monkeypatch):
    from lmforge.data.ray_runner import require_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where it is not installed
    with pytest.raises(LmforgeError, match=r"pip install 'lmforge\[ray\]'"):
        require_ray()


def test_ray_classifier_steps_equal_local(ray_local, sample_dir, tmp_path):
    """The quality_classifier and toxicity steps on Ray workers (each loads the model itself) give the local run's
    output, statistics and removal examples: spam pages scored low, toxic comments removed."""
    from lmforge.data.ngram_classifier import NgramClassifierConfig, train_classifier

    cfg = NgramClassifierConfig(buckets=1 << 14, dim=8, epochs=4)
    for name in ("quality_labels", "toxicity_labels"):
        rows = [json.loads(line) for line in (sample_dir / f"{name}.jsonl").open()]
        train_classifier([r["text"] for r in rows], [r["label"] for r in rows], cfg).save(tmp_path / name)
    base = load_pipeline(sample_dir / "pipeline.toml")
    quality = dataclasses.replace(base, keep_removed=True, steps=(
        {"type": "quality_classifier", "model": str(tmp_path / "quality_labels")},))
    toxic = dataclasses.replace(quality, inputs=(str(sample_dir / "toxicity_heldout.jsonl"),), steps=(
        {"type": "toxicity", "model": str(tmp_path / "toxicity_labels")},))
    for config, reason in ((quality, "quality_classifier:low_score"), (toxic, "toxicity:toxic")):
        root = tmp_path / reason.split(":")[0]
        local, ray_stats = _run_both(config, root)
        _same_run(local, ray_stats, root)
        assert ray_stats["steps"][0]["removed"][reason] > 0 and ray_stats["steps"][0]["examples"][reason]
