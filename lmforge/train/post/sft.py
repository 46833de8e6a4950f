"""`sft(cfg)`: the run behind `lmforge sft` — supervised fine-tuning (instruction tuning) of a loaded model on
chat conversations (own files or the embedded instruction task) with the loss on assistant tokens only, packed
rows, optional NEFTune noise, in the pretraining Trainer; held-out exact match is measured before and after, and
the run directory gets metrics.jsonl, PNG curves, report.md and a Hugging Face export.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from lmforge.common.errors import LmforgeError
from lmforge.data.tasks.instructions import held_out_prompts, instruction_split, prompt_key
from lmforge.formats.loader import load
from lmforge.peft.lora import LoraConfig, apply_lora, unload_lora
from lmforge.peft.peft_io import save_adapter
from lmforge.quant.int_linear import quantize_model
from lmforge.tokenizer.chat_template import CHATML_TEMPLATE
from lmforge.train.metrics import MetricsLogger, read_metrics
from lmforge.train.post.exact_match import exact_match
from lmforge.train.post.neftune import neftune
from lmforge.train.post.run_log import heldout_warning, write_curves
from lmforge.train.post.sft_config import SFTConfig
from lmforge.train.post.sft_data import read_chat_data
from lmforge.train.post.sft_mask import end_of_turn_id, tokenize_conversation
from lmforge.train.post.sft_mix import read_mix, sft_train_loader
from lmforge.train.post.sft_pack import SFTLoader, build_rows
from lmforge.train.pretrain import seed_everything
from lmforge.train.trainer import Trainer

EVAL_KIND = "sft_eval"  # metrics.jsonl records of the exact-match evaluations


def conversations(cfg: SFTConfig) -> tuple[list, list, list | None]:
    """(train conversations, held-out conversations, held-out task kinds or None) of the run."""
    if not cfg.data.data:
        held = instruction_split("eval", cfg.eval_examples, cfg.data.task_seed)
        seen = held_out_prompts(held)  # a training question identical to a held-out one would leak the answer
        train = [e for e in instruction_split("train", cfg.data.train_examples, cfg.data.task_seed)
                 if prompt_key(e.messages) not in seen]
        return [list(e.messages) for e in train], [list(e.messages) for e in held], [e.kind for e in held]
    convs = read_chat_data(cfg.data.data, cfg.data.format)
    random.Random(cfg.seed).shuffle(convs)
    n_eval = min(cfg.eval_examples, len(convs) // 5)  # at most a fifth of the data is held out
    return convs[n_eval:], convs[:n_eval], None


def tokenize_all(tokenizer, convs: list, cfg: SFTConfig) -> tuple[list, dict]:
    examples, truncated = [], 0
    for messages in convs:
        t = tokenize_conversation(tokenizer, messages, cfg.data.seq_len + 1, cfg.data.truncation)
        if t is not None:
            examples.append(t)
            truncated += t.truncated
    return examples, {"conversations": len(convs), "kept": len(examples), "truncated": truncated,
                      "dropped": len(convs) - len(examples)}


def _chat_tokenizer(lm, name: str):
    tokenizer = lm.tokenizer
    if tokenizer is None:
        raise LmforgeError(f"{name} has no tokenizer (tokenizer.json); SFT needs one with a chat template")
    if tokenizer.chat_template is None:
        if tokenizer.token_to_id("<|im_start|>") is None or tokenizer.token_to_id("<|im_end|>") is None:
            raise LmforgeError(f"{name}'s tokenizer has no chat template and no <|im_start|>/<|im_end|> tokens")
        tokenizer.chat_template = CHATML_TEMPLATE  # saved with the export, so the result chats in ChatML
    return tokenizer


def sft(cfg: SFTConfig, log=print) -> dict:
    """The run directory is created only once the data, the model and the trainer's settings are checked: a run
    that fails before training leaves nothing behind."""
    run_dir = Path(cfg.out)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    train_convs, eval_convs, kinds = conversations(cfg)  # data mistakes surface before the model loads
    mixes = read_mix(cfg)
    lm = load(cfg.model)
    tokenizer, model = _chat_tokenizer(lm, cfg.model), lm.model
    if model.config.max_seq_len < cfg.data.seq_len:
        raise LmforgeError(f"seq_len={cfg.data.seq_len} exceeds the model's context of {model.config.max_seq_len}")
    lora = _apply_lora(model, cfg, log)
    train_examples, train_stats = tokenize_all(tokenizer, train_convs, cfg)
    val_examples, _ = tokenize_all(tokenizer, eval_convs, cfg)
    if not train_examples:
        raise LmforgeError("no training conversation has a supervised (assistant) token within seq_len")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_of_turn_id(tokenizer) or 0
    rows = build_rows(train_examples, cfg.data.seq_len, cfg.data.pack, pad)
    val_rows = build_rows(val_examples, cfg.data.seq_len, cfg.data.pack, pad)
    sources = [(name, build_rows(tokenize_all(tokenizer, convs, cfg)[0], cfg.data.seq_len, cfg.data.pack, pad), w)
               for name, convs, w in mixes]
    log(f"SFT of {cfg.model} ({model.config.num_params() / 1e6:.2f}M): {train_stats['kept']} conversations "
        f"({train_stats['truncated']} truncated, {train_stats['dropped']} dropped) in {len(rows.x)} rows of "
        f"{cfg.data.seq_len} ({'packed' if cfg.data.pack else 'one per row'}, {rows.fill:.0%} filled); "
        f"{len(eval_convs)} held out")
    for name, src, weight in sources:
        log(f"mixed in {name}: {len(src.x)} rows, weight {weight:g} (the run's own data: "
            f"{1 - sum(w for _, _, w in sources):g})")
    cfg = _fit_batch_to_data(cfg, len(rows.x) + sum(len(src.x) for _, src, _ in sources), log)
    train = sft_train_loader(cfg, rows, sources)
    val = SFTLoader(val_rows, min(cfg.batch.batch_size, max(len(val_rows.x), 1)), shuffle=False)
    if (warning := heldout_warning(len(eval_convs), "conversations", "exact match")) is not None:
        log(warning)
    trainer = Trainer(cfg.train_config(), model, train, val, run_dir=run_dir, tokenizer=tokenizer, log=log,
                      label="sft")  # checks its settings before it creates run_dir (metrics.jsonl)
    cfg.save(run_dir / "sft_config.json")

    def evaluate() -> dict:
        with trainer.autocast():
            return exact_match(model.to(trainer.device), tokenizer, eval_convs, kinds, cfg.max_new_tokens)

    before = evaluate()
    log(f"held-out exact match before SFT: {before['exact_match']:.3f} ({len(eval_convs)} conversations)")
    with neftune(model.embed, cfg.neftune_alpha):
        summary = trainer.fit()
    after = evaluate()
    log(f"held-out exact match {before['exact_match']:.3f} -> {after['exact_match']:.3f} after SFT "
        f"({len(eval_convs)} conversations)")
    summary.update(model=cfg.model, exact_match_before=before["exact_match"], exact_match_after=after["exact_match"],
                   by_kind_before=before["by_kind"], by_kind_after=after["by_kind"], samples_after=after["samples"],
                   train_data=train_stats, rows=len(rows.x), pack_fill=rows.fill, eval_examples=len(eval_convs),
                   neftune_alpha=cfg.neftune_alpha, data=cfg.data.data or "embedded instruction task")
    if sources:
        summary["mix"] = train.shares()  # the share of rows each source gave
    _log_exact_match(run_dir, before, after, summary["step"])
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    write_report(run_dir, summary, write_curves(run_dir))
    if summary["status"] == "finished" and lora is not None:
        summary["adapter"] = str(save_adapter(model, lora, run_dir / "adapter", base_model_name=cfg.model))
        if cfg.lora.base_bits:  # a quantized base cannot hold W + BA: the adapter is the result (apply it to the base)
            return summary
        unload_lora(model, merge=True)  # the hf export is the merged model
    if summary["status"] == "finished" and cfg.export_hf:
        lm.save(run_dir / "hf")
        summary["hf"] = str(run_dir / "hf")
    return summary


def _fit_batch_to_data(cfg: SFTConfig, n_rows: int, log) -> SFTConfig:
    """A data set smaller than one batch trains with every row in each batch (a note says so) instead of failing."""
    if 0 < n_rows < cfg.batch.batch_size:
        log(f"note: the training data fills {n_rows} row(s) of {cfg.data.seq_len} tokens, fewer than batch_size="
            f"{cfg.batch.batch_size}; using batch_size={n_rows} (each step sees all of it)")
        return cfg.replace(batch_size=n_rows)
    return cfg


def _apply_lora(model, cfg: SFTConfig, log) -> LoraConfig | None:
    """LoRA (Hu et al., 2021) on the loaded model, over an int8/int4 frozen base when base_bits is set."""
    if not cfg.lora.lora_r:
        return None
    if cfg.lora.base_bits:
        quantize_model(model, bits=cfg.lora.base_bits, group_size=32, skip=("lm_head",))
    knobs = cfg.lora
    lora = LoraConfig(r=knobs.lora_r, alpha=knobs.lora_alpha, dropout=knobs.lora_dropout,
                      target_modules=knobs.lora_targets)
    apply_lora(model, lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(f"LoRA r={lora.r} alpha={lora.alpha} on {', '.join(lora.target_modules)}"
        f"{f' over an int{cfg.lora.base_bits} base' if cfg.lora.base_bits else ''}: {trainable:,} trainable parameters")
    return lora


def _log_exact_match(run_dir: Path, before: dict, after: dict, step: int) -> None:
    """Two records (step 0 and the last step) in metrics.jsonl, replacing those of an earlier attempt."""
    path = run_dir / "metrics.jsonl"
    kept = [r for r in read_metrics(path) if r.get("kind") != EVAL_KIND]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    metrics = MetricsLogger(run_dir)
    for s, result in ((0, before), (step, after)):
        metrics.log({"kind": EVAL_KIND, "step": s, "exact_match": result["exact_match"],
                     **{f"exact_match_{k}": v for k, v in result["by_kind"].items() if k != "all"}})
    metrics.close()


def write_report(run_dir: Path, summary: dict, plots: list[Path]) -> Path:
    kinds = sorted(set(summary["by_kind_before"]) | set(summary["by_kind_after"]))
    data = summary["data"] if isinstance(summary["data"], str) else ", ".join(map(str, summary["data"]))
    val = "-" if summary["val_loss"] is None else f"{summary['val_loss']:.3f}"
    warning = heldout_warning(summary["eval_examples"], "conversations", "exact match")
    lines = [f"# Supervised fine-tuning of {summary['model']}", "",
             f"Data: {data}; {summary['train_data']['kept']} training conversations, "
             f"{summary['eval_examples']} held out. {summary['step']} steps, {summary['tokens']:,} target tokens, "
             f"{summary['elapsed_s']:.0f} s; final held-out loss {val}.", "",
             *([warning, ""] if warning else []),
             "| held-out exact match | before | after |", "| --- | --- | --- |",
             f"| **all** | {summary['exact_match_before']:.3f} | {summary['exact_match_after']:.3f} |"]
    if kinds != ["all"]:
        lines += [f"| {k} | {summary['by_kind_before'].get(k, 0):.3f} | {summary['by_kind_after'].get(k, 0):.3f} |"
                  for k in kinds]
    lines += ["", "Answers after SFT (first held-out conversations):", "",
              "| question | reference | output | ok |", "| --- | --- | --- | --- |"]
    for s in summary["samples_after"]:
        cells = [str(s[k]).replace("|", "\\|").replace("\n", " ")[:80] for k in ("question", "reference", "output")]
        lines.append("| " + " | ".join(cells) + f" | {'yes' if s['correct'] else 'no'} |")
    lines += [""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
