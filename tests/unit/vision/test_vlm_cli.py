"""`lmforge vlm` on the small pretrained test LLM and a tiny CLIP tower: stage 1 trains the projector only and
lowers the held-out caption loss; stage 2 trains the projector and LoRA; nothing else moves (checked on the saved
LLaVA directory against the inputs, not only by the run's own record); bad input is a one-line error."""

import json

import torch

from lmforge.formats.hf_llava import load_llava
from lmforge.formats.hf_vision import load_clip, save_clip
from lmforge.formats.weights import load_weights_dir
from lmforge.model.vision.clip import CLIPConfig, CLIPModel, TextTowerConfig
from lmforge.model.vision.vit import ViTConfig
from tests.cli_util import assert_user_error, run_cli
from tests.pretrained_tiny import pretrained_tiny_dir


def _tiny_clip(directory):
    vision = ViTConfig(image_size=16, patch_size=4, dim=32, n_layers=2, n_heads=4, ffn_dim=64)
    text = TextTowerConfig(vocab_size=16, max_positions=8, dim=32, n_layers=1, n_heads=4, ffn_dim=64, eos_token_id=1)
    save_clip(CLIPModel(CLIPConfig(text=text, vision=vision, projection_dim=32)), directory)
    return directory


def test_vlm_two_stages_train_only_what_each_stage_may(tmp_path):
    llm_dir, clip_dir, out = pretrained_tiny_dir(), _tiny_clip(tmp_path / "clip"), tmp_path / "run"
    result = run_cli("vlm", "--model", str(llm_dir), "--vision", str(clip_dir), "--out", str(out),
                     "--stage1-steps", "10", "--stage2-steps", "4", "--batch-size", "8", "--lr", "1e-2",
                     "--lora-r", "2", "--train-images", "16", "--heldout-images", "4", "--no-progress",
                     "--threads", "1")
    assert result.returncode == 0, result.stderr
    assert "held-out VQA exact match: stage 1" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    stage1, stage2 = summary["stages"]
    assert stage1["after"]["caption_loss"] < stage1["before"]["caption_loss"] - 0.5, stage1
    assert all(n.startswith("multi_modal_projector.") for n in stage1["trained_names"])
    assert {n.split(".")[0] for n in stage2["trained_names"]} == {"multi_modal_projector", "language_model"}
    assert all("lora_" in n for n in stage2["trained_names"] if n.startswith("language_model."))
    assert stage1["frozen_unchanged"] and stage2["frozen_unchanged"] and stage2["trained_changed"]
    assert summary["tokens_per_image"] == 16
    assert summary["config"]["answer_format"] == "Answer the question using a single word or phrase."  # the default

    # the saved LLaVA directory against the inputs: the tower is the CLIP's as it was; in the LLM only the LoRA
    # targets (attention projections, B A merged) moved; embeddings, MLPs and norms are the original tensors
    llava = load_llava(out / "hf")
    tower = load_clip(clip_dir).vision_model.state_dict()
    for name, value in llava.vision_tower.state_dict().items():
        assert torch.equal(value, tower[name]), name
    original = load_weights_dir(llm_dir)
    saved = {k.removeprefix("language_model."): v for k, v in load_weights_dir(out / "hf").items()
             if k.startswith("language_model.")}
    embed = saved["model.embed_tokens.weight"]  # <image> got the next id: one new row, zero (logit 0, never read)
    assert embed.shape[0] == original["model.embed_tokens.weight"].shape[0] + 1 and not embed[-1].any()
    saved["model.embed_tokens.weight"] = embed[:-1]
    moved = {k for k, v in original.items() if not torch.equal(v, saved[k])}
    assert moved and all(k.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight"))
                         for k in moved), moved


def test_vlm_bad_input_is_one_line(tmp_path):
    assert_user_error(run_cli("vlm", "--stages", "3", "--interface", "projector"), "stages '3'", "1,2")
    assert_user_error(run_cli("vlm", "--vision", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")),
                      "--vision", "nowhere", "lmforge clip")
    assert_user_error(run_cli("vlm", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "o")),
                      "--model", "missing")


def test_scenes_answer_what_is_drawn_and_splits_are_disjoint():
    import numpy as np

    from lmforge.data.drawn_images import COLOURS, PLACES, scene_keys, scene_set

    train = scene_set(40, 32, seed=0)
    held = scene_set(20, 32, seed=0, exclude=scene_keys(train))  # the same seed: every draw repeats, all redrawn
    assert not scene_keys(train) & scene_keys(held) and len(held) == 20
    for scene in train:
        qa = {kind: answer for kind, _, answer in scene.qa()}
        assert qa["count"] == ("one", "two", "three")[len(scene.cells) - 1] and qa["colour"] == scene.colour
        pixels = np.asarray(scene.image).astype(int)
        for cell in range(4):  # a cell holds the colour (within the jitter) exactly when it holds a shape
            block = pixels[(cell // 2) * 16:(cell // 2 + 1) * 16, (cell % 2) * 16:(cell % 2 + 1) * 16]
            near = (np.abs(block - np.array(COLOURS[scene.colour])).max(-1) <= 20).any()
            assert near == (cell in scene.cells), (scene.caption, cell)
        if len(scene.cells) == 1:
            assert qa["where"] == PLACES[scene.cells[0]] and scene.caption.endswith(qa["where"])


def test_visual_questions_ask_for_the_answer_format_captions_do_not():
    """Stage 2's questions carry LLaVA-1.5's response-format line after the question (the default of
    --answer-format), the captions of stage 1 do not, and '' leaves the bare question."""
    from lmforge.data.drawn_images import DESCRIBE, QUESTIONS, scene_set
    from lmforge.formats.loader import load
    from lmforge.train.vlm_config import ANSWER_FORMAT, VlmConfig
    from lmforge.train.vlm_data import add_image_token, caption_examples, vqa_examples

    assert VlmConfig().answer_format == ANSWER_FORMAT == "Answer the question using a single word or phrase."
    tokenizer = load(pretrained_tiny_dir()).tokenizer
    image = add_image_token(tokenizer)
    scenes = scene_set(2, 32, seed=0)

    def user_turns(examples):
        return [tokenizer.decode([i for i in e.prompt if i != image], skip_special_tokens=False) for e in examples]

    asked = user_turns(vqa_examples(tokenizer, scenes, image, 4, ANSWER_FORMAT))
    bare = user_turns(vqa_examples(tokenizer, scenes, image, 4, ""))
    assert len(asked) == len(bare) >= 6
    for with_format, without, (_, question, _) in zip(asked, bare, [qa for s in scenes for qa in s.qa()], strict=True):
        assert f"{question}\n{ANSWER_FORMAT}" in with_format and question in without
        assert ANSWER_FORMAT not in without
    assert all(QUESTIONS["shape"] not in t and ANSWER_FORMAT not in t and DESCRIBE in t
               for t in user_turns(caption_examples(tokenizer, scenes, image, 4)))
