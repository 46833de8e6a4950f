"""SFT packing (best-fit rows with segment ids, labels shifted inside each conversation), its loader (resumable
cursor), NEFTune (noise of the paper's magnitude in train mode only, hook gone afterwards), SFTConfig validation,
the embedded instruction task (deterministic, answers checkable by recomputation) and one Trainer step on packed
rows equal to the step computed by hand on the separate conversations."""

import re

import numpy as np
import pytest
import torch

from lmforge.common.errors import ConfigError
from lmforge.data.tasks.instructions import EVAL_OFFSET, instruction_example, instruction_split
from lmforge.model import Transformer, get_preset
from lmforge.train.post.neftune import neftune
from lmforge.train.post.sft_config import SFTConfig
from lmforge.train.post.sft_mask import Tokenized
from lmforge.train.post.sft_pack import SFTLoader, best_fit_bins, build_rows
from lmforge.train.step import IGNORE_INDEX, accumulate_gradients


def _example(n, start):
    ids = list(range(start, start + n))
    return Tokenized(ids, [IGNORE_INDEX] * (n // 2) + ids[n // 2:])


def test_best_fit_bins_respect_capacity_and_keep_every_item():
    lengths = [5, 9, 3, 7, 2, 8, 1, 4]
    bins = best_fit_bins(lengths, 10)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 10 for b in bins)
    assert len(bins) == -(-sum(lengths) // 10)  # this instance packs perfectly: 39 tokens in 4 rows


def test_packed_rows_shift_inside_each_conversation():
    examples = [_example(6, 100), _example(4, 200), _example(9, 300)]
    rows = build_rows(examples, seq_len=10, pack=True, pad_id=0)
    for e in examples:  # find each conversation's inputs in some row, with its own shifted labels next to them
        x, y = np.asarray(e.ids[:-1]), np.asarray(e.labels[1:])
        r = next(r for r in range(len(rows.x)) if e.ids[0] in rows.x[r])
        at = int(np.where(rows.x[r] == e.ids[0])[0][0])
        assert (rows.x[r, at:at + len(x)] == x).all() and (rows.y[r, at:at + len(y)] == y).all()
        assert len(set(rows.segments[r, at:at + len(x)].tolist())) == 1
    assert (rows.y[rows.segments == 0] == IGNORE_INDEX).all()
    unpacked = build_rows(examples, seq_len=10, pack=False, pad_id=0)
    assert unpacked.segments is None and len(unpacked.x) == 3


def test_loader_resumes_exactly():
    rows = build_rows([_example(n, 10 * n) for n in range(3, 12)], seq_len=12, pack=False, pad_id=0)
    loader = SFTLoader(rows, batch_size=2, seed=4)
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    rest = [b[0].tolist() for b in it]
    again = SFTLoader(rows, batch_size=2, seed=4)
    again.load_state_dict(state)
    assert [b[0].tolist() for b in again] == rest


def test_trainer_step_on_packed_rows_equals_separate_conversations():
    """accumulate_gradients with (x, y, segment_ids) gives the mean loss over all supervised tokens of the separate
    conversations, and the same gradients."""
    torch.manual_seed(0)
    model = Transformer(get_preset("tiny-llama"))
    gen = torch.Generator().manual_seed(0)
    examples = []
    for n in (9, 14, 6):
        ids = torch.randint(3, 256, (n,), generator=gen).tolist()
        examples.append(Tokenized(ids, [IGNORE_INDEX] * 3 + ids[3:]))
    rows = build_rows(examples, seq_len=32, pack=True, pad_id=0)
    assert len(rows.x) == 1
    batch = tuple(torch.from_numpy(a) for a in (rows.x, rows.y, rows.segments))
    loss, tokens = accumulate_gradients(model, [batch])
    packed_grad = model.embed.weight.grad.clone()
    model.zero_grad()
    separate = [(torch.tensor([e.ids[:-1]]), torch.tensor([e.labels[1:]])) for e in examples]
    loss_ref, tokens_ref = accumulate_gradients(model, separate)
    assert tokens == tokens_ref == sum(len(e.ids) - 3 for e in examples)
    assert loss == pytest.approx(loss_ref, rel=1e-5)
    torch.testing.assert_close(packed_grad, model.embed.weight.grad, rtol=1e-4, atol=1e-6)


def test_neftune_noise_in_train_mode_only():
    torch.manual_seed(0)
    model = Transformer(get_preset("tiny-llama"))
    ids = torch.randint(0, 256, (2, 50))
    clean = model.embed(ids).detach()
    alpha = 5.0
    bound = alpha / (50 * model.config.dim) ** 0.5
    with neftune(model.embed, alpha):
        noisy = model.embed(ids).detach()
        noise = noisy - clean
        assert noise.abs().max() <= bound * (1 + 1e-5)
        assert noise.abs().max() > 0.9 * bound  # uniform on [-bound, bound]: the extremes are reached
        assert abs(float(noise.mean())) < 0.05 * bound
        model.eval()
        assert torch.equal(model.embed(ids), clean)
        model.train()
    assert torch.equal(model.embed(ids), clean)  # hook removed


def _answer(question: str) -> str | None:
    """An independent solver for the arithmetic, upper-case, repeat and count questions."""
    if m := re.fullmatch(r"What is (\d+) ([-+*]) (\d+)\?", question):
        a, op, b = int(m[1]), m[2], int(m[3])
        return str(a + b if op == "+" else a - b if op == "-" else a * b)
    if m := re.fullmatch(r"Write the word '(\w+)' in capital letters\.|Answer in upper case: (\w+)", question):
        return (m[1] or m[2]).upper()
    if m := re.fullmatch(r"Repeat the word '(\w+)' (two|three|four) times\.", question):
        return " ".join([m[1]] * ["two", "three", "four"].index(m[2]) + [m[1]] * 2)
    if m := re.fullmatch(r"List the numbers from (\d+) to (\d+), separated by commas\.", question):
        return ", ".join(str(i) for i in range(int(m[1]), int(m[2]) + 1))
    return None


def test_instruction_task_is_deterministic_and_checkable():
    assert instruction_example(0, 7) == instruction_example(0, 7)
    assert instruction_example(0, 7) != instruction_example(1, 7)
    train, held = instruction_split("train", 300), instruction_split("eval", 100)
    assert held[0] == instruction_example(0, EVAL_OFFSET)
    assert {e.kind for e in train} == {"arithmetic", "fact", "upper", "repeat", "count"}
    checked = 0
    for e in train + held:
        assert e.messages[-1] == {"role": "assistant", "content": e.answer}
        assert e.messages[-2]["role"] == "user"
        if e.kind == "fact":
            assert e.answer in e.messages[-2]["content"]  # stated in the prompt
        else:
            assert _answer(e.messages[-2]["content"]) == e.answer
            checked += 1
    assert checked > 200


@pytest.mark.parametrize("bad", [dict(model=""), dict(max_steps=0), dict(format="csv"), dict(truncation="left"),
                                 dict(lr=0.0), dict(neftune_alpha=-1.0), dict(precision="int8")])
def test_sft_config_rejects_bad_values(bad):
    with pytest.raises(ConfigError):
        SFTConfig.from_dict({"model": "m", **bad})


def test_sft_config_from_toml(tmp_path):
    path = tmp_path / "sft.toml"
    path.write_text('model = "m"\n[schedule]\nmax_steps = 7\n[data]\ndata = ["a.jsonl"]\npack = false\n')
    cfg = SFTConfig.from_toml(path, lr=0.5)
    assert (cfg.schedule.max_steps, cfg.data.data, cfg.data.pack, cfg.optim.lr) == (7, ("a.jsonl",), False, 0.5)
    assert cfg.train_config().schedule.max_steps == 7 and cfg.train_config().optim.lr == 0.5
    with pytest.raises(ConfigError, match="unknown SFTConfig field"):
        SFTConfig.from_toml(path, colour="red")
