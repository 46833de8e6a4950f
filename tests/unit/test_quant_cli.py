"""`lmforge quantize --method awq|gptq|smoothquant --calibration FILE` and `lmforge prune` through the real entry point:
the directories they write load back as what they say, and bad input is one line, exit code 2."""

import json

import pytest
import torch

from lmforge.formats.loader import load
from lmforge.quant.awq import ScaledInputLinear
from lmforge.quant.int_linear import Int4Linear
from lmforge.quant.smoothquant import W8A8Linear
from tests.cli_util import assert_user_error, run_cli
from tests.pretrained_tiny import pretrained_tiny_dir


@pytest.fixture(scope="module")
def model_dir():
    return str(pretrained_tiny_dir())


@pytest.fixture(scope="module")
def calibration_file(tmp_path_factory):
    from lmforge.data.corpus import document_text

    path = tmp_path_factory.mktemp("calibration") / "calibration.txt"
    path.write_text("\n\n".join(document_text(5, i)[1] for i in range(40)))
    return path


def test_unknown_method_is_a_one_line_error(tmp_path):
    assert_user_error(run_cli("quantize", "x", "--method", "awq2", "--out", str(tmp_path / "o")),
                      "unknown --method 'awq2'", "rtn, awq, gptq, smoothquant")


def test_missing_and_empty_calibration_files_are_one_line_errors(tmp_path):
    missing = tmp_path / "nope.txt"
    assert_user_error(run_cli("quantize", "x", "--method", "gptq", "--bits", "4", "--calibration", str(missing),
                              "--out", str(tmp_path / "o")), str(missing), "no such file")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n\n")
    assert_user_error(run_cli("quantize", "x", "--method", "awq", "--bits", "4", "--calibration", str(empty),
                              "--out", str(tmp_path / "o")), str(empty), "is empty")
    assert_user_error(run_cli("prune", "x", "--method", "wanda", "--calibration", str(empty),
                              "--out", str(tmp_path / "o")), str(empty), "is empty")


def test_group_size_that_does_not_divide_the_width_is_a_one_line_error(model_dir, tmp_path):
    assert_user_error(run_cli("quantize", model_dir, "--method", "gptq", "--bits", "3", "--group-size", "256",
                              "--out", str(tmp_path / "o")), "group_size 256 does not divide in_features 128")


def test_quantize_cli_methods_write_directories_that_load_as_those_methods(model_dir, calibration_file, tmp_path):
    expected = {"awq": ScaledInputLinear, "gptq": Int4Linear, "smoothquant": W8A8Linear}
    ids = torch.randint(0, 2000, (1, 24))
    with torch.no_grad():
        reference = load(model_dir).model(ids)
    for method, bits in (("awq", "3"), ("gptq", "4"), ("smoothquant", "8")):
        out = tmp_path / method
        result = run_cli("quantize", model_dir, "--method", method, "--bits", bits, "--group-size", "64",
                         "--calibration", str(calibration_file), "--samples", "8", "--out", str(out))
        assert result.returncode == 0, result.stderr
        assert f"calibrated on {calibration_file}" in result.stdout
        assert json.loads((out / "quantization_config.json").read_text())["method"] == method
        model = load(out).model
        assert isinstance(model.layers[2].mlp.gate_proj, expected[method])
        with torch.no_grad():
            agree = (model(ids).argmax(-1) == reference.argmax(-1)).float().mean()
        assert agree > 0.6, (method, agree)  # the quantized model still predicts like the float one


def test_prune_cli_two_four_with_recovery(model_dir, tmp_path):
    out = tmp_path / "pruned"
    result = run_cli("prune", model_dir, "--method", "wanda", "--pattern", "2:4", "--samples", "8",
                     "--recover-steps", "4", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "50.0% of the block linears' weights are zero" in result.stdout
    model = load(out).model
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.startswith("layers."):
            nonzero = (module.weight != 0).reshape(module.weight.shape[0], -1, 4).sum(-1)
            assert nonzero.le(2).all(), name
    assert_user_error(run_cli("prune", model_dir, "--pattern", "3:2", "--out", str(tmp_path / "o")), "N:M")
    assert_user_error(run_cli("prune", model_dir, "--method", "random", "--out", str(tmp_path / "o")),
                      "unknown pruning method 'random'")
