"""The training loader of a pretraining run: its own packed data alone, or mixed with other sources by weight
(`--mix PATH:WEIGHT`, data/mixing.py). The source `corpus` is the embedded corpus packed with the run's tokenizer:
replaying general data while continuing pretraining on new text keeps old abilities (less catastrophic forgetting).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from lmforge.common.errors import LmforgeError
from lmforge.data.corpus import CorpusConfig, corpus_documents
from lmforge.data.loader import PackedLoader
from lmforge.data.mixing import MixedLoader, parse_mix_entry
from lmforge.data.pack import INDEX_FILE, pack_documents
from lmforge.train.config import TrainConfig
from lmforge.train.corpus_data import pack_config

REPLAY_SOURCE = "corpus"
_KEY_FILE = "replay_key.json"


def mix_sources(cfg: TrainConfig, run_dir: Path, tokenizer, data_dir: Path, log=print) -> list[tuple[str, Path, float]]:
    """(name, packed directory, weight) of each --mix source, packing the embedded corpus for `corpus` once (cached
    in run_dir/replay, rows as long as data_dir's; rank 0 calls this first, the other ranks then find the cache)."""
    out, seq_len = [], json.loads((Path(data_dir) / INDEX_FILE).read_text())["seq_len"]
    for entry in cfg.data.mix:
        name, weight = parse_mix_entry(entry)
        if name == REPLAY_SOURCE:
            path = _replay_data(cfg, run_dir / "replay", tokenizer, seq_len, log)
        else:
            path = Path(name)
            if not (path / INDEX_FILE).is_file():
                raise LmforgeError(f"mix source {name!r} holds no {INDEX_FILE}; run lmforge data pack (or use "
                                   f"'{REPLAY_SOURCE}' for the embedded corpus)")
        out.append((name, path, weight))
    return out


def _replay_data(cfg: TrainConfig, directory: Path, tokenizer, seq_len: int, log) -> Path:
    key = {"documents": cfg.data.corpus_documents, "seed": cfg.data.corpus_seed, "seq_len": seq_len,
           "vocab": len(tokenizer)}
    key_path = directory / _KEY_FILE
    if key_path.is_file() and json.loads(key_path.read_text()) == key and (directory / INDEX_FILE).is_file():
        return directory
    docs = corpus_documents(CorpusConfig(documents=cfg.data.corpus_documents, seed=cfg.data.corpus_seed))
    index = pack_documents(docs, tokenizer, directory, dataclasses.replace(pack_config(cfg), seq_len=seq_len))
    key_path.write_text(json.dumps(key))
    log(f"replay data: {index['splits']['train']['tokens']:,} tokens of the embedded corpus "
        f"({cfg.data.corpus_documents:,} documents)")
    return directory


def train_loader(cfg: TrainConfig, data_dir: Path, sources: list[tuple[str, Path, float]], rank: int = 0,
                 world_size: int = 1) -> PackedLoader | MixedLoader:
    """The run's train loader: its own data, or its own data (the weight the sources leave) mixed with them."""
    batch = cfg.batch.batch_size
    if not sources:
        return PackedLoader(data_dir, "train", batch, rank=rank, world_size=world_size, seed=cfg.seed)
    rest = 1.0 - sum(w for _, _, w in sources)  # TrainConfig checks it is > 0
    names = ["data", *(n for n, _, _ in sources)]
    loaders = [PackedLoader(p, "train", 1, rank=rank, world_size=world_size, seed=cfg.seed + i)
               for i, p in enumerate([data_dir, *(p for _, p, _ in sources)])]
    return MixedLoader(loaders, [rest, *(w for _, _, w in sources)], batch, names=names)
