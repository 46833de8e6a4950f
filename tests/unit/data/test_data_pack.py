"""Tokenize + pack into shards, and the loader: exact content, dtype, split, exact resume, rank split."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from lmforge.cli.data_cmd import app
from lmforge.common.errors import ConfigError, LmforgeError
from lmforge.data.document import Document
from lmforge.data.loader import PackedLoader
from lmforge.data.pack import PackConfig, pack_documents, token_dtype
from lmforge.data.sample_corpus import SampleConfig, generate
from lmforge.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def texts():
    docs, _ = generate(SampleConfig(seed=2, good=60, per_language=2, spam=6, blocked_urls=0, exact_duplicates=0,
                                    near_duplicates=0, pii=0))
    return [d["text"] for d in docs]


@pytest.fixture(scope="module")
def tokenizer(texts, tmp_path_factory):
    tok = train_tokenizer(texts, type="byte-bpe", vocab_size=400)
    path = tmp_path_factory.mktemp("tok")
    tok.save(path)
    return tok, path


def _stream(directory, split):
    index = json.loads((directory / "index.json").read_text())
    rows = [np.fromfile(directory / s["file"], dtype=index["dtype"]).reshape(-1, index["row_len"])
            for s in index["splits"][split]["shards"]]
    rows = np.concatenate(rows)
    return np.concatenate([rows[0], *(r[1:] for r in rows[1:])]), index  # undo the one-token overlap


def test_pack_preserves_the_token_stream(tmp_path, texts, tokenizer):
    tok, _ = tokenizer
    docs = [Document(f"d{i}", t) for i, t in enumerate(texts)]
    index = pack_documents(docs, tok, tmp_path, PackConfig(seq_len=32, val_fraction=0.2, shard_rows=50))
    assert index["dtype"] == "uint16" and index["row_len"] == 33
    eos = tok.token_to_id(tok.eos_token)
    expected = {"train": [], "val": []}
    val_docs = 0
    from lmforge.data.pack import is_validation

    for i, d in enumerate(docs):
        split = "val" if is_validation(d.id, i, 0, 0.2) else "train"
        val_docs += split == "val"
        expected[split] += [*tok.encode(d.text, add_special_tokens=False), eos]
    assert 0 < val_docs < len(docs) and index["splits"]["val"]["documents"] == val_docs
    for split in ("train", "val"):
        stream, _ = _stream(tmp_path, split)
        info = index["splits"][split]
        assert info["tokens"] == len(expected[split])
        assert len(stream) + info["dropped_tokens"] - 1 == len(expected[split])
        assert stream.tolist() == expected[split][: len(stream)]
    assert len(index["splits"]["train"]["shards"]) > 1  # 50 rows per shard


def test_dtype_by_vocab_size():
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32
    with pytest.raises(ConfigError, match="seq_len=0"):
        PackConfig(seq_len=0)


@pytest.fixture()
def packed(tmp_path, texts, tokenizer):
    tok, _ = tokenizer
    pack_documents([Document(str(i), t) for i, t in enumerate(texts)], tok, tmp_path,
                   PackConfig(seq_len=16, val_fraction=0.0, shard_rows=64))
    return tmp_path


def test_loader_batches_are_shifted_windows(packed):
    loader = PackedLoader(packed, batch_size=4, shuffle=False)
    x, y = next(iter(loader))
    assert x.shape == y.shape == (4, 16) and x.dtype == np.int64
    assert (x[:, 1:] == y[:, :-1]).all() and (x[1:, 0] == y[:-1, -1]).all()  # contiguous, overlapping by one


def test_loader_resumes_exactly(packed):
    reference = PackedLoader(packed, batch_size=3, seed=4)
    all_batches = [x.copy() for x, _ in reference] + [x.copy() for x, _ in reference]  # two epochs
    first = PackedLoader(packed, batch_size=3, seed=4)
    it = iter(first)
    for _ in range(5):
        next(it)
    state = first.state_dict()
    resumed = PackedLoader(packed, batch_size=3, seed=4)
    resumed.load_state_dict(state)
    rest = [x.copy() for x, _ in resumed] + [x.copy() for x, _ in resumed]
    assert len(rest) == len(all_batches) - 5
    assert all((a == b).all() for a, b in zip(rest, all_batches[5:], strict=True))
    assert not (all_batches[0] == all_batches[len(reference)]).all()  # a new permutation each epoch
    with pytest.raises(LmforgeError, match="seed=4"):
        PackedLoader(packed, batch_size=3, seed=5).load_state_dict(state)


def test_ranks_split_rows_disjointly(packed):
    seen = []
    for rank in range(3):
        loader = PackedLoader(packed, batch_size=1, rank=rank, world_size=3, seed=1)
        rows = loader.epoch_rows()
        seen.append(set(rows.tolist()))
        assert len(loader) == len(rows) == loader.rows // 3
        in_order = [x[0] for x, _ in PackedLoader(packed, batch_size=1, shuffle=False)]
        assert (next(iter(loader))[0][0] == in_order[rows[0]]).all()  # the batch is the row it claims
    assert not (seen[0] & seen[1]) and not (seen[1] & seen[2]) and not (seen[0] & seen[2])
    with pytest.raises(LmforgeError, match="rank=3"):
        PackedLoader(packed, rank=3, world_size=3)


def test_cli_pack(tmp_path, texts, tokenizer):
    _, tok_dir = tokenizer
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"body": t}) + "\n" for t in texts) + "{bad\n")
    result = CliRunner().invoke(app, ["pack", "--tokenizer", str(tok_dir), "--input", str(corpus), "--out",
                                      str(tmp_path / "p"), "--seq-len", "64", "--text-field", "body"])
    assert result.exit_code == 0, result.output
    assert "skipped 1 malformed" in result.output and (tmp_path / "p" / "index.json").is_file()
    assert len(PackedLoader(tmp_path / "p", batch_size=2)) > 0


def test_pack_output_is_the_same_through_the_plain_encode_batch(tmp_path, texts, tokenizer):
    """Any object with encode_batch packs identically to the fast `tokenizers` path."""
    tok, _ = tokenizer

    class Plain:  # no `.backend`: pack falls back to encode_batch
        eos_token = tok.eos_token
        token_to_id = staticmethod(tok.token_to_id)
        encode_batch = staticmethod(tok.encode_batch)

        def __len__(self):
            return len(tok)

    docs = [Document(f"d{i}", t) for i, t in enumerate(texts)]
    config = PackConfig(seq_len=32, val_fraction=0.2, shard_rows=50)
    pack_documents(docs, tok, tmp_path / "fast", config)
    pack_documents(docs, Plain(), tmp_path / "plain", config)
    for name in sorted(p.name for p in (tmp_path / "fast").iterdir()):
        assert (tmp_path / "fast" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes(), name
