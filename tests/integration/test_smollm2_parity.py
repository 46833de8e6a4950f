"""The real embedded SmolLM2-135M-Instruct GGUF: lmforge equals transformers (fp32) on logits and greedy text."""

import subprocess
import sys

import pytest
import torch

from lmforge.generation.generate import generate
from tests.embedded import transformers_reference

pytestmark = pytest.mark.slow

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Once upon a time, in a small village by the sea, there lived",
    "<|im_start|>user\nName three colours of the rainbow.<|im_end|>\n<|im_start|>assistant\n",
]


@pytest.fixture(scope="module")
def reference():
    return transformers_reference()  # transformers' read of the GGUF (saved once per machine)


@pytest.fixture(scope="module")
def ours():
    from lmforge import load

    return load("smollm2-135m")


def test_tokenizer_agrees(reference, ours):
    _, tok = reference
    for prompt in PROMPTS:
        assert ours.tokenizer.encode(prompt) == tok.encode(prompt)


def test_logits_single_prompts(reference, ours):
    model, tok = reference
    for prompt in PROMPTS:
        ids = torch.tensor([tok.encode(prompt)])
        with torch.no_grad():
            delta = (ours.model(ids) - model(ids).logits).abs().max().item()
        assert delta <= 1e-3, f"{prompt!r}: max |delta| {delta}"


def test_logits_left_padded_batch(reference, ours):
    model, tok = reference
    rows = [tok.encode(p) for p in PROMPTS]
    width = max(map(len, rows))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        expected = model(ids, attention_mask=mask, position_ids=positions).logits
        got = ours.model(ids, attention_mask=mask)
    real = mask.bool()
    assert (got[real] - expected[real]).abs().max().item() <= 1e-3


def test_greedy_32_token_continuations_identical(reference, ours):
    model, tok = reference
    model.generation_config.eos_token_id = None  # run all 32 steps, through end-of-turn tokens too
    for prompt in PROMPTS:
        ids = tok.encode(prompt)
        with torch.no_grad():
            expected = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                      max_new_tokens=32, do_sample=False,
                                      pad_token_id=tok.pad_token_id)[0, len(ids):].tolist()
        assert generate(ours.model, [ids], max_new_tokens=32) == [expected], prompt


def test_cli_chat_answers_paris_and_stops():
    result = subprocess.run(
        [sys.executable, "-m", "lmforge", "generate", "--chat", "What is the capital of France?", "--temperature", "0"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    assert "<|im_end|>" not in result.stdout and "<|im_start|>" not in result.stdout
    assert len(result.stdout.split()) < 60  # it stopped at the end of the turn, not at max_new_tokens


def test_convert_to_hf_dir_reloads_in_transformers(tmp_path, ours):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "smollm2-hf"
    result = subprocess.run([sys.executable, "-m", "lmforge", "convert", "smollm2-135m", "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(out)
    messages = [{"role": "user", "content": "Hi!"}]
    assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        ours.tokenizer.apply_chat_template(messages, add_generation_prompt=True))
    ids = tok.encode(PROMPTS[2])
    assert ids == ours.tokenizer.encode(PROMPTS[2])
    with torch.no_grad():
        assert (model(torch.tensor([ids])).logits - ours.model(torch.tensor([ids]))).abs().max() <= 1e-4
