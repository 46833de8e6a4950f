"""ModelConfig by sections (issue 22, item 3): attention GQA | MLA, ffn + moe, positions, norms, embeddings, heads.

Config files written by older lmforge (flat keys; tests/assets/legacy_model_configs, saved by commit badbd56's
ModelConfig.save) still load, and a bad switch in one is a one-line error in `lmforge pretrain`; new files are
nested and round-trip; no top-level field serves a single family; lmforge/model has no import cycle (the old
config <-> config_checks circle was an import inside __post_init__, so the check reads every import statement)."""

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge.common.errors import ConfigError
from lmforge.model.config import GQAConfig, MLAConfig, ModelConfig, MoEConfig
from lmforge.model.config_flat import FLAT_KEYS
from lmforge.model.presets import FAMILY_DEFAULTS, PRESETS, get_preset
from tests.cli_util import assert_user_error, run_cli

LEGACY = Path(__file__).parents[1] / "assets" / "legacy_model_configs"
MODEL_DIR = Path(__file__).parents[2] / "lmforge" / "model"
EXPECTED = {
    "tiny-llama": lambda: get_preset("tiny-llama"),
    "tiny-gemma3": lambda: get_preset("tiny-gemma3"),
    "tiny-bert": lambda: get_preset("tiny-bert"),
    "tiny-deepseek-v3": lambda: get_preset("tiny-deepseek-v3"),
    "tiny-moe": lambda: get_preset("tiny-moe"),
    "tiny-mistral-scaled": lambda: get_preset("tiny-mistral", rope_scaling={"rope_type": "linear", "factor": 2.0},
                                              logn_train_len=64),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_flat_config_files_of_older_versions_load_into_sections(name):
    path = LEGACY / f"{name}.json"
    old = json.loads(path.read_text())
    cfg = ModelConfig.load(path)
    assert cfg == EXPECTED[name]()
    flat = json.loads(json.dumps(cfg.to_flat()))
    assert flat == {k: v for k, v in old.items() if k in flat}
    # every old key that still means something keeps its value; the others are the other attention kind's defaults
    left_out = set(old) - set(flat)
    assert left_out == ({"head_dim", "n_kv_heads", "qk_norm"} if cfg.attention.kind == "mla" else
                        {"q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
                         "rope_interleave", "mla_mode"})


@pytest.mark.parametrize("name", PRESETS)
def test_saved_configs_are_nested_and_round_trip(name, tmp_path):
    cfg = get_preset(name)
    cfg.save(tmp_path / "model.json")
    data = json.loads((tmp_path / "model.json").read_text())
    assert data["attention"]["kind"] == cfg.attention.kind
    assert {"ffn", "moe", "positions", "norms", "embeddings", "heads"} <= set(data)
    assert not set(data) & (set(FLAT_KEYS) - {"attention"})  # no flat switch at top level
    assert ModelConfig.load(tmp_path / "model.json") == cfg


def test_no_top_level_field_is_used_by_one_family_only():
    """A switch (not a size or token id) that only one family sets away from its default lives in a section."""
    top = {f.name for f in dataclasses.fields(ModelConfig)}
    default = ModelConfig().to_flat()
    switches = set(FLAT_KEYS).union(*FAMILY_DEFAULTS.values()) - {"family"}
    users: dict[str, set[str]] = {}
    for preset in [*FAMILY_DEFAULTS.values(), *PRESETS.values()]:
        for key, value in preset.items():
            if key in switches and value != default.get(key):
                users.setdefault(key, set()).add(preset["family"])
    single = {key for key, families in users.items() if len(families) == 1}
    assert {"mlm_head", "query_pre_attn_scalar", "kv_lora_rank"} <= single, users
    homes = {key: FLAT_KEYS[key][0] if key in FLAT_KEYS else key for key in single}
    assert all(home in {"attention", "ffn", "moe", "positions", "norms", "embeddings", "heads"}
               for home in homes.values()), homes
    assert top == {"vocab_size", "dim", "n_layers", "n_heads", "ffn_dim", "max_seq_len", "family", "tie_embeddings",
                   "init_std", "bos_token_id", "eos_token_id", "pad_token_id", "attention", "ffn", "moe",
                   "positions", "norms", "embeddings", "heads"}


def _imports(path: Path) -> set[str]:
    """Every lmforge.model module `path` imports, at top level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lmforge.model"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("lmforge.model"))
    return found


def test_model_package_has_no_import_cycle():
    modules = {f"lmforge.model.{p.stem}": p for p in MODEL_DIR.glob("*.py") if p.stem != "__init__"}
    config_modules = sorted(m for m in modules if m.split(".")[-1].startswith(("config", "param_count", "presets")))
    graph = {name: _imports(path) & set(modules) - {name} for name, path in modules.items()}
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                raise AssertionError(f"import cycle: {' -> '.join(trail + [node, nxt])}")
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    # and at run time: each config module imports first, on its own (lmforge unloaded in between)
    script = ("import importlib, sys\nfor m in sys.argv[1:]:\n"
              "    [sys.modules.pop(k) for k in list(sys.modules) if k.startswith('lmforge')]\n"
              "    importlib.import_module(m)\n")
    result = subprocess.run([sys.executable, "-c", script, *config_modules], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_sections_validate_their_own_fields():
    with pytest.raises(ConfigError, match=r"ModelConfig\.attention\.qk_rope_head_dim=7 must be even"):
        MLAConfig(qk_rope_head_dim=7)
    with pytest.raises(ConfigError, match=r"ModelConfig\.moe\.n_experts_per_tok=5 exceeds n_routed_experts=4"):
        MoEConfig(n_routed_experts=4, n_experts_per_tok=5)
    with pytest.raises(ConfigError, match=r"n_kv_heads=3 must be a positive divisor of n_heads=4"):
        ModelConfig(dim=64, n_heads=4, attention=GQAConfig(n_kv_heads=3))
    with pytest.raises(ConfigError, match=r"kv_lora_rank=64 applies to attention='mla', not 'gqa'"):
        ModelConfig.from_flat(dim=64, n_heads=4, kv_lora_rank=64)  # an MLA switch on a GQA model did nothing
    with pytest.raises(ConfigError, match=r"unknown ModelConfig\.attention \(mla\) field\(s\): n_kv_head"):
        ModelConfig.from_dict({"attention": {"kind": "mla", "n_kv_head": 2}})
    with pytest.raises(ConfigError, match=r"ModelConfig\.norms\.eps must be positive, got 0 \(given as norm_eps\)"):
        get_preset("tiny-llama", norm_eps=0)


def test_keyword_api_sections_and_flat_keys_agree():
    mla = ModelConfig(vocab_size=256, dim=64, n_heads=4, attention=MLAConfig(kv_lora_rank=32, qk_rope_head_dim=8))
    assert mla == ModelConfig.from_flat(vocab_size=256, dim=64, n_heads=4, attention="mla", kv_lora_rank=32,
                                        qk_rope_head_dim=8)
    assert mla.resolved_head_dim == mla.rope_dim == 8
    windowed = get_preset("tiny-llama").replace(sliding_window=8)
    assert windowed.attention == GQAConfig(n_kv_heads=2, sliding_window=8)


def test_pretrain_names_a_bad_switch_in_an_old_config_file(tmp_path):
    bad = json.loads((LEGACY / "tiny-llama.json").read_text()) | {"mlp": "relu2"}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    result = run_cli("pretrain", "--out", str(tmp_path / "run"), "--set", f"model_config={tmp_path / 'bad.json'}")
    assert_user_error(result, "ModelConfig.ffn.kind must be one of", "'relu2'", "(given as mlp)")
