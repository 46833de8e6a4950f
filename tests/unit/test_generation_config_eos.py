"""A chat model's export names its end-of-turn token as an EOS id, so transformers' generate stops there too."""

import dataclasses
import json

import transformers

from lmforge.formats.loader import load
from tests.pretrained_tiny import pretrained_tiny_dir


def test_chat_export_lists_end_of_turn_as_eos(tmp_path):
    lm = load(pretrained_tiny_dir())
    eos, eot = lm.tokenizer.eos_token_id, lm.tokenizer.token_to_id("<|im_end|>")
    assert eot is not None and eot != eos and lm.tokenizer.chat_template
    lm.save(tmp_path / "chat")
    assert transformers.GenerationConfig.from_pretrained(tmp_path / "chat").eos_token_id == sorted({eos, eot})
    assert load(tmp_path / "chat").stop_token_ids() == sorted({eos, eot})

    plain = dataclasses.replace(lm, tokenizer=None)  # no chat template: EOS alone, as before
    plain.save(tmp_path / "plain")
    assert json.loads((tmp_path / "plain" / "generation_config.json").read_text())["eos_token_id"] == eos
