"""The audit files: stats.json, report.md, and the PNG chart report.md links to (valid PNG, any size of run)."""

import json
import struct

from lmforge.data.audit import StepStats, write_audit
from lmforge.data.pipeline import PipelineRunner
from lmforge.data.pipeline_config import PipelineConfig

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _stats(steps: list[StepStats]) -> dict:
    return {"read": {"files": 1, "records": 10, "bytes": 1000, "malformed_json": 0, "undecodable": 0,
                     "missing_text": 0},
            "steps": [s.to_dict() for s in steps], "output": {"docs": 4, "bytes": 400, "shards": 1},
            "output_dir": "x"}


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_report_links_a_valid_png(tmp_path):
    a, b = StepStats("url_filter"), StepStats("gopher_quality")
    for i in range(10):
        a.record(100, 100 if i < 8 else None, None if i < 8 else "url_filter:blocked_domain")
    for i in range(8):
        b.record(100, 100 if i < 4 else None, None if i < 4 else f"gopher_quality:reason_{i % 2}")
    many = StepStats("many_reasons")  # more reasons than the chart shows: the tail is summed as "other"
    for i in range(30):
        many.record(10, None, f"many_reasons:r{i}")
    write_audit(tmp_path, _stats([a, b, many]))
    data = (tmp_path / "report.png").read_bytes()
    width, height = _png_size(data)
    assert width >= 800 and height >= 300 and len(data) > 5000
    assert "](report.png)" in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "stats.json").read_text())["steps"][0]["name"] == "url_filter"
    assert not list(tmp_path.glob("*.tmp*"))


def test_pipeline_run_writes_the_chart_even_when_nothing_is_removed(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "a", "text": "hello world"}) + "\n")
    PipelineRunner(PipelineConfig(inputs=(str(src),), output_dir=str(tmp_path / "out"),
                                  steps=({"type": "normalize"},))).run()
    assert (tmp_path / "out" / "report.png").read_bytes()[:8] == PNG_MAGIC
    assert "![" in (tmp_path / "out" / "report.md").read_text()
