"""A short `sft()` run on a tiny random model with its own chat data file (messages format, unpacked rows, NEFTune
on): the run directory gets metrics, curves, report and an export that loads back with the trained weights, the
training loss on the assistant tokens goes down, and the held-out split is taken from the file."""

import json

import torch

from lmforge.formats.loader import LM, load
from lmforge.model import Transformer, get_preset
from lmforge.tokenizer import train_tokenizer
from lmforge.train.checkpoint import latest_valid_checkpoint
from lmforge.train.post.sft import sft
from lmforge.train.post.sft_config import SFTConfig


def test_sft_run_on_own_data(tmp_path):
    convs = [[{"role": "user", "content": f"Say {w}."}, {"role": "assistant", "content": w}]
             for w in ("red", "blue", "green", "pink", "gold") * 8]
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in convs))
    tok = train_tokenizer([m["content"] for c in convs for m in c] * 5, type="byte-bpe", vocab_size=300)
    torch.manual_seed(0)
    model = Transformer(get_preset("tiny-llama", vocab_size=len(tok), max_seq_len=64))
    LM(model, tok, "tiny").save(tmp_path / "base")
    cfg = SFTConfig.from_dict(dict(model=str(tmp_path / "base"), data=(str(data),), out=str(tmp_path / "run"),
                                   max_steps=12, batch_size=4, seq_len=32, pack=False, lr=3e-3, warmup_steps=1,
                                   neftune_alpha=5.0, eval_examples=5, max_new_tokens=4, log_every=1, eval_every=6,
                                   threads=1, device="cpu", precision="fp32", progress=False))
    s = sft(cfg, log=lambda message: None)
    assert s["status"] == "finished" and s["eval_examples"] == 5 and s["train_data"]["kept"] == 35
    run = tmp_path / "run"
    losses = [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
              if r.get("kind") == "train"]
    assert losses[-1] < losses[0]
    assert (run / "report.md").is_file() and (run / "loss.png").is_file() and (run / "exact_match.png").is_file()
    back = load(str(run / "hf"))
    assert back.tokenizer.chat_template is not None
    trained = latest_valid_checkpoint(run / "checkpoints").tensors["model"]  # the Trainer's final weights
    assert trained.keys() <= back.model.state_dict().keys()
    for name, tensor in trained.items():
        torch.testing.assert_close(back.model.state_dict()[name], tensor)
    assert not torch.equal(back.model.embed.weight, model.embed.weight)  # the export is the fine-tuned model
