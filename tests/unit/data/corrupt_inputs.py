"""Two input folders for the bad-input tests: `clean/` (good files of every format) and `dirty/` (the same files
plus one damaged file of each kind, and a line with an unpaired surrogate escape in one of the good files)."""

import gzip
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

# file name -> why the run must report it (a substring of the reason)
BAD_FILES = {
    "bad-crc.jsonl.gz": "corrupt gzip stream (CRC check failed",
    "cut.jsonl.gz": "truncated gzip stream",
    "garbage.jsonl.zst": "corrupt zstd stream",
    "cut.jsonl.zst": "truncated zstd stream",
    "junk.parquet": "unreadable parquet file",
}


def _jsonl(records: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def _docs(prefix: str, n: int, words: int = 12, seed: int = 0) -> list[dict]:
    rng = random.Random(f"{prefix}{seed}")
    vocab = ["river", "stone", "quiet", "market", "lantern", "orbit", "meadow", "signal", "copper", "harbor"]
    return [{"id": f"{prefix}{i}", "text": " ".join(rng.choice(vocab) for _ in range(words)) + ".", "n": i}
            for i in range(n)]


def _big_stream(prefix: str) -> bytes:
    """~300 KB of JSONL (several 128 KB zstd blocks), so a truncated copy still decodes its first documents."""
    rng = random.Random(prefix)
    return _jsonl([{"id": f"{prefix}{i}", "text": f"{rng.getrandbits(128):032x}" * 30} for i in range(300)])


def write_corrupt_folders(root: Path) -> tuple[Path, Path]:
    """`root/clean` and `root/dirty`; returns both. Documents repeat across files, so exact dedup has work."""
    good = {
        "a.jsonl": _jsonl(_docs("a", 8)),
        "b.jsonl.gz": gzip.compress(_jsonl(_docs("b", 6) + _docs("a", 3)), mtime=0),  # a0..a2 again: duplicates
        "c.jsonl.zst": zstandard.ZstdCompressor().compress(_jsonl(_docs("c", 7))),
        "e.txt": b"a plain text document of a few words.\n",
    }
    surrogate = _docs("s", 3)
    clean, dirty = root / "clean", root / "dirty"
    for folder in (clean, dirty):
        folder.mkdir(parents=True)
        for name, data in good.items():
            (folder / name).write_bytes(data)
        pq.write_table(pa.table({"id": ["p0", "p1"], "text": ["parquet one.", "parquet two."]}), folder / "d.parquet")
    (clean / "s.jsonl").write_bytes(_jsonl([surrogate[0], surrogate[2]]))
    lines = _jsonl(surrogate).splitlines(keepends=True)  # the middle line's text gets a lone high surrogate
    lines[1] = lines[1].replace(b'"text": "', b'"text": "\\ud800 ')
    (dirty / "s.jsonl").write_bytes(b"".join(lines))
    crc = bytearray(gzip.compress(_jsonl(_docs("g", 5)), mtime=0))
    crc[-8] ^= 0xFF  # the CRC32 of the gzip trailer
    (dirty / "bad-crc.jsonl.gz").write_bytes(bytes(crc))
    stream = gzip.compress(_big_stream("h"), mtime=0)
    (dirty / "cut.jsonl.gz").write_bytes(stream[: len(stream) * 3 // 4])
    (dirty / "garbage.jsonl.zst").write_bytes(b"this is not a zstd frame\n" * 4)
    stream = zstandard.ZstdCompressor().compress(_big_stream("z"))
    (dirty / "cut.jsonl.zst").write_bytes(stream[: len(stream) * 3 // 4])
    (dirty / "junk.parquet").write_bytes(b"PAR1" + b"\x00junk" * 20)
    return clean, dirty
