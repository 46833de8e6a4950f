"""RL post-training pieces against closed forms: GAE against the per-step recursion, GRPO / Dr. GRPO / RLOO /
ReMax advantages against their formulas, k1/k2/k3 against the exact KL of a categorical distribution, the PPO and
GRPO losses on hand-computed values, and the verifiable task's rewards and splits."""

import math
import statistics

import pytest
import torch

from lmforge.common.errors import ConfigError
from lmforge.data.tasks.verifiable import VerifiableTask, follows_format, reward
from lmforge.train.post.advantages import gae, group_advantages, same_reward_groups, whiten
from lmforge.train.post.grpo import GRPOConfig, aggregate, grpo_token_loss, overlong_penalty
from lmforge.train.post.kl import exact_kl_from_logits, k1, k2, k3
from lmforge.train.post.ppo import AdaptiveKLController, PPOConfig, ppo_policy_loss, ppo_value_loss
from lmforge.train.post.rollout import pack


def gae_recursion(rewards, values, mask, gamma, lam):
    """The textbook backward recursion, one row and one step at a time."""
    B, T = rewards.shape
    adv = torch.zeros(B, T)
    for b in range(B):
        steps = [t for t in range(T) if mask[b, t]]
        running = 0.0
        for i in reversed(range(len(steps))):
            t = steps[i]
            next_v = values[b, steps[i + 1]] if i + 1 < len(steps) else 0.0
            delta = rewards[b, t] + gamma * next_v - values[b, t]
            running = delta + gamma * lam * running
            adv[b, t] = running
    return adv


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (0.99, 1.0), (1.0, 0.0)])
def test_gae_matches_the_recursion(gamma, lam):
    g = torch.Generator().manual_seed(1)
    B, T = 5, 12
    rewards, values = torch.randn(B, T, generator=g), torch.randn(B, T, generator=g)
    mask = torch.zeros(B, T)
    for b, (start, end) in enumerate([(0, 12), (3, 9), (5, 6), (2, 12), (7, 11)]):  # a prompt, then a completion
        mask[b, start:end] = 1
    adv, ret = gae(rewards, values, mask, gamma, lam)
    expected = gae_recursion(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(adv, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ret, (expected + values) * mask, atol=1e-5, rtol=1e-5)
    assert (adv[mask == 0] == 0).all()


def test_gae_lambda_one_is_discounted_return_minus_value():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.2, 0.5, 0.7]])
    adv, ret = gae(rewards, values, torch.ones(1, 3), gamma=0.5, lam=1.0)
    torch.testing.assert_close(ret, torch.tensor([[0.25, 0.5, 1.0]]))
    torch.testing.assert_close(adv, torch.tensor([[0.05, 0.0, 0.3]]))


def test_whiten_over_the_mask():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, 0.0, -7.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    out = whiten(x, mask)
    kept = out[mask.bool()]
    assert abs(float(kept.mean())) < 1e-6
    assert abs(float(kept.pow(2).mean()) - 1.0) < 1e-5
    assert (out[~mask.bool()] == 0).all()


def test_group_advantages_match_their_formulas():
    rewards = [1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.2, 0.9]  # two groups of 4
    r = torch.tensor(rewards)
    groups = [rewards[:4], rewards[4:]]
    grpo = [(x - statistics.mean(gr)) / (statistics.stdev(gr) + 1e-4) for gr in groups for x in gr]
    drgrpo = [x - statistics.mean(gr) for gr in groups for x in gr]
    rloo = [x - statistics.mean(gr[:i] + gr[i + 1:]) for gr in groups for i, x in enumerate(gr)]
    remax = [x - base for gr, base in zip(groups, [0.0, 0.9], strict=True) for x in gr]
    torch.testing.assert_close(group_advantages(r, 4, "grpo"), torch.tensor(grpo))
    torch.testing.assert_close(group_advantages(r, 4, "drgrpo"), torch.tensor(drgrpo))
    torch.testing.assert_close(group_advantages(r, 4, "rloo"), torch.tensor(rloo))
    torch.testing.assert_close(group_advantages(r, 4, "remax", baseline=torch.tensor([0.0, 0.9])), torch.tensor(remax))
    assert same_reward_groups(torch.tensor([1.0, 1, 1, 0, 0, 0]), 3).tolist() == [True, True]
    assert same_reward_groups(torch.tensor([1.0, 0, 1]), 3).tolist() == [False]
    with pytest.raises(ValueError):
        group_advantages(r, 3)


def test_kl_estimators_against_the_exact_categorical_kl():
    g = torch.Generator().manual_seed(0)
    p_logits, q_logits = torch.randn(6, generator=g), torch.randn(6, generator=g)
    logp_all, logq_all = torch.log_softmax(p_logits, -1), torch.log_softmax(q_logits, -1)
    exact = float((logp_all.exp() * (logp_all - logq_all)).sum())
    assert exact == pytest.approx(float(exact_kl_from_logits(p_logits, q_logits)), rel=1e-5)
    x = torch.multinomial(logp_all.exp(), 400_000, replacement=True, generator=g)  # samples of pi
    logp, logq = logp_all[x], logq_all[x]
    e1, e2, e3 = k1(logp, logq), k2(logp, logq), k3(logp, logq)
    # unbiased: within 5 standard errors of the exact value
    for est in (e1, e3):
        stderr = float(est.std()) / math.sqrt(len(x))
        assert abs(float(est.mean()) - exact) < 5 * stderr + 1e-4
    assert (e3 >= 0).all() and (e2 >= 0).all()
    assert (e1 < 0).any()  # k1 is unbiased but its samples can be negative; k3 never is
    assert float(e3.std()) < float(e1.std())  # and k3 has the lower variance here (close distributions)
    same = torch.randn(10)
    assert float(k3(same, same).abs().max()) == 0.0 and float(k1(same, same).abs().max()) == 0.0


def test_ppo_losses_on_hand_values():
    logp = torch.tensor([[math.log(1.5), math.log(0.5), 0.0]])
    old = torch.zeros(1, 3)
    adv = torch.tensor([[1.0, 1.0, -2.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    loss, clip_frac = ppo_policy_loss(logp, old, adv, mask, clip_eps=0.2)
    # token 0: ratio 1.5, A=1 -> max(-1.5, -1.2) = -1.2 (clipped); token 1: ratio 0.5 -> max(-0.5, -0.8) = -0.5
    assert float(loss) == pytest.approx((-1.2 - 0.5) / 2)
    assert float(clip_frac) == pytest.approx(0.5)
    values, old_v, returns = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 1.0]])
    # token 0: unclipped (1-2)^2 = 1, clipped V = 0.2 -> (0.2-2)^2 = 3.24; token 1: 1 and 1
    assert float(ppo_value_loss(values, old_v, returns, torch.ones(1, 2), 0.2)) == pytest.approx(0.5 * (3.24 + 1) / 2)


def test_grpo_loss_and_aggregations():
    logp = torch.tensor([[math.log(1.5), math.log(0.5)]])
    loss, clipped = grpo_token_loss(logp, torch.zeros(1, 2), logp, torch.tensor([1.0]), 0.2, 0.28, beta=0.0)
    torch.testing.assert_close(loss, torch.tensor([[-1.28, -0.5]]))  # clip-higher: 1.5 -> 1.28
    assert clipped.tolist() == [[1.0, 0.0]]
    with_kl, _ = grpo_token_loss(logp, logp, torch.zeros(1, 2), torch.tensor([0.0]), 0.2, 0.2, beta=0.5)
    lr = -logp
    torch.testing.assert_close(with_kl, 0.5 * (lr.exp() - 1 - lr))
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert float(aggregate(per_token, mask, "sequence", 4)) == pytest.approx((2.0 + 4.0) / 2)
    assert float(aggregate(per_token, mask, "token", 4)) == pytest.approx(10.0 / 4)
    assert float(aggregate(per_token, mask, "constant", 4)) == pytest.approx((6.0 / 4 + 4.0 / 4) / 2)
    torch.testing.assert_close(overlong_penalty(torch.tensor([4, 6, 7, 8]), 8, 4),
                               torch.tensor([0.0, -0.5, -0.75, -1.0]))
    assert overlong_penalty(torch.tensor([8]), 8, 0).tolist() == [0.0]


def test_adaptive_kl_controller():
    ctl = AdaptiveKLController(0.1, target=2.0, horizon=100)
    assert ctl.update(3.0, 10) == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))  # error clipped to +0.2
    ctl = AdaptiveKLController(0.1, target=2.0, horizon=100)
    assert ctl.update(1.8, 10) == pytest.approx(0.1 * (1 - 0.1 * 10 / 100))
    assert AdaptiveKLController(0.1, None, 100).update(50.0, 10) == 0.1


def test_pack_masks_exactly_the_completion_tokens():
    ids, attention, mask = pack([[5, 6, 7], [8]], [[1, 2], [3, 4, 9]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7, 1, 2], [8, 3, 4, 9, 0]]
    assert attention.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 0]]  # entry t scores ids[t + 1]


def test_verifiable_task_rewards_and_splits():
    task = VerifiableTask(kind="mixed", max_operand=12, seed=3)
    train, held = task.records(200, "train"), task.records(100, "heldout")
    assert task.records(5, "train") == train[:5]  # deterministic
    assert not {r["question"] for r in train} & {r["question"] for r in held}  # disjoint problems
    for r in train[:50]:
        a, op, b = r["question"].split()
        assert r["answer"] == eval(f"{a} {op} {b}")  # noqa: S307 - the check of our own generated digits
        assert r["prompt"] == f"Q: What is {r['question']}?\nA:"
    rec = {"answer": 12}
    assert reward(rec, " 12<|endoftext|>") == 1.0
    assert reward(rec, " 12\nQ: What is") == 1.0
    assert reward(rec, " 13") == 0.0 and reward(rec, " no idea") == 0.0
    assert reward(rec, "\n12") == 0.0  # the answer ends at the first new line
    assert follows_format(" 12<|endoftext|>") and follows_format("12<|im_end|>")
    assert not follows_format(" 12") and not follows_format(" 12\nQ:") and not follows_format(" 12 apples<|im_end|>")
    assert reward(rec, " 12<|endoftext|>", shaping=True) == pytest.approx(1.0)
    assert reward(rec, " 14<|endoftext|>", shaping=True) == pytest.approx(0.2 * 0.8 + 0.2)
    assert reward(rec, " 14\nQ:", shaping=True) == pytest.approx(0.2 * 0.8)
    assert reward(rec, " 40 cats", shaping=True) == 0.0
    with pytest.raises(ConfigError, match="kind"):
        VerifiableTask(kind="div")


def test_configs_reject_bad_values():
    with pytest.raises(ConfigError, match="minibatch_size"):
        PPOConfig(batch_size=4, minibatch_size=8)
    with pytest.raises(ConfigError, match="lam"):
        PPOConfig(lam=1.5)
    with pytest.raises(ConfigError, match="advantage"):
        GRPOConfig(advantage="ppo")
    with pytest.raises(ConfigError, match="loss_agg"):
        GRPOConfig(loss_agg="mean")
    with pytest.raises(ConfigError, match="overlong_buffer"):
        GRPOConfig(max_new_tokens=4, overlong_buffer=4)


def test_distinct_heldout_records():
    task = VerifiableTask(max_operand=9)
    held = task.distinct_records(30, "heldout")
    assert len(held) == task.n_problems("heldout") == len({r["question"] for r in held})
    assert len({r["answer"] for r in held}) >= 8  # spread over the answers, not one residue class


def test_an_empty_split_is_an_error_not_an_endless_draw():
    task = VerifiableTask(kind="mul", max_operand=2)  # 0*0 ... 2*2: every product lands in one split
    empty = next(split for split in ("train", "heldout") if task.n_problems(split) == 0)
    with pytest.raises(ConfigError, match=f"the {empty} split .* holds no problem"):
        task.record(0, empty)
