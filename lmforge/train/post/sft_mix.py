"""SFT data mixing: the run's own chat data interleaved with other chat files by weight (`--mix FILE:WEIGHT`, the
shape pretraining's `--mix` takes), through the same deterministic, resumable MixedLoader (data/mixing.py,
Megatron-LM's blended datasets), e.g. general instruction data kept in a task-specific SFT against forgetting.
"""

from __future__ import annotations

from lmforge.data.mixing import MixedLoader, parse_mix_entry
from lmforge.train.post.sft_config import SFTConfig
from lmforge.train.post.sft_data import read_chat_data
from lmforge.train.post.sft_pack import SFTLoader, SFTRows


def read_mix(cfg: SFTConfig) -> list[tuple[str, list, float]]:
    """(file, its conversations, weight) of every --mix source, read (and checked) before the model loads."""
    out = []
    for entry in cfg.data.mix:
        path, weight = parse_mix_entry(entry)
        out.append((path, read_chat_data(path, cfg.data.format), weight))
    return out


def sft_train_loader(cfg: SFTConfig, rows: SFTRows, sources: list[tuple[str, SFTRows, float]]):
    """The run's own rows alone (an SFTLoader), or mixed with the sources: the own rows get 1 - the weights, each
    source keeps its own seeded order (seed + i) and repeats when it runs out before the others."""
    if not sources:
        return SFTLoader(rows, cfg.batch.batch_size, seed=cfg.seed)
    loaders = [SFTLoader(r, 1, seed=cfg.seed + i) for i, r in enumerate([rows, *(r for _, r, _ in sources)])]
    weights = [1.0 - sum(w for _, _, w in sources), *(w for _, _, w in sources)]
    return MixedLoader(loaders, weights, cfg.batch.batch_size, names=["data", *(name for name, _, _ in sources)])
