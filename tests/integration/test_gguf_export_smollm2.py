"""`lmforge convert smollm2-135m --to gguf --type q8_0`: the exported file, read by transformers' GGUF loader, gives
the logits of lmforge's model within Q8_0's quantization error, answers "Paris", and tokenizes like lmforge."""

import pytest
import torch
import transformers

from lmforge.formats.loader import load
from tests.cli_util import run_cli
from tests.integration.test_gguf_smollm2 import TEXTS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "smollm2-q8_0.gguf"
    result = run_cli("convert", "smollm2-135m", "--to", "gguf", "--type", "q8_0", "--out", str(out), timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Q8_0" in result.stdout
    return out


def test_transformers_reads_the_q8_0_export_within_quantization_error(exported):
    ours, back = load("smollm2-135m"), load(exported)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(exported.parent, gguf_file=exported.name,
                                                               dtype=torch.float32).eval()
    chat = ours.tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                              add_generation_prompt=True, tokenize=True)
    ids = torch.tensor([chat])
    with torch.no_grad():
        exact, requantized, hf = ours.model(ids), back.model(ids), theirs(ids).logits
        answer = theirs.generate(ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1]:]
    assert (hf - requantized).abs().max() < 1e-3  # the same Q8_0 weights, dequantized by each side
    error = (hf - exact).abs().max().item()  # Q8_0 of the weights: about 0.6 on logits of magnitude 27
    assert error < 0.05 * exact.abs().max()
    assert (hf.argmax(-1) == exact.argmax(-1)).float().mean() > 0.9
    assert "Paris" in ours.tokenizer.decode(answer.tolist())


def test_exported_tokenizer_round_trips(exported):
    ours, back = load("smollm2-135m").tokenizer, load(exported).tokenizer
    theirs = transformers.AutoTokenizer.from_pretrained(exported.parent, gguf_file=exported.name)
    for text in TEXTS:
        assert back.encode(text) == ours.encode(text), text
        assert theirs.encode(text) == ours.encode(text), text
    assert back.chat_template == ours.chat_template == theirs.chat_template
    assert (back.bos_token_id, back.eos_token_id) == (ours.bos_token_id, ours.eos_token_id)
