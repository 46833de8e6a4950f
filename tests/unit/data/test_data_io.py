"""Readers and writers: formats, compression, globs, and bad input counted instead of crashing."""

import gzip
import json

import pytest
import zstandard

from lmforge.common.errors import ConfigError, LmforgeError
from lmforge.data.readers import ReaderConfig, ReadStats, expand_inputs, read_documents
from lmforge.data.writers import JsonlWriter, ParquetWriter, open_writer, shard_name

RECORDS = [{"id": f"d{i}", "text": f"document number {i}", "lang": "en"} for i in range(5)]


def _jsonl_bytes(records):
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


@pytest.mark.parametrize("suffix", ["jsonl", "jsonl.gz", "jsonl.zst"])
def test_jsonl_roundtrip_every_compression(tmp_path, suffix):
    data = _jsonl_bytes(RECORDS)
    path = tmp_path / f"x.{suffix}"
    if suffix.endswith("gz"):
        data = gzip.compress(data)
    elif suffix.endswith("zst"):
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    docs = list(read_documents(str(path)))
    assert [d.id for d in docs] == [r["id"] for r in RECORDS]
    assert docs[2].text == "document number 2" and docs[2].meta["lang"] == "en"


def test_malformed_and_undecodable_lines_are_counted(tmp_path):
    path = tmp_path / "bad.jsonl"
    lines = [
        json.dumps({"text": "good one"}).encode(),
        b'{"text": "truncated',
        b"\xff\xfe not utf8 \x80",
        json.dumps({"body": "no text field"}).encode(),
        b"[1, 2, 3]",
        b"",
        json.dumps({"text": "good two"}).encode(),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    stats = ReadStats()
    docs = list(read_documents(str(path), stats=stats))
    assert [d.text for d in docs] == ["good one", "good two"]
    assert (stats.records, stats.malformed_json, stats.undecodable, stats.missing_text) == (2, 1, 1, 2)
    assert docs[0].id == "bad.jsonl:1"  # no id field: file:line


def test_txt_file_and_line_units_and_bad_bytes(tmp_path):
    (tmp_path / "a.txt").write_bytes("first line\nsecond line caf\xc3\xa9\n".encode("latin-1"))
    (tmp_path / "b.txt").write_bytes(b"broken \xff byte\n\nthird\n")
    stats = ReadStats()
    whole = list(read_documents(str(tmp_path), stats=stats))
    assert len(whole) == 2 and "café" in whole[0].text and "\ufffd" in whole[1].text
    assert stats.undecodable == 1
    lines = list(read_documents(str(tmp_path / "*.txt"), ReaderConfig(txt_unit="line")))
    assert [d.text for d in lines] == ["first line", "second line café", "broken \ufffd byte", "third"]


def test_parquet_roundtrip_and_text_field(tmp_path):
    with ParquetWriter(tmp_path / "p.parquet", row_group=2, text_field="content") as w:
        for r in RECORDS:
            w.write({"id": r["id"], "content": r["text"], "lang": "en"})
    docs = list(read_documents(str(tmp_path / "p.parquet"), ReaderConfig(text_field="text", parquet_batch=2)))
    assert [d.text for d in docs] == [r["text"] for r in RECORDS]
    assert json.loads(docs[0].meta["meta"]) == {"lang": "en"}


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_jsonl_writer_is_atomic_and_readable(tmp_path, compression):
    path = tmp_path / shard_name("part-00000", "jsonl", compression)
    with open_writer(path, "jsonl", compression) as w:
        for r in RECORDS:
            w.write(r)
    assert not list(tmp_path.glob("*.tmp"))
    assert [d.id for d in read_documents(str(path))] == [r["id"] for r in RECORDS]
    failed = tmp_path / "failed.jsonl"
    with pytest.raises(RuntimeError), JsonlWriter(failed) as w:
        w.write(RECORDS[0])
        raise RuntimeError("boom")
    assert not failed.exists() and not list(tmp_path.glob("*.tmp"))


def test_streaming_is_lazy(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_bytes(_jsonl_bytes({"text": f"t{i}"} for i in range(10_000)) + b"{oops\n")
    stats = ReadStats()
    it = read_documents(str(path), stats=stats)
    assert next(it).text == "t0" and stats.records == 1  # nothing beyond the first line was parsed


def test_bad_inputs_and_config_are_user_errors(tmp_path):
    with pytest.raises(LmforgeError, match="matches no file"):
        expand_inputs([str(tmp_path / "nothing*.jsonl")])
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(LmforgeError, match="unsupported input"):
        expand_inputs([str(tmp_path / "x.csv")])
    with pytest.raises(ConfigError, match="txt_unit"):
        ReaderConfig(txt_unit="page")
    with pytest.raises(ConfigError, match="compression"):
        shard_name("p", "jsonl", "brotli")
