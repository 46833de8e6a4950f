"""`train_vlm(VlmConfig)`: the run behind `lmforge vlm` — LLaVA's two-stage recipe (Liu et al., 2023, "Visual
Instruction Tuning"), small: a CLIP tower (given, or trained first by `lmforge clip`), an LLM (SmolLM2 by default),
stage 1 aligns the interface on captions with everything else frozen, stage 2 instruction-tunes on visual questions
(interface, plus LoRA on the LLM with --lora-r, merged at the end). Held-out VQA exact match before / after each
stage; the projector model is saved as a Hugging Face LLaVA directory (formats/hf_llava.py).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from lmforge.common.errors import LmforgeError
from lmforge.common.threads import torch_threads
from lmforge.data.drawn_images import scene_keys, scene_set
from lmforge.data.images import ImageProcessor
from lmforge.formats.hf_llava import save_llava
from lmforge.formats.hf_vision import load_clip
from lmforge.formats.loader import load
from lmforge.generation.generate import greedy_completion
from lmforge.model.resize import resize_token_embeddings
from lmforge.peft.lora import LoraConfig, apply_lora, unload_lora
from lmforge.train.clip_config import ClipTrainConfig
from lmforge.train.config import TrainConfig
from lmforge.train.precision import resolve_device
from lmforge.train.pretrain import seed_everything
from lmforge.train.trainer_checkpoints import check_fresh_start
from lmforge.train.vlm_config import VlmConfig, check_paths
from lmforge.train.vlm_data import add_image_token, caption_examples, exact_match, vqa_examples
from lmforge.train.vlm_model import VisionLanguageModel
from lmforge.train.vlm_stage import mean_answer_loss, run_stage

TEXT_PROBE = "What is the capital of France?"


def check_inputs(cfg: VlmConfig) -> None:
    """Missing paths and runs that would overwrite checkpoints: refused before anything loads."""
    check_paths(cfg)
    if not cfg.resume:
        for stage in cfg.stage_list:
            check_fresh_start(Path(cfg.out) / f"stage{stage}", cfg.fresh)


def vision_tower(cfg: VlmConfig, log):
    """(the frozen CLIP vision tower, its image processor): --vision, or a CLIP trained here (reused on resume)."""
    directory = Path(cfg.vision) if cfg.vision else Path(cfg.out) / "clip" / "model"
    if cfg.vision is None and not (directory / "config.json").is_file():
        from lmforge.train.clip_train import train_clip

        log(f"no --vision: training a CLIP tower first ({cfg.clip_steps} steps, {cfg.clip_image_size}px images, "
            f"{cfg.clip_patch_size}px patches)")
        train_clip(ClipTrainConfig(out=str(directory.parent), steps=cfg.clip_steps, image_size=cfg.clip_image_size,
                                   patch_size=cfg.clip_patch_size, seed=cfg.seed, threads=cfg.threads or 1,
                                   device=cfg.device), log=log)
    tower = load_clip(directory).vision_model
    size = tower.config.image_size
    if size % 2:
        raise LmforgeError(f"the vision tower's image_size={size} must be even (scenes are 2 x 2 grids)")
    return tower, ImageProcessor(shortest_edge=size, crop=(size, size))


def stage_train_config(cfg: VlmConfig, stage: int, steps: int, seq_len: int) -> TrainConfig:
    return TrainConfig.from_dict({
        "out": str(Path(cfg.out) / f"stage{stage}"), "seed": cfg.seed + stage, "resume": cfg.resume,
        "fresh": cfg.fresh, "threads": cfg.threads, "device": cfg.device, "precision": "fp32", "seq_len": seq_len,
        "max_steps": steps, "warmup_steps": min(20, steps // 10), "lr": cfg.lr, "weight_decay": 0.0,
        "batch_size": cfg.batch_size, "checkpoint_every": steps, "log_every": max(1, steps // 50),
        "eval_every": steps, "progress": cfg.progress, "sample_prompts": (), "sample_every": steps,
        "peak_tflops": 1.0, "export_hf": False})


def text_answer(lm, tokenizer, stop_ids: list[int]) -> str:
    """The LLM's greedy reply to TEXT_PROBE, no image: what the frozen (or merged) LLM still says."""
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": TEXT_PROBE}], add_generation_prompt=True,
                                           tokenize=True)
    with torch.no_grad():
        return tokenizer.decode(greedy_completion(lm.eval(), prompt, 24, stop_ids), skip_special_tokens=True).strip()


def train_vlm(cfg: VlmConfig, log=print) -> dict:
    with torch_threads(cfg.threads):
        return _train(cfg, log)


def _train(cfg: VlmConfig, log) -> dict:
    check_inputs(cfg)
    start = time.perf_counter()
    seed_everything(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    tower, processor = vision_tower(cfg, log)
    llm = load(cfg.model)
    tokenizer = llm.tokenizer
    if tokenizer is None:
        raise LmforgeError(f"{cfg.model} has no tokenizer; lmforge vlm needs one with a chat template")
    stop_ids = llm.stop_token_ids()
    device = resolve_device(cfg.device)
    lm = llm.model.to(device)  # on the device from the first (text-only) answer on
    text_before = text_answer(lm, tokenizer, stop_ids)
    image_token_id = add_image_token(tokenizer)
    if image_token_id >= lm.config.vocab_size:  # SmolLM2: 49152 -> 49153; the new row is zero (logit 0, unused)
        resize_token_embeddings(lm, image_token_id + 1)
        with torch.no_grad():
            lm.embed.weight[image_token_id:] = 0
    seed_everything(cfg.seed)
    model = VisionLanguageModel(tower, lm, cfg.interface, image_token_id, qformer_queries=cfg.qformer_queries,
                                cross_every=cfg.cross_every).train().to(device)  # the new interface's weights
    size = tower.config.image_size
    train_scenes = scene_set(cfg.train_images, size, cfg.seed)
    held_scenes = scene_set(cfg.heldout_images, size, cfg.seed + 10_000, exclude=scene_keys(train_scenes))
    train_px, held_px = (processor([s.image for s in scenes]).to(next(model.parameters()).device)
                         for scenes in (train_scenes, held_scenes))
    n = model.tokens_per_image
    captions = caption_examples(tokenizer, train_scenes, image_token_id, n)
    questions = vqa_examples(tokenizer, train_scenes, image_token_id, n, cfg.answer_format)
    held_captions = caption_examples(tokenizer, held_scenes, image_token_id, n)
    held_questions = vqa_examples(tokenizer, held_scenes, image_token_id, n, cfg.answer_format)
    pad_id = lm.config.pad_token_id if lm.config.pad_token_id is not None else 0
    log(f"vlm: {cfg.interface} between a {size}px CLIP tower ({tower.config.n_layers} layers, dim "
        f"{tower.config.dim}) and {cfg.model} ({lm.config.num_params() / 1e6:.0f}M); {n} visual tokens per image; "
        f"{len(train_scenes)} train / {len(held_scenes)} held-out scenes ({len(held_questions)} questions)")

    def evaluate() -> dict[str, float]:
        return {**exact_match(model, held_questions, held_px, stop_ids, tokenizer),
                "caption_loss": mean_answer_loss(model, held_captions, held_px, pad_id)}

    stages: list[dict] = []
    for stage in cfg.stage_list:
        if stage == 2 and cfg.lora_r:
            apply_lora(lm, LoraConfig(r=cfg.lora_r, alpha=2.0 * cfg.lora_r))
        examples = captions if stage == 1 else questions
        steps = cfg.stage1_steps if stage == 1 else cfg.stage2_steps
        seq_len = max(len(e.prompt) + len(e.answer) for e in examples)
        record = run_stage(stage, model, examples, train_px, pad_id, evaluate,
                           stage_train_config(cfg, stage, steps, seq_len), {"lora_": cfg.lora_lr / cfg.lr}, log,
                           before=stages[-1]["after"] if stages else None)
        b, a = record["before"], record["after"]
        log(f"stage {stage} ({'captions' if stage == 1 else 'visual questions'}, {record['params_trained']:,} "
            f"parameters trained): held-out VQA exact match {b['vqa_exact_match']:.1%} -> {a['vqa_exact_match']:.1%}"
            f", caption loss {b['caption_loss']:.3f} -> {a['caption_loss']:.3f} ({record['images_per_s']:.1f} "
            f"images/s)")
        stages.append(record)
        if record["status"] != "finished":
            return {"status": record["status"], "stages": stages}
    if cfg.lora_r and 2 in cfg.stage_list:
        unload_lora(lm, merge=True)
    text_after = text_answer(lm, tokenizer, stop_ids)
    log(f"text only, no image: {TEXT_PROBE!r} -> {text_after!r} (before: {text_before!r})")
    hf = None
    if cfg.interface == "projector":
        hf = out / "hf"
        save_llava(model.cpu().to_llava(), hf)
        tokenizer.save(hf)
        (hf / "preprocessor_config.json").write_text(json.dumps(processor.to_hf(), indent=2) + "\n")
        if llm.generation_config:
            (hf / "generation_config.json").write_text(json.dumps(llm.generation_config, indent=2) + "\n")
    summary = {"config": asdict(cfg), "interface": cfg.interface, "tokens_per_image": n,
               "heldout_questions": len(held_questions), "stages": stages,
               "vqa_exact_match": stages[-1]["after"]["vqa_exact_match"], "text_before": text_before,
               "text_after": text_after, "text_unchanged": text_before == text_after,
               "hf_dir": None if hf is None else str(hf), "elapsed_s": round(time.perf_counter() - start, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
