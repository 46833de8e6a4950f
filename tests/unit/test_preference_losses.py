"""DPO / cDPO / IPO / SimPO / ORPO against their paper formulas evaluated by hand with math.log / math.exp on
hand-picked log-probabilities, and the sign of each gradient (raise the chosen, lower the rejected)."""

import math

import pytest
import torch

from lmforge.train.post.preference_losses import (
    cdpo_loss,
    dpo_loss,
    ipo_loss,
    log_odds,
    orpo_loss,
    preference_loss,
    simpo_loss,
)

# two pairs: summed completion log-probs of the policy and the reference, and completion lengths
PC, PR, RC, RR = [-4.0, -7.5], [-6.0, -5.0], [-5.0, -7.0], [-5.5, -6.0]
LC, LR = [4.0, 5.0], [6.0, 2.0]


def t(values, grad=False):
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


def log_sigmoid(x):
    return -math.log(1 + math.exp(-x))


def h(i):
    return (PC[i] - RC[i]) - (PR[i] - RR[i])


def test_dpo_closed_form():
    beta = 0.5
    out = dpo_loss(t(PC), t(PR), t(RC), t(RR), beta)
    expected = sum(-log_sigmoid(beta * h(i)) for i in range(2)) / 2
    assert float(out.loss) == pytest.approx(expected, rel=1e-12)
    assert out.chosen_rewards.tolist() == pytest.approx([beta * (PC[i] - RC[i]) for i in range(2)])
    assert out.margins.tolist() == pytest.approx([beta * h(i) for i in range(2)])
    assert out.stats()["reward_accuracy"] == pytest.approx(sum(h(i) > 0 for i in range(2)) / 2)


def test_cdpo_closed_form_and_reduces_to_dpo():
    beta, eps = 0.3, 0.2
    out = cdpo_loss(t(PC), t(PR), t(RC), t(RR), beta, eps)
    expected = sum((1 - eps) * -log_sigmoid(beta * h(i)) + eps * -log_sigmoid(-beta * h(i)) for i in range(2)) / 2
    assert float(out.loss) == pytest.approx(expected, rel=1e-12)
    plain = cdpo_loss(t(PC), t(PR), t(RC), t(RR), beta, 0.0)
    assert float(plain.loss) == pytest.approx(float(dpo_loss(t(PC), t(PR), t(RC), t(RR), beta).loss), rel=1e-12)


def test_ipo_closed_form():
    tau = 0.25
    out = ipo_loss(t(PC), t(PR), t(RC), t(RR), tau)
    expected = sum((h(i) - 1 / (2 * tau)) ** 2 for i in range(2)) / 2
    assert float(out.loss) == pytest.approx(expected, rel=1e-12)


def test_simpo_closed_form():
    beta, gamma = 2.0, 0.5
    out = simpo_loss(t(PC), t(PR), t(LC), t(LR), beta, gamma)
    expected = sum(-log_sigmoid(beta * PC[i] / LC[i] - beta * PR[i] / LR[i] - gamma) for i in range(2)) / 2
    assert float(out.loss) == pytest.approx(expected, rel=1e-12)
    assert out.chosen_rewards.tolist() == pytest.approx([beta * PC[i] / LC[i] for i in range(2)])


def test_orpo_closed_form():
    lam = 0.1

    def odds(logp):  # log(p / (1 - p)) straight from the definition
        p = math.exp(logp)
        return math.log(p / (1 - p))

    out = orpo_loss(t(PC), t(PR), t(LC), t(LR), lam)
    expected = 0.0
    for i in range(2):
        mc, mr = PC[i] / LC[i], PR[i] / LR[i]
        expected += -mc + lam * -log_sigmoid(odds(mc) - odds(mr))
    assert float(out.loss) == pytest.approx(expected / 2, rel=1e-12)


def test_log_odds_is_stable_near_zero_and_very_negative():
    x = t([-1e-3, -0.5, -30.0])
    direct = [math.log(math.exp(v) / (1 - math.exp(v))) for v in x.tolist()]
    assert log_odds(x).tolist() == pytest.approx(direct, rel=1e-9)


@pytest.mark.parametrize("name", ["dpo", "cdpo", "simpo", "orpo"])
def test_gradients_raise_chosen_and_lower_rejected(name):
    pc, pr = t(PC, grad=True), t(PR, grad=True)
    out = preference_loss(name, pc, pr, t(RC), t(RR), t(LC), t(LR), beta=0.5, label_smoothing=0.1, gamma=0.5)
    out.loss.backward()
    assert (pc.grad < 0).all() and (pr.grad > 0).all()  # gradient descent raises log pi(y_w), lowers log pi(y_l)


def test_ipo_gradient_pulls_the_margin_to_its_target():
    tau = 0.25  # target margin 1/(2 tau) = 2: pair 0 has h = 1.5 (below: push up), pair 1 has h = -1.5 (push up)
    pc, pr = t(PC, grad=True), t(PR, grad=True)
    pc_far = t([PC[0] + 10, PC[1]], grad=True)  # pair 0 now above the target: pushed back down
    ipo_loss(pc, pr, t(RC), t(RR), tau).loss.backward()
    assert (pc.grad < 0).all() and (pr.grad > 0).all()
    ipo_loss(pc_far, t(PR), t(RC), t(RR), tau).loss.backward()
    assert pc_far.grad[0] > 0 and pc_far.grad[1] < 0


def test_dpo_loss_is_log2_at_the_reference():
    same = t([-3.0, -8.0])
    out = dpo_loss(same, same + 1, same, same + 1, beta=0.1)
    assert float(out.loss) == pytest.approx(math.log(2), rel=1e-12)


def test_unknown_loss_is_named():
    with pytest.raises(ValueError, match="kto"):
        preference_loss("kto", t(PC), t(PR))
