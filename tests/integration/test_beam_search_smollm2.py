"""Beam search on the real SmolLM2-135M-Instruct (fp32) equals transformers' generate(num_beams=4)."""

import pytest
import torch

from lmforge.generation.beam_search import BeamSearchParams, beam_search
from tests.embedded import transformers_reference

pytestmark = pytest.mark.slow

PROMPTS = [
    "The capital of France is",
    "<|im_start|>user\nName three colours of the rainbow.<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nWhat is 2+2? Answer in one word.<|im_end|>\n<|im_start|>assistant\n",
]
SETTINGS = [(1.0, False), (0.6, True), (-0.5, "never")]


def test_beam_search_equals_transformers_on_smollm2():

    from lmforge import load

    ref, _ = transformers_reference()  # transformers' read of the GGUF (saved once per machine)
    lm = load("smollm2-135m")
    ended = []
    for prompt, (length_penalty, early_stopping) in zip(PROMPTS, SETTINGS, strict=True):
        ids = lm.tokenizer.encode(prompt)
        x = torch.tensor([ids])
        with torch.no_grad():
            expected = ref.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=16, num_beams=4,
                                    do_sample=False, length_penalty=length_penalty, early_stopping=early_stopping,
                                    eos_token_id=2, pad_token_id=2)[0, len(ids):].tolist()
        best = beam_search(lm.model, ids, BeamSearchParams(num_beams=4, max_new_tokens=16, stop_token_ids=[2],
                                                            length_penalty=length_penalty,
                                                            early_stopping=early_stopping))[0]
        assert best.tokens == expected[:len(best.tokens)] and set(expected[len(best.tokens):]) <= {2}, prompt
        ended.append(best.finish_reason)
    assert "stop" in ended  # at least one answer ended on <|im_end|>
