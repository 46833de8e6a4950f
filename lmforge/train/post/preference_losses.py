"""The DPO family as pure functions of sequence log-probabilities (summed over the completion's tokens):
DPO (Rafailov et al., 2023), conservative DPO / label smoothing (Mitchell, 2023), IPO (Azar et al., 2023),
SimPO (Meng et al., 2024: length-normalised, a target margin, no reference) and ORPO (Hong et al., 2024: SFT
loss plus an odds-ratio term, no reference). Each returns per-pair losses and implicit rewards. Any of them can add
an SFT term, the chosen answer's NLL per token (RPO, Pang et al. 2024; TRL's `rpo_alpha`): DPO alone may lower
both likelihoods as long as their gap grows, and the term keeps the chosen one up.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lmforge.train.post.pair_config import LOSSES

NEEDS_REFERENCE = ("dpo", "ipo", "cdpo")


@dataclass
class PreferenceOutput:
    """loss: the scalar to minimise (mean over pairs); per pair [B]: the implicit rewards and their margin."""

    loss: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    chosen_nll: torch.Tensor | None = None  # [B] per-token NLL of the chosen answers, where an SFT term was added

    @property
    def margins(self) -> torch.Tensor:
        return self.chosen_rewards - self.rejected_rewards

    def stats(self) -> dict[str, float]:
        m = self.margins.detach()
        return {"loss": float(self.loss.detach()), "reward_chosen": float(self.chosen_rewards.detach().mean()),
                "reward_rejected": float(self.rejected_rewards.detach().mean()), "margin": float(m.mean()),
                "reward_accuracy": float((m > 0).float().mean()),
                **({} if self.chosen_nll is None else {"chosen_nll": float(self.chosen_nll.detach().mean())})}


def log_ratio_margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected) -> torch.Tensor:
    """h = [log pi(y_w) - log ref(y_w)] - [log pi(y_l) - log ref(y_l)], the quantity DPO/IPO/cDPO act on."""
    return (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)


def _ref_rewards(beta, policy_chosen, policy_rejected, ref_chosen, ref_rejected):
    return beta * (policy_chosen - ref_chosen).detach(), beta * (policy_rejected - ref_rejected).detach()


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float = 0.1) -> PreferenceOutput:
    """-log sigmoid(beta h): the Bradley-Terry likelihood of the preference under the implicit reward."""
    h = log_ratio_margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    losses = -F.logsigmoid(beta * h)
    return PreferenceOutput(losses.mean(), *_ref_rewards(beta, policy_chosen, policy_rejected, ref_chosen,
                                                         ref_rejected))


def cdpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float = 0.1,
              label_smoothing: float = 0.1) -> PreferenceOutput:
    """Conservative DPO: the label is flipped with probability eps, so
    (1 - eps) * -log sigmoid(beta h) + eps * -log sigmoid(-beta h); the optimum margin stays finite."""
    h = log_ratio_margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    eps = label_smoothing
    losses = -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)
    return PreferenceOutput(losses.mean(), *_ref_rewards(beta, policy_chosen, policy_rejected, ref_chosen,
                                                         ref_rejected))


def ipo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float = 0.1) -> PreferenceOutput:
    """IPO: (h - 1/(2 tau))^2 with tau = beta: regresses the log-ratio margin to a fixed target instead of
    pushing it to infinity (DPO's overfitting on deterministic preferences)."""
    h = log_ratio_margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    losses = (h - 1.0 / (2.0 * beta)) ** 2
    return PreferenceOutput(losses.mean(), *_ref_rewards(beta, policy_chosen, policy_rejected, ref_chosen,
                                                         ref_rejected))


def simpo_loss(policy_chosen, policy_rejected, chosen_len, rejected_len, beta: float = 2.0,
               gamma: float = 1.0) -> PreferenceOutput:
    """SimPO: -log sigmoid(beta/|y_w| log pi(y_w) - beta/|y_l| log pi(y_l) - gamma); the reward is the mean
    token log-prob (the quantity generation ranks by), so no reference model is needed."""
    chosen = beta * policy_chosen / chosen_len.clamp(min=1)
    rejected = beta * policy_rejected / rejected_len.clamp(min=1)
    losses = -F.logsigmoid(chosen - rejected - gamma)
    return PreferenceOutput(losses.mean(), chosen.detach(), rejected.detach())


def log_odds(mean_logp: torch.Tensor) -> torch.Tensor:
    """log(p / (1 - p)) of p = exp(mean_logp) < 1, computed without cancelling: logp - log(1 - exp(logp))."""
    mean_logp = mean_logp.clamp(max=-1e-6)
    return mean_logp - torch.log(-torch.expm1(mean_logp))


def orpo_loss(policy_chosen, policy_rejected, chosen_len, rejected_len, lam: float = 0.1) -> PreferenceOutput:
    """ORPO: NLL of the chosen answer (mean per token) + lambda * -log sigmoid(log odds(y_w) - log odds(y_l)),
    with odds(y) = P(y) / (1 - P(y)) and log P(y) the mean token log-prob. Rewards: lambda * mean log-probs."""
    chosen_mean = policy_chosen / chosen_len.clamp(min=1)
    rejected_mean = policy_rejected / rejected_len.clamp(min=1)
    odds_ratio = -F.logsigmoid(log_odds(chosen_mean) - log_odds(rejected_mean))
    losses = -chosen_mean + lam * odds_ratio
    return PreferenceOutput(losses.mean(), lam * chosen_mean.detach(), lam * rejected_mean.detach())


def with_sft_term(out: PreferenceOutput, policy_chosen, chosen_len, weight: float) -> PreferenceOutput:
    """loss + weight * mean over pairs of -log pi(y_w) / |y_w| (the chosen answer's NLL per token)."""
    nll = -policy_chosen / chosen_len.clamp(min=1)
    return PreferenceOutput(out.loss + weight * nll.mean(), out.chosen_rewards, out.rejected_rewards, nll.detach())


def preference_loss(name: str, policy_chosen, policy_rejected, ref_chosen=None, ref_rejected=None, chosen_len=None,
                    rejected_len=None, *, beta: float = 0.1, label_smoothing: float = 0.0, gamma: float = 1.0,
                    lam: float = 0.1, sft_weight: float = 0.0) -> PreferenceOutput:
    """Dispatch by name (one of LOSSES) with the arguments each loss uses; sft_weight > 0 adds the SFT term."""
    out = _preference_loss(name, policy_chosen, policy_rejected, ref_chosen, ref_rejected, chosen_len, rejected_len,
                           beta, label_smoothing, gamma, lam)
    return with_sft_term(out, policy_chosen, chosen_len, sft_weight) if sft_weight else out


def _preference_loss(name, policy_chosen, policy_rejected, ref_chosen, ref_rejected, chosen_len, rejected_len, beta,
                     label_smoothing, gamma, lam) -> PreferenceOutput:
    if name == "dpo":
        return dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)
    if name == "cdpo":
        return cdpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, label_smoothing)
    if name == "ipo":
        return ipo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)
    if name == "simpo":
        return simpo_loss(policy_chosen, policy_rejected, chosen_len, rejected_len, beta, gamma)
    if name == "orpo":
        return orpo_loss(policy_chosen, policy_rejected, chosen_len, rejected_len, lam)
    raise ValueError(f"unknown preference loss {name!r}; allowed: {', '.join(LOSSES)}")
