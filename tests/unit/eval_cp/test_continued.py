"""Continued pretraining: new-token rows equal the mean of their old sub-token rows; a continued run lowers
held-out loss on the new text; the result reloads with lmforge.load and transformers."""

import copy

import pytest
import torch

import lmforge
from lmforge.common.errors import ConfigError
from lmforge.train.config import TrainConfig
from lmforge.train.pretrain import pretrain
from lmforge.train.vocab_expand import expand_vocabulary
from tests.hf_models import tiny_hf_model
from tests.tiny_lm import tiny_lm, tiny_tokenizer

NEW = ["hello world", "the mat", "zebra-quokka"]


@pytest.mark.parametrize("tie", [True, False])
def test_new_rows_are_the_mean_of_old_subtoken_rows(tie):
    lm = tiny_lm()
    if not tie:
        lm.model.config = lm.model.config.replace(tie_embeddings=False)
        lm.model.lm_head.weight = torch.nn.Parameter(torch.randn_like(lm.model.embed.weight))
    tok = copy.deepcopy(tiny_tokenizer())
    old_embed, old_head = lm.model.embed.weight.detach().clone(), lm.model.lm_head.weight.detach().clone()
    expected = {t: tok.encode(t, add_special_tokens=False) for t in NEW}  # the OLD tokenizer's pieces
    assert all(len(ids) > 1 for ids in expected.values())
    old_vocab = lm.model.config.vocab_size  # 320 > the tokenizer's 300: new ids land on unused rows first
    pieces = expand_vocabulary(lm.model, tok, NEW)
    assert pieces == expected
    for t, ids in expected.items():
        new_id = tok.token_to_id(t)
        assert new_id >= 300 and tok.encode(t, add_special_tokens=False) == [new_id]
        torch.testing.assert_close(lm.model.embed.weight[new_id], old_embed[ids].mean(0))
        torch.testing.assert_close(lm.model.lm_head.weight[new_id], old_head[ids].mean(0))
    assert lm.model.config.vocab_size == old_vocab
    assert torch.equal(lm.model.embed.weight[:300], old_embed[:300])
    # forcing growth past the model's vocabulary: 25 more tokens than the 20 spare rows
    more = [f"word{i}x" for i in range(25)]
    expected = {t: tok.encode(t, add_special_tokens=False) for t in more}
    expand_vocabulary(lm.model, tok, more)
    assert lm.model.config.vocab_size == len(tok) == lm.model.embed.weight.shape[0]
    last = more[-1]
    torch.testing.assert_close(lm.model.embed.weight[tok.token_to_id(last)], old_embed[expected[last]].mean(0))
    assert (lm.model.lm_head.weight is lm.model.embed.weight) == tie


def test_add_tokens_needs_init_from(tmp_path):
    with pytest.raises(ConfigError, match="init_from"):
        TrainConfig.from_dict({"add_tokens": str(tmp_path / "t.txt")})


@pytest.mark.slow
def test_continued_run_lowers_heldout_loss_and_reloads(tmp_path):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    hf = tiny_hf_model("llama", tie=False, vocab_size=300, max_position_embeddings=128)
    hf.save_pretrained(tmp_path / "init")
    tiny_tokenizer().save(tmp_path / "init")
    paragraphs = [f"the zebra-quokka number {i % 7} sat on the mat. hello world, says zebra-quokka {i % 5}."
                  for i in range(300)]
    (tmp_path / "text.txt").write_text("\n\n".join(paragraphs))
    (tmp_path / "tokens.txt").write_text("zebra-quokka\nhello world\n")
    cfg = TrainConfig.from_dict(dict(out=str(tmp_path / "run"), init_from=str(tmp_path / "init"),
                                     add_tokens=str(tmp_path / "tokens.txt"), train_text=str(tmp_path / "text.txt"),
                                     seq_len=32, batch_size=8, max_steps=30, lr=3e-3, warmup_steps=3,
                                     val_fraction=0.1, eval_every=30, eval_batches=4, sample_every=1000,
                                     checkpoint_every=1000, log_every=10, progress=False, peak_tflops=1.0,
                                     device="cpu", precision="fp32"))
    summary = pretrain(cfg, log=lambda s: None)
    assert summary["status"] == "finished"
    assert summary["val_loss"] < summary["initial_val_loss"] - 1.0, summary
    out = tmp_path / "run" / "hf"
    lm = lmforge.load(out)
    new_id = lm.tokenizer.token_to_id("zebra-quokka")
    assert len(lm.tokenizer) == 302 and new_id >= 300
    assert lm.tokenizer.encode("zebra-quokka", add_special_tokens=False) == [new_id]
    ids = torch.tensor([lm.tokenizer.encode("hello world, says zebra-quokka 3.")])
    ref = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        expected = ref(ids, attention_mask=torch.ones_like(ids)).logits
        got = lm.model.eval()(ids)
    assert ref.config.vocab_size == lm.config.vocab_size == 302
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
