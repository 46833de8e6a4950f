"""Weighted mixing of packed sources (data/mixing.py): exact shares, determinism, exact mid-epoch resume."""

import json

import numpy as np
import pytest

from lmforge.common.errors import LmforgeError
from lmforge.data.loader import PackedLoader
from lmforge.data.mixing import MixedLoader, blend_schedule, parse_mix_entry
from lmforge.data.pack import FORMAT, INDEX_FILE


def _source(directory, tag, rows, seq_len=8):
    """A packed directory whose row r of source `tag` holds the tokens tag*1000 + r (so a row names its origin)."""
    directory.mkdir(parents=True)
    data = (tag * 1000 + np.arange(rows)[:, None] + np.zeros((1, seq_len + 1), dtype=np.int64)).astype(np.uint16)
    data.tofile(directory / "train_0.bin")
    split = {"shards": [{"file": "train_0.bin", "rows": rows}], "tokens": rows * (seq_len + 1)}
    index = {"format": FORMAT, "seq_len": seq_len, "row_len": seq_len + 1, "dtype": "uint16",
             "splits": {"train": split, "val": {"shards": [], "tokens": 0}}}
    (directory / INDEX_FILE).write_text(json.dumps(index))
    return directory


@pytest.fixture()
def dirs(tmp_path):
    return [_source(tmp_path / f"s{t}", t, rows) for t, rows in ((1, 50), (2, 7), (3, 23))]


def _mix(dirs, weights=(0.6, 0.1, 0.3), seed=3, batch_size=4):
    return MixedLoader([PackedLoader(d, batch_size=1, seed=seed) for d in dirs], weights, batch_size)


def _rows(loader, batches):
    out = []
    while len(out) < batches:
        for x, _ in loader:
            out.append(x[:, 0].copy())
            if len(out) == batches:
                break
    return np.stack(out)


def test_blend_schedule_shares_are_exact_at_every_prefix():
    weights = np.array([0.5, 0.3, 0.15, 0.05])
    picks = blend_schedule(weights, 2000)
    counts = np.cumsum(np.eye(4, dtype=np.int64)[picks], axis=0)
    expected = np.arange(1, 2001)[:, None] * weights
    assert np.abs(counts - expected).max() < 1.0  # every source within one row of its share, at every n
    assert counts[-1].tolist() == [1000, 600, 300, 100]


def test_mixed_rows_follow_the_weights_and_each_source_its_own_seeded_order(dirs):
    rows = _rows(_mix(dirs), 250).ravel()  # 1000 rows: 20 epochs of the 7-row source
    tags = rows // 1000
    assert [int((tags == t).sum()) for t in (1, 2, 3)] == [600, 100, 300]
    small = rows[tags == 2] - 2000
    first = PackedLoader(dirs[1], batch_size=1, seed=3).epoch_rows()
    assert small[:7].tolist() == first.tolist()  # the small source replays its own permutation epoch by epoch
    assert sorted(small[7:14].tolist()) == list(range(7)) and small[7:14].tolist() != first.tolist()


def test_mix_is_deterministic_given_the_seed(dirs):
    assert np.array_equal(_rows(_mix(dirs), 40), _rows(_mix(dirs), 40))
    assert not np.array_equal(_rows(_mix(dirs), 40), _rows(_mix(dirs, seed=4), 40))


def test_resume_mid_epoch_gives_the_uninterrupted_sequence(dirs):
    reference = _rows(_mix(dirs), 45)  # crosses the mixed epoch (len 20) and many epochs of the small source
    first = _mix(dirs)
    head = _rows(first, 27)
    state = json.loads(json.dumps(first.state_dict()))  # checkpoints store it as JSON
    resumed = _mix(dirs)
    resumed.load_state_dict(state)
    assert np.array_equal(np.concatenate([head, _rows(resumed, 18)]), reference)
    with pytest.raises(LmforgeError, match="weights"):
        _mix(dirs, weights=(0.5, 0.2, 0.3)).load_state_dict(state)


def test_bad_entries_are_one_line_errors(dirs, tmp_path):
    assert parse_mix_entry("C:/data/x:0.25") == ("C:/data/x", 0.25)
    for bad in ("corpus", "corpus:1.5", "corpus:abc", ":0.3", "x:0"):
        with pytest.raises(LmforgeError, match="PATH:WEIGHT"):
            parse_mix_entry(bad)
    with pytest.raises(LmforgeError, match="seq_len"):
        MixedLoader([PackedLoader(dirs[0], batch_size=1), PackedLoader(_source(tmp_path / "o", 9, 5, seq_len=4),
                                                                       batch_size=1)], [0.5, 0.5], 2)
