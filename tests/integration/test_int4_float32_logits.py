"""The README's int4 question (issue 20, item 15): after `lmforge quantize smollm2-135m --bits 4 --group-size 32`,
greedy decoding follows the float32 logits of the quantized weights. The question is a near tie: the same int4
weights dequantized and run in fp32 give "The" -1.9265 and "L" -1.9295 (nats) as the answer's first token, 0.003
apart, and the quantized layers' bf16 activations move each by ~0.04 (PyTorch's int4 op picks "The", lmforge's int4
kernel "L"). So the test asserts what the layers promise, against that fp32 reference: float32 log-probs within
0.1 nats of it for the top candidates (0.25 with int8 activations, the default where AVX512-VNNI runs: "The" moves
to -2.141, 0.215 from the reference), and a greedy first token from the reference's near-tie set — not which side of
a 0.003-nat tie rounding lands on."""

import json
import os

import pytest
import torch
from torch import nn

import lmforge
from tests.cli_util import run_cli

pytestmark = pytest.mark.slow
QUESTION = "What is the capital of France?"


def fp32_reference(directory) -> dict[int, float]:
    """Log-probs of the answer's first token, every quantized layer replaced by a float32 Linear of its weights."""
    lm = lmforge.load(str(directory))

    def floatify(module: nn.Module) -> None:
        for name, child in module.named_children():
            if hasattr(child, "dequantize") and hasattr(child, "out_features"):
                linear = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None)
                linear.weight.data = child.dequantize().float()
                if child.bias is not None:
                    linear.bias.data = child.bias.float()
                setattr(module, name, linear)
            else:
                floatify(child)

    floatify(lm.model)
    lm.model.float()
    text = lm.tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True,
                                            tokenize=False)
    with torch.no_grad():
        logits = lm.model(torch.tensor([lm.tokenizer.encode(text)]))[0, -1].float()
    return dict(enumerate(torch.log_softmax(logits, -1).tolist()))


def test_int4_smollm2_greedy_follows_the_float32_reference(tmp_path):
    out = tmp_path / "smollm2-int4"
    quantized = run_cli("quantize", "smollm2-135m", "--bits", "4", "--group-size", "32", "--out", str(out), timeout=600)
    assert quantized.returncode == 0, quantized.stderr
    chat = run_cli("generate", "-m", str(out), "--chat", QUESTION, "-t", "0", "-n", "12", "--logprobs", "5", "--json",
                   timeout=600)
    assert chat.returncode == 0, chat.stderr
    first = json.loads(chat.stdout)["logprobs"][0]
    reference = fp32_reference(out)
    best = max(reference.values())
    near_tie = {i for i, lp in reference.items() if lp >= best - 0.1}
    assert first["id"] in near_tie, (first, sorted(near_tie))
    tolerance = 0.1 if os.environ.get("LMFORGE_INT8_ACTIVATIONS") == "0" else 0.25
    for candidate in first["top_logprobs"][:2]:
        want = reference[candidate["id"]]
        assert abs(candidate["logprob"] - want) < tolerance, (candidate, want)
    assert len(near_tie) < 5  # the reference is not flat: "The" / "L" only
