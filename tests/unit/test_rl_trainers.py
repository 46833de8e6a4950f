"""The RL trainers on a tiny random model with a fake generate function (no engine): every option runs a step,
updates the policy, logs finite metrics; rejection sampling keeps the best completion and masks the prompt."""

import copy

import pytest
import torch

from lmforge.model import Transformer, get_preset
from lmforge.train.post.grpo import GRPOConfig, GRPOTrainer
from lmforge.train.post.ppo import PPOConfig, PPOTrainer
from lmforge.train.post.rejection_sampling import best_of_n, sft_batch, sft_step
from lmforge.train.post.rollout import RolloutParams, reference_from_model
from lmforge.train.step import IGNORE_INDEX

VOCAB = 64


class ByteTokenizer:
    """ids are characters' codes modulo the vocabulary: enough for prompts and rewards on text."""

    def encode(self, text, add_special_tokens=False):
        return [ord(c) % VOCAB for c in text]

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(48 + i % 10) for i in ids)  # digits: the reward below counts '7'


def fake_generate(prompts, params: RolloutParams):
    g = torch.Generator().manual_seed(params.seed or 0)
    n = params.max_new_tokens
    return [torch.randint(0, VOCAB, (1 + int(torch.randint(0, n, (1,), generator=g)),), generator=g).tolist()
            for _ in prompts]


def sevens(records, texts):
    return torch.tensor([t.count("7") / max(len(t), 1) for t in texts])


def policy():
    torch.manual_seed(0)
    return Transformer(get_preset("tiny-llama", vocab_size=VOCAB, eos_token_id=0))


RECORDS = [{"prompt": f"Q{i}?"} for i in range(8)]


@pytest.mark.parametrize("options", [dict(), dict(shared_backbone=True, adaptive_kl=True, target_kl=0.1),
                                     dict(whiten_advantages=False, entropy_coef=0.01, ppo_epochs=1)])
def test_ppo_step_updates_the_actor(options):
    actor = policy()
    before = copy.deepcopy(actor.state_dict())
    cfg = PPOConfig(batch_size=8, minibatch_size=4, max_new_tokens=4, **options)
    trainer = PPOTrainer(cfg, actor, reference_from_model(copy.deepcopy(actor)), sevens, fake_generate,
                         ByteTokenizer(), pad_id=0)
    metrics = trainer.step(RECORDS, 0)
    for key in ("reward", "kl", "entropy", "clip_frac", "value_error", "policy_loss", "value_loss", "beta"):
        assert torch.isfinite(torch.tensor(metrics[key])), key
    assert any(not torch.equal(before[k], v) for k, v in actor.state_dict().items())
    metrics = trainer.step(RECORDS, 1)
    assert metrics["kl"] != 0.0  # the actor moved away from the reference
    if options.get("adaptive_kl"):
        assert metrics["beta"] != cfg.beta


@pytest.mark.parametrize("options", [dict(), dict(advantage="drgrpo", loss_agg="constant"),
                                     dict(advantage="rloo", loss_agg="token", eps_high=0.28, iterations=2),
                                     dict(advantage="remax", beta=0.0), dict(dynamic_sampling=True, overlong_buffer=2)])
def test_grpo_step_updates_the_policy(options):
    model = policy()
    before = copy.deepcopy(model.state_dict())
    cfg = GRPOConfig(prompts_per_step=2, group_size=4, minibatch_size=4, max_new_tokens=4, **options)
    reference = None if cfg.beta == 0 else reference_from_model(copy.deepcopy(model))
    trainer = GRPOTrainer(cfg, model, reference, sevens, fake_generate, ByteTokenizer(), pad_id=0)
    metrics = trainer.step(lambda r: RECORDS[2 * r:2 * r + 2], 0)
    assert metrics.get("skipped", 0.0) == 0.0
    for key in ("reward", "loss", "kl_k3", "entropy", "clip_frac", "groups_kept"):
        assert torch.isfinite(torch.tensor(metrics[key])), key
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_best_of_n_keeps_each_prompts_best_and_sft_masks_the_prompt():
    selected = best_of_n(RECORDS[:3], ByteTokenizer(), fake_generate, sevens, n=4,
                         params=RolloutParams(4, seed=5), pad_id=0)
    texts = [ByteTokenizer().decode(c) for c in fake_generate([[1]] * 12, RolloutParams(4, seed=5))]
    rewards = sevens(None, texts).view(3, 4)
    assert selected.best_reward == pytest.approx(float(rewards.max(1).values.mean()))
    assert [sevens(None, [ByteTokenizer().decode(c)])[0] for c in selected.completions] == \
        pytest.approx(rewards.max(1).values.tolist())
    inputs, attention, labels = sft_batch([[5, 6, 7], [8]], [[1, 2], [3, 4, 9]], pad_id=0)
    assert inputs.tolist() == [[5, 6, 7, 1], [8, 3, 4, 0]]
    assert labels.tolist() == [[IGNORE_INDEX, IGNORE_INDEX, 1, 2], [3, 4, 9, IGNORE_INDEX]]
    assert attention.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    model = policy()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = [sft_step(model, optimizer, [[5, 6, 7]], [[1, 2]], pad_id=0) for _ in range(10)]
    assert losses[-1] < losses[0] * 0.5  # the supervised completion becomes likely


def test_reward_from_a_scalar_head_scores_the_last_token_of_prompt_plus_completion():
    from lmforge.train.post.rollout import reward_from_scalar_head
    from lmforge.train.post.value_head import ScalarHead

    head = ScalarHead(policy()).eval()
    tok = ByteTokenizer()
    reward_fn = reward_from_scalar_head(head, tok, pad_id=0, batch_size=2)
    records, texts = [{"prompt": "ab"}, {"prompt": "abcd"}, {"prompt": "x"}], ["c", "efg", "yz"]
    got = reward_fn(records, texts)
    for i, (r, t) in enumerate(zip(records, texts, strict=True)):
        ids = torch.tensor([tok.encode(r["prompt"] + t)])
        alone = head(ids)[0, -1].detach()  # one unpadded sequence: its last position
        assert float(got[i]) == pytest.approx(float(alone), abs=1e-5)


@pytest.mark.parametrize("algo", ["ppo", "grpo-sequence", "grpo-token"])
def test_micro_batches_make_the_update_of_one_minibatch(algo):
    """--grad-accum 2 splits each update's minibatch in two micro-batches; the loss is still the minibatch's mean
    (summed units / their count), so the weights after a step match those of one micro-batch per update."""
    def one_step(grad_accum):
        model = policy()
        if algo == "ppo":
            cfg = PPOConfig(batch_size=8, minibatch_size=4, max_new_tokens=4, critic_lr=1e-3)
            trainer = PPOTrainer(cfg, model, reference_from_model(copy.deepcopy(model)), sevens, fake_generate,
                                 ByteTokenizer(), pad_id=0, grad_accum=grad_accum)
            metrics = trainer.step(RECORDS, 0)
        else:
            cfg = GRPOConfig(prompts_per_step=2, group_size=4, minibatch_size=8, max_new_tokens=4, lr=1e-3,
                             loss_agg=algo.split("-")[1])
            trainer = GRPOTrainer(cfg, model, reference_from_model(copy.deepcopy(model)), sevens, fake_generate,
                                  ByteTokenizer(), pad_id=0, grad_accum=grad_accum)
            metrics = trainer.step(lambda r: RECORDS[2 * r:2 * r + 2], 0)
        return metrics, trainer.module.state_dict()

    (one, weights_one), (two, weights_two) = one_step(1), one_step(2)
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5, abs=1e-6)
    assert one["updates"] == two["updates"] >= 1
    for name, value in weights_one.items():
        torch.testing.assert_close(weights_two[name], value, rtol=1e-4, atol=1e-5)  # Adam moves by ~lr=1e-3
    assert any(not torch.equal(value, policy().state_dict()[name.removeprefix("actor.")])
               for name, value in weights_one.items() if name.removeprefix("actor.") in policy().state_dict())
