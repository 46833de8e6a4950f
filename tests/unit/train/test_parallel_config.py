"""The `parallel` section of the training config (--tp, --pp, --zero, --offload, ...): inconsistent layouts are
one-line user errors before anything is built, and `lmforge calc --tp --pp` counts the parameters one rank of each
layout holds, checked against a model built on the meta device and split by hand as the tensor-parallel plan does."""

import json

import pytest
import torch

from lmforge.calc.calc_layout import layout_params
from lmforge.common.errors import ConfigError, LmforgeError
from lmforge.model import Transformer
from lmforge.model.presets import get_preset
from lmforge.train.config import TrainConfig
from lmforge.train.parallel.config import ParallelConfig
from lmforge.train.parallel.mesh import mesh_sizes
from lmforge.train.parallel.pipeline import stage_layers
from tests.cli_util import assert_user_error, run_cli


@pytest.mark.parametrize(("flags", "needles"), [
    (("--tp", "2"), ("tp=2", "--parallel fsdp")),  # a config error, caught before anything is built
    (("--parallel", "fsdp", "--pp", "2"), ("torchrun",)),  # a layout outside torchrun
])
def test_inconsistent_layouts_are_one_line_cli_errors(tmp_path, flags, needles):
    assert_user_error(run_cli("pretrain", "--out", str(tmp_path / "run"), *flags), *needles)


@pytest.mark.parametrize(("fields", "needles"), [
    ({"parallel": "ddp", "zero": 3}, ("zero=3", "fsdp")),
    ({"parallel": "fsdp", "zero": 1}, ("zero=1", "ddp")),
    ({"parallel": "ddp", "offload": True}, ("offload", "--parallel fsdp")),
    ({"parallel": "fsdp", "pp_schedule": "zigzag"}, ("zigzag", "gpipe, 1f1b")),
    ({"parallel": "fsdp", "tp": 0}, ("tp=0", "positive")),
    ({"parallel": "ddp", "dp_shard": 2}, ("dp_shard", "fsdp")),
])
def test_inconsistent_layouts_are_refused_by_name(fields, needles):
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict(fields)
    for needle in needles:
        assert needle in str(err.value)


def test_parallel_section_keeps_the_flat_parallel_key():
    cfg = TrainConfig.from_dict({"parallel": "fsdp", "tp": 2, "pp": 2, "zero": 2})
    assert (cfg.parallel.parallel, cfg.parallel.tp, cfg.parallel.pp, cfg.parallel.zero_stage) == ("fsdp", 2, 2, 2)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert TrainConfig.from_dict({"parallel": "ddp"}).parallel.zero_stage == 0


def _params_by_hand(cfg, tp: int, pp: int) -> list[float]:
    """Each stage's parameters per rank: what the tp plan splits (attention projections, MLP / expert matrices)
    counts 1/tp, the rest (norms, routers, embedding, head) in full."""
    with torch.device("meta"):
        model = Transformer(cfg)
    split = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    out = []
    for stage in range(pp):
        ids = {f"layers.{i}." for i in stage_layers(cfg.n_layers, stage, pp)}
        total = 0.0
        for name, p in model.named_parameters():
            in_stage = (any(name.startswith(i) for i in ids) or (stage == 0 and name.startswith("embed."))
                        or (stage == pp - 1 and name.startswith(("norm.", "lm_head."))))
            if in_stage:
                total += p.numel() / (tp if name.split(".")[-2] in split or ".experts." in name else 1)
        out.append(total)
    return out


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-moe", "tiny-qwen2"])
def test_calc_layout_counts_what_one_rank_holds(preset, tmp_path):
    cfg = get_preset(preset, tie_embeddings=False, n_layers=3)
    for tp, pp in ((1, 1), (2, 1), (1, 2), (2, 3)):
        assert layout_params(cfg, tp, pp) == pytest.approx(_params_by_hand(cfg, tp, pp)), (tp, pp)
    path = tmp_path / "model.json"
    cfg.save(path)
    done = run_cli("calc", "--model-config", str(path), "--tp", "2", "--pp", "3", "--dp", "2", "--zero-stage", "3",
                   "--dtype", "fp32", "--json")
    assert done.returncode == 0, done.stderr
    layout = json.loads(done.stdout)["layout"]
    assert layout["params_per_stage"] == pytest.approx(_params_by_hand(cfg, 2, 3))
    assert layout["model_states"]["total"] == pytest.approx(16 * max(layout["params_per_stage"]) / 2)  # 4+4+8 B / 2


def test_mesh_sizes_fill_the_world_or_say_what_fits():
    cfg = ParallelConfig(parallel="fsdp", tp=2, pp=2)
    assert mesh_sizes(cfg, 8) == {"pp": 2, "dp_replicate": 1, "dp_shard": 2, "tp": 2}
    with pytest.raises(LmforgeError, match="product is 6"):
        mesh_sizes(cfg, 6)
