"""User mistakes: one line naming the problem, exit code 2, no traceback — through the real entry point."""

import json
import pickle
import subprocess
import sys

import pytest
import torch

from lmforge.common.errors import LmforgeError
from lmforge.formats.loader import load
from tests.cli_util import assert_user_error, run_cli
from tests.hf_models import tiny_hf_model


def test_missing_path(tmp_path):
    assert_user_error(run_cli("convert", str(tmp_path / "nope.gguf"), "--out", str(tmp_path / "o")), "nope.gguf")


def test_unknown_model_name_lists_valid_ones(tmp_path):
    assert_user_error(run_cli("generate", "hi", "--model", "gpt-17"), "gpt-17", "smollm2-135m")


def test_help_on_every_command():
    for args in (["--help"], ["info", "--help"], ["generate", "--help"], ["convert", "--help"],
                 ["tokenizer", "--help"], ["tokenizer", "train", "--help"], ["tokenizer", "encode", "--help"]):
        result = run_cli(*args)
        assert result.returncode == 0 and "Usage" in result.stdout, args


def test_help_does_not_import_torch():
    """`lmforge --help` and command parsing stay fast: torch, the model and the trainers load when a command runs."""
    code = ("import sys; from lmforge.cli.main import app; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_info_json():
    result = run_cli("info", "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["torch"].startswith("2.13.0") and "smollm2-135m" in facts["presets"]


class _Evil:
    def __reduce__(self):
        return (print, ("this code ran while loading",))


def test_pickle_checkpoint_refused(tmp_path):
    ref = tiny_hf_model("llama", True)
    ref.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with open(tmp_path / "pytorch_model.bin", "wb") as f:
        pickle.dump({"model.embed_tokens.weight": _Evil()}, f)
    with pytest.raises(LmforgeError, match="refusing to load .*pytorch_model.bin"):
        load(tmp_path)
    assert_user_error(run_cli("convert", str(tmp_path), "--out", str(tmp_path / "o")), "refusing", "pickle")


def test_plain_tensor_pickle_is_accepted(tmp_path):
    ref = tiny_hf_model("llama", True)
    ref.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(ref.state_dict(), tmp_path / "pytorch_model.bin")  # loadable with weights_only=True
    ids = torch.randint(0, 256, (1, 5))
    with torch.no_grad():
        assert (load(tmp_path).model(ids) - ref(ids).logits).abs().max() < 1e-4


def test_shape_mismatch_names_the_tensor(tmp_path):
    ref = tiny_hf_model("llama", False)
    ref.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["intermediate_size"] = 96
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert_user_error(run_cli("convert", str(tmp_path), "--out", str(tmp_path / "o")),
                      "shape mismatch", "layers.0.mlp.", "(64, 96)")


def test_unsupported_model_type(tmp_path):
    ref = tiny_hf_model("llama", False)
    ref.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model_type"] = "mamba"
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert_user_error(run_cli("convert", str(tmp_path), "--out", str(tmp_path / "o")), "mamba", "llama")


def test_unsupported_gguf_architecture_and_quant_type(tmp_path):
    import gguf
    import numpy as np

    from tests.unit.test_gguf_import import tiny_model, write_gguf

    writer = gguf.GGUFWriter(str(tmp_path / "mamba.gguf"), "mamba")
    writer.add_block_count(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert_user_error(run_cli("convert", str(tmp_path / "mamba.gguf"), "--out", str(tmp_path / "o")),
                      "'mamba'", "llama")
    blocks = np.zeros((265, 66), dtype=np.uint8)  # IQ2_XXS blocks: a quant type we do not read
    write_gguf(tmp_path / "iq.gguf", tiny_model(), extra={"output.weight": (blocks, gguf.GGMLQuantizationType.IQ2_XXS)})
    assert_user_error(run_cli("convert", str(tmp_path / "iq.gguf"), "--out", str(tmp_path / "o")),
                      "IQ2_XXS", "output.weight")


def test_convert_writes_atomically(tmp_path):
    ref = tiny_hf_model("qwen3", True)
    ref.save_pretrained(tmp_path / "src")
    result = run_cli("convert", str(tmp_path / "src"), "--out", str(tmp_path / "dst"), "--dtype", "bfloat16")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst", "src"]  # no staging directory left behind
    assert json.loads((tmp_path / "dst" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    failed = run_cli("convert", str(tmp_path / "src"), "--out", str(tmp_path / "bad"), "--dtype", "int3")
    assert_user_error(failed, "int3")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst", "src"]
