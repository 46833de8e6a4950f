"""`distill(cfg, teacher, dcfg)`: the run behind `lmforge distill` — load the teacher (a run's hf/ directory, a
Hugging Face directory, a .gguf or the embedded model), pack the embedded corpus with the teacher's tokenizer
(or use packed shards made with it), build the student from a preset and train it in the pretraining Trainer
with the distillation loss hook; the held-out KL to the teacher is measured before and after.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from lmforge.common.errors import LmforgeError
from lmforge.data.corpus import CorpusConfig, corpus_documents
from lmforge.data.loader import PackedLoader
from lmforge.data.pack import INDEX_FILE, pack_documents
from lmforge.formats.hf_dir import save_hf_model
from lmforge.formats.loader import load
from lmforge.model import Transformer, get_preset
from lmforge.model.config import ModelConfig
from lmforge.tokenizer import Tokenizer
from lmforge.train.config import TrainConfig
from lmforge.train.corpus_data import pack_config
from lmforge.train.distill import DistillConfig, check_vocab, distill_loss_fn, held_out_kl, save_summary
from lmforge.train.pretrain import seed_everything
from lmforge.train.trainer import Trainer


def teacher_data(cfg: TrainConfig, run_dir: Path, tokenizer: Tokenizer, log=print) -> Path:
    """Packed shards tokenized with the teacher's tokenizer: cfg.data.data_dir, or the embedded corpus packed here."""
    if cfg.data.data_dir is not None:
        return Path(cfg.data.data_dir)
    data_dir, key_path = run_dir / "data", run_dir / "data" / "distill_key.json"
    key = {"documents": cfg.data.corpus_documents, "seed": cfg.data.corpus_seed, "seq_len": cfg.data.seq_len,
           "val_fraction": cfg.data.val_fraction, "vocab": len(tokenizer)}
    if key_path.is_file() and json.loads(key_path.read_text()) == key and (data_dir / INDEX_FILE).is_file():
        return data_dir
    docs = corpus_documents(CorpusConfig(documents=cfg.data.corpus_documents, seed=cfg.data.corpus_seed))
    index = pack_documents(docs, tokenizer, data_dir, pack_config(cfg))
    key_path.write_text(json.dumps(key) + "\n")
    log(f"packed the embedded corpus with the teacher's tokenizer: {index['splits']['train']['tokens']:,} train "
        f"tokens")
    return data_dir


def distill(cfg: TrainConfig, teacher_name: str, dcfg: DistillConfig, log=print) -> dict:
    run_dir = Path(cfg.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    teacher = load(teacher_name)
    tvocab = teacher.config.vocab_size
    if cfg.data.tokenizer_dir is not None:
        tokenizer = Tokenizer.from_dir(cfg.data.tokenizer_dir)
    elif teacher.tokenizer is not None:
        tokenizer = teacher.tokenizer
    else:
        raise LmforgeError(f"the teacher {teacher_name!r} has no tokenizer.json; pass the tokenizer it uses "
                           f"(--tokenizer)")
    check_vocab(tvocab, tokenizer, teacher.tokenizer)
    data_dir = teacher_data(cfg, run_dir, tokenizer, log)
    base = ModelConfig.load(cfg.model_config) if cfg.model_config else get_preset(cfg.preset)
    eos = tokenizer.token_to_id(tokenizer.eos_token) if tokenizer.eos_token else None
    scfg = base.replace(vocab_size=tvocab, max_seq_len=max(base.max_seq_len, cfg.data.seq_len), eos_token_id=eos,
                        bos_token_id=None, pad_token_id=eos)
    seed_everything(cfg.seed)
    student = Transformer(scfg)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    train = PackedLoader(data_dir, "train", cfg.batch.batch_size, rank=rank, world_size=world, seed=cfg.seed)
    val = PackedLoader(data_dir, "val", cfg.batch.batch_size, shuffle=False)
    trainer = Trainer(cfg, student, train, val, run_dir=run_dir, tokenizer=tokenizer, log=log, is_main=rank == 0,
                      loss_fn=distill_loss_fn(teacher.model, dcfg), label="distill")
    teacher.model.to(trainer.device)
    kl_before = held_out_kl(student, teacher.model, val, cfg.logging.eval_batches, dcfg.kind, trainer.device)
    log(f"teacher {teacher_name} ({teacher.config.num_params() / 1e6:.2f}M) -> student "
        f"{scfg.num_params() / 1e6:.2f}M ({cfg.model_config or cfg.preset}); T={dcfg.temperature}, "
        f"{dcfg.kind} KL, alpha={dcfg.alpha}; held-out KL before: {kl_before:.4f} nats/token")
    summary = trainer.fit()
    kl_after = held_out_kl(student, teacher.model, val, cfg.logging.eval_batches, dcfg.kind, trainer.device)
    summary.update(teacher=teacher_name, teacher_params=teacher.config.num_params(), student_params=scfg.num_params(),
                   temperature=dcfg.temperature, kind=dcfg.kind, alpha=dcfg.alpha, kl_before=kl_before,
                   kl_after=kl_after)
    if rank == 0:
        save_summary(run_dir, summary)
        if summary["status"] == "finished" and cfg.export_hf:
            save_hf_model(student, run_dir / "hf")
            tokenizer.save(run_dir / "hf")
    return summary
