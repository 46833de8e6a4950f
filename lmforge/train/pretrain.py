"""`pretrain(cfg)`: the whole run behind `lmforge pretrain` — data (embedded corpus or packed shards), a model
from a preset (or, with init_from, a loaded model to continue: continued.py), the Trainer, then the Hugging Face
export, plots and the markdown report in the run directory.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from lmforge.data.loader import PackedLoader
from lmforge.data.mixing import MixedLoader
from lmforge.formats.hf_dir import save_hf_model
from lmforge.formats.mtp_io import save_mtp
from lmforge.model import ModelConfig, Transformer, get_preset
from lmforge.train.config import TrainConfig
from lmforge.train.continued import load_init, prepare_init_data
from lmforge.train.corpus_data import prepare_data
from lmforge.train.distributed import Parallel
from lmforge.train.mix_sources import mix_sources, train_loader
from lmforge.train.objectives import MTPTrainingModel, build_objective
from lmforge.train.plots import write_plots
from lmforge.train.precision import resolve_device
from lmforge.train.report import write_report
from lmforge.train.trainer import Trainer


def base_model_config(cfg: TrainConfig) -> ModelConfig:
    return ModelConfig.load(cfg.model_config) if cfg.model_config else get_preset(cfg.preset)


def model_config(cfg: TrainConfig, tokenizer) -> ModelConfig:
    base = base_model_config(cfg)
    eos = tokenizer.token_to_id(tokenizer.eos_token) if tokenizer.eos_token else None
    return base.replace(vocab_size=len(tokenizer), max_seq_len=max(base.max_seq_len, cfg.data.seq_len),
                        eos_token_id=eos, bos_token_id=None, pad_token_id=eos)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _setup(cfg: TrainConfig, run_dir: Path, log):
    """(model, tokenizer, model config, generation config, data dir, data stats): a new model on the prepared corpus,
    or, for continued pretraining, the init model's own weights and (expanded) tokenizer on its text."""
    if cfg.init_from:
        lm = load_init(cfg, log)
        data_dir, data_stats = prepare_init_data(cfg, run_dir, lm.tokenizer, log)
        return lm.model, lm.tokenizer, lm.config, lm.generation_config, data_dir, data_stats
    encoder = not base_model_config(cfg).attention.causal
    data_dir, tokenizer, data_stats = prepare_data(cfg, run_dir, log, encoder=encoder)
    mcfg = model_config(cfg, tokenizer)
    seed_everything(cfg.seed)  # the initial weights do not depend on whether the data was cached
    return Transformer(mcfg), tokenizer, mcfg, None, data_dir, data_stats


def pretrain(cfg: TrainConfig, log=print) -> dict:
    run_dir = Path(cfg.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    parallel = Parallel(cfg.parallel, resolve_device(cfg.device))
    rank = parallel.rank
    if rank != 0:
        log = _quiet
    seed_everything(cfg.seed)
    if rank == 0:  # rank 0 builds (or finds) the cached corpus and tokenizer; the others wait, then read them
        model, tokenizer, mcfg, generation, data_dir, data_stats = _setup(cfg, run_dir, log)
        sources = mix_sources(cfg, run_dir, tokenizer, data_dir, log)
    parallel.barrier()
    if rank != 0:
        model, tokenizer, mcfg, generation, data_dir, data_stats = _setup(cfg, run_dir, log)
        sources = mix_sources(cfg, run_dir, tokenizer, data_dir, log)
    # each data-parallel rank reads its share of the global batch; the tp / pp ranks of one replica read the same
    train = train_loader(cfg, data_dir, sources, rank=parallel.dp_rank, world_size=parallel.dp_size)  # --mix
    val = PackedLoader(data_dir, "val", cfg.batch.batch_size, shuffle=False)
    if rank == 0:
        cfg.save(run_dir / "train_config.json")
        mcfg.save(run_dir / "model_config.json")
    train_module, objective = build_objective(model, tokenizer, router_bias_rate=cfg.router_bias_rate, seed=cfg.seed,
                                              mlm_probability=cfg.mlm_probability)
    trainer = Trainer(cfg, train_module, train, val, run_dir=run_dir, tokenizer=tokenizer, log=log, is_main=rank == 0,
                      parallel=parallel, objective=objective)
    log(f"model: {mcfg.num_params() / 1e6:.2f}M parameters ({cfg.init_from or cfg.model_config or cfg.preset}), vocab "
        f"{mcfg.vocab_size}, {trainer.precision}; {cfg.schedule.max_steps} steps x "
        f"{cfg.batch.batch_size * cfg.batch.grad_accum} x {cfg.data.seq_len} tokens; objective: "
        f"{', '.join(objective.names)}")
    initial_val = trainer.evaluate() if cfg.init_from and not cfg.resume else None
    summary = trainer.fit()
    if initial_val is not None:
        summary["initial_val_loss"] = initial_val
    summary.update(params=mcfg.num_params(), unigram_entropy=data_stats["unigram_entropy"],
                   data=data_stats, preset=cfg.init_from or cfg.model_config or cfg.preset)
    if isinstance(train, MixedLoader):
        summary["mix"] = train.shares()  # the share of rows each source gave
    mtp = getattr(train_module, "mtp", None)  # the MTP wrapper's modules, exported beside the model (mtp_io.py)
    if parallel.mode == "fsdp" and summary["status"] == "finished" and cfg.export_hf and rank == 0:
        # the export is consolidated from the last (sharded) checkpoint on rank 0 alone: nothing is gathered
        from lmforge.train.sharded_checkpoint import load_model_shards

        plain = build_objective(Transformer(mcfg), tokenizer, seed=cfg.seed)[0]
        load_model_shards(trainer.last_checkpoint, plain)
        model, mtp = (plain.model, plain.mtp) if isinstance(plain, MTPTrainingModel) else (plain, None)
    if rank == 0:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if summary["status"] == "finished" and cfg.export_hf:
            save_hf_model(model, run_dir / "hf", generation)
            if mtp is not None:
                save_mtp(mtp, run_dir / "hf")
            tokenizer.save(run_dir / "hf")
        write_plots(run_dir)
        write_report(run_dir)
    parallel.barrier()  # no rank tears the process group down while another still uses it (gloo would abort)
    parallel.close()
    return summary


def _quiet(message: str) -> None:
    """The log of ranks other than 0: silent (rank 0 speaks for the run)."""
