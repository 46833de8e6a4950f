"""Crafted model files and unwritable outputs through `lmforge convert` / `quantize`: every one is a one-line error
(exit 2, no traceback) naming the bad field, found before anything of the claimed size is built; outputs that are
written honour the umask."""

import json
import os
import re
import shutil
import stat
import time

import gguf
import numpy as np
import pytest

from lmforge.common.errors import LmforgeError
from lmforge.formats.hf_dir import save_hf_model
from lmforge.formats.loader import load
from lmforge.model import Transformer, get_preset
from tests.cli_util import assert_user_error, run_cli


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A 2-layer random llama directory written by lmforge itself (config.json + model.safetensors)."""
    path = tmp_path_factory.mktemp("tiny") / "hf"
    save_hf_model(Transformer(get_preset("tiny-llama", vocab_size=64, dim=32, ffn_dim=64, max_seq_len=64)), path)
    return path


def _edited_copy(hf_dir, tmp_path, whole=None, **changes):
    """A copy of hf_dir whose config.json has `changes` applied, or is `whole` instead."""
    path = tmp_path / "edited"
    shutil.copytree(hf_dir, path)
    config = {**json.loads((path / "config.json").read_text()), **changes}
    (path / "config.json").write_text(json.dumps(config if whole is None else whole))
    return path


def test_config_json_that_is_not_an_object(hf_dir, tmp_path):
    bad = _edited_copy(hf_dir, tmp_path, whole=[])
    assert_user_error(run_cli("convert", str(bad), "--out", str(tmp_path / "o")), "config.json", "JSON object")
    assert not (tmp_path / "o").exists()


def test_huge_layer_count_is_refused_before_building(hf_dir, tmp_path):
    bad = _edited_copy(hf_dir, tmp_path, num_hidden_layers=1_000_000)
    start = time.perf_counter()
    result = run_cli("convert", str(bad), "--out", str(tmp_path / "o"), timeout=60)
    assert_user_error(result, "num_hidden_layers=1000000", "2 layer(s)")
    assert time.perf_counter() - start < 30  # main built the model for minutes, 2.5 GB and rising


def test_out_of_range_rope_scaling_is_refused(hf_dir, tmp_path):
    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "attention_factor": -1.0}
    bad = _edited_copy(hf_dir, tmp_path, rope_scaling=yarn, rope_parameters=None)
    assert_user_error(run_cli("convert", str(bad), "--out", str(tmp_path / "o")), "attention_factor", "-1.0")


@pytest.mark.parametrize("changes, needle", [
    ({"hidden_size": "32"}, "hidden_size='32'"),
    ({"num_attention_heads": 0}, "num_attention_heads=0"),
    ({"num_attention_heads": None}, "lacks 'num_attention_heads'"),
    ({"vocab_size": 65}, "vocab_size=65"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": -2.0}, "rope_parameters": None}, "factor"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": "4"}, "rope_parameters": None}, "factor"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": -5},
      "rope_parameters": None}, "original_max_position_embeddings"),
    ({"rope_parameters": [1, 2]}, "rope_parameters"),
])
def test_bad_config_values_name_the_field(hf_dir, tmp_path, changes, needle):
    with pytest.raises(LmforgeError, match=re.escape(needle)):
        load(_edited_copy(hf_dir, tmp_path, **changes))


def test_hand_edited_shard_index_is_a_clear_error(hf_dir, tmp_path):
    bad = _edited_copy(hf_dir, tmp_path)
    (bad / "model.safetensors.index.json").write_text('{"weight_map": ["model.safetensors"]}')
    with pytest.raises(LmforgeError, match="not a valid index"):
        load(bad)


def _write_gguf(path, alignment=None, block_count=2):
    """A minimal llama GGUF (metadata and two small F32 tensors): enough for the header and metadata checks."""
    writer = gguf.GGUFWriter(str(path), "llama")
    for key, value in (("embedding_length", 32), ("block_count", block_count), ("feed_forward_length", 64),
                       ("head_count", 4), ("context_length", 64), ("vocab_size", 64),
                       ("layer_norm_rms_eps", 1e-5)):
        getattr(writer, f"add_{key}")(value)
    if alignment is not None:
        writer.add_uint32("general.alignment", alignment)
    writer.add_tensor("token_embd.weight", np.zeros((64, 32), np.float32))
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(32, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_alignment_zero_is_a_one_line_error(tmp_path):
    path = _write_gguf(tmp_path / "m.gguf", alignment=0)
    assert_user_error(run_cli("convert", str(path), "--out", str(tmp_path / "o")), "general.alignment=0",
                      "power of two")


def test_gguf_block_count_is_checked_against_its_tensors(tmp_path):
    path = _write_gguf(tmp_path / "m.gguf", block_count=1_000_000)
    with pytest.raises(LmforgeError, match=r"llama.block_count=1000000 but the file holds blk.0..blk.0 \(1 layer"):
        load(path)


@pytest.mark.parametrize("alignment", [3, 48])
def test_gguf_alignment_must_be_a_power_of_two(tmp_path, alignment):
    with pytest.raises(LmforgeError, match=f"general.alignment={alignment}"):
        load(_write_gguf(tmp_path / "m.gguf", alignment=alignment))


@pytest.mark.parametrize("command, out, why", [("convert", "under-a-file/sub", "is not a directory"),
                                               ("quantize", "/proc/lmforge-test/out", "cannot create")])
def test_unwritable_out_is_refused_before_loading(hf_dir, tmp_path, command, out, why):
    (tmp_path / "under-a-file").write_text("a regular file")
    target = out if out.startswith("/") else str(tmp_path / out)
    assert_user_error(run_cli(command, str(hf_dir), "--out", target), f"cannot write --out {target}", why)


@pytest.fixture
def umask_027():
    old = os.umask(0o027)  # children (the CLI) inherit it; 027 is no default, so the modes prove it is honoured
    yield
    os.umask(old)


def _modes(root):
    return {p.relative_to(root).as_posix() or ".": stat.S_IMODE(p.stat().st_mode)
            for p in [root, *root.rglob("*")]}


def test_convert_and_quantize_outputs_honour_the_umask(hf_dir, tmp_path, umask_027):
    assert run_cli("convert", str(hf_dir), "--out", str(tmp_path / "c")).returncode == 0
    assert run_cli("quantize", str(tmp_path / "c"), "--bits", "8", "--out", str(tmp_path / "q")).returncode == 0
    for out in ("c", "q"):
        modes = _modes(tmp_path / out)
        assert "model.safetensors" in modes and "config.json" in modes
        for name, mode in modes.items():
            want = 0o750 if (tmp_path / out / name).is_dir() else 0o640
            assert mode == want, (out, name, oct(mode))  # main: 0700 directories, 0600 model.safetensors


@pytest.mark.parametrize("name, text, needle", [
    ("quantization_config.json", "[]", "quantization_config.json must hold a JSON object"),
    ("generation_config.json", "[1]", "generation_config.json must hold a JSON object"),
])
def test_hand_edited_quantized_directory_is_a_clear_error(hf_dir, tmp_path, name, text, needle):
    from lmforge.quant.int_linear import quantize_model

    lm = load(hf_dir)
    quantize_model(lm.model, bits=8)
    lm.save(tmp_path / "q")
    (tmp_path / "q" / name).write_text(text)
    with pytest.raises(LmforgeError, match=needle):  # main: AttributeError for [] (quantization_config)
        load(tmp_path / "q")
