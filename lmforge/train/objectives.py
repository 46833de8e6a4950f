"""Training objectives as plug-ins of the one Trainer loop. Beside next-token cross-entropy, chosen from the model
config: the MoE load-balancing loss (Switch Transformer; DeepSeek-V2's expert-level balance loss), DeepSeek-V3's
auxiliary-loss-free router-bias update, DeepSeek-V3 multi-token prediction (MTP), and BERT's masked-LM objective
for encoder presets; whole objectives (reward model, DPO family: train/post/pair_run.py) and rollout objectives
(PPO, GRPO family, rejection sampling: train/post/rollout_objective.py) plug in the same way.
The model stays plain: the Trainer calls these hooks around it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from lmforge.common.errors import LmforgeError
from lmforge.data.mlm import mask_tokens
from lmforge.model.moe import moe_aux_loss, moe_layers, update_router_bias
from lmforge.model.mtp import MultiTokenPrediction, forward_with_hidden, mtp_loss

MASK_TOKENS = ("[MASK]", "<mask>", "<|mask|>")  # the spellings a tokenizer's mask token goes by


@dataclass
class Objective:
    """What the Trainer optimises: next-token prediction plus these hooks, or (batch_loss, count, evaluate) a whole
    other objective on the same loop (the preference pairs of the reward model and the DPO family), or with
    `rollout` an RL algorithm whose data the policy samples itself. Every hook is optional."""

    names: list[str] = field(default_factory=lambda: ["next-token"])
    # a whole objective: the loader's batches go to batch_loss(model, batch) -> the summed loss of its units, and
    # count(micro_batches) -> how many units they hold (pairs); the step's loss is their mean (step.py)
    batch_loss: Callable[[nn.Module, tuple], torch.Tensor] | None = None
    count: Callable[[Sequence[tuple]], int] | None = None
    unit: str = "tokens"  # what count counts: the log's `tokens` / `tokens_per_s` are named after it
    # evaluate() -> held-out figures logged as kind "val" at eval steps (None: token loss on the val loader);
    # headline: the figure the progress line shows (as headline_label) and the checkpoint keeps; start_record:
    # the figures logged at step 0 of a fresh run (before any update)
    evaluate: Callable[[], dict[str, float]] | None = None
    headline: str = "val_loss"
    headline_label: str = "val"
    start_record: Callable[[], dict[str, float]] | None = None
    extra_losses: Callable[[nn.Module], torch.Tensor] | None = None  # added to each micro-batch's loss
    after_step: Callable[[], None] | None = None  # after each optimizer update (router-bias balancing)
    # (inputs, targets, seed) -> (inputs, labels): MLM corruption; seeded so a resumed run draws the same masks
    corrupt: Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]] | None = None
    stats: Callable[[], dict] = dict  # extra figures for the train log (aux / MTP loss, expert load)
    causal: bool = True  # False: an encoder, which has no greedy samples to show
    # rollout(step) -> the step's updates, each a list of micro-batches for batch_loss: called at the start of
    # step `step` (0-based), it samples with the current policy (the Trainer then takes no data loader). A step
    # ends at a rollout boundary, so a checkpoint needs no rollout, only the step and state_dict() below.
    rollout: Callable[[int], list[list[tuple]]] | None = None
    state_dict: Callable[[], dict] | None = None  # JSON state kept in checkpoints (PPO's adaptive KL coefficient)
    load_state_dict: Callable[[dict], None] | None = None
    # param_groups(module) -> the optimizer's groups, each with an "lr_scale" of the scheduled lr (PPO's critic)
    param_groups: Callable[[nn.Module], list[dict]] | None = None


class MTPTrainingModel(nn.Module):
    """The main model and its MTP modules as one module (so the optimizer, checkpoints and DDP see both). forward
    returns the main logits and keeps the MTP loss of that forward for the objective to add."""

    def __init__(self, model: nn.Module, mtp: MultiTokenPrediction):
        super().__init__()
        self.model, self.mtp, self.config = model, mtp, model.config
        self.last_mtp_loss: torch.Tensor | None = None

    @property
    def layers(self) -> nn.ModuleList:
        """The main model's blocks: what FSDP shards and activation checkpointing wraps, one by one."""
        return self.model.layers

    def forward(self, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
        logits, hidden = forward_with_hidden(self.model, input_ids, **kwargs)
        self.last_mtp_loss = mtp_loss(self.model, self.mtp, input_ids, hidden) if self.training else None
        return logits


def find_mask_token(tokenizer) -> int:
    for token in MASK_TOKENS:
        token_id = tokenizer.token_to_id(token) if tokenizer is not None else None
        if token_id is not None:
            return token_id
    raise LmforgeError(f"a masked-LM (encoder) model needs a mask token in its tokenizer, one of {MASK_TOKENS}; "
                       f"train the tokenizer with it (lmforge pretrain adds [MASK] for encoder presets)")


def _mixed_seed(seed: int, index: int) -> int:
    return (seed * 1_000_003 + index) % (2**63 - 1)


def build_objective(model: nn.Module, tokenizer=None, *, router_bias_rate: float = 1e-3, seed: int = 0,
                    mlm_probability: float = 0.15) -> tuple[nn.Module, Objective]:
    """(the module to train, its Objective) for `model` (an lmforge Transformer). With MTP modules in the config
    the module to train wraps the model; export `.model` from it."""
    cfg = model.config
    objective = Objective()
    losses: list[Callable[[], torch.Tensor]] = []
    train_module = model
    if cfg.heads.n_mtp_modules > 0:
        train_module = MTPTrainingModel(model, MultiTokenPrediction(cfg))
        wrapper = train_module
        losses.append(lambda: wrapper.last_mtp_loss)
        objective.names.append(f"MTP ({cfg.heads.n_mtp_modules} module(s), weight {cfg.heads.mtp_loss_weight})")
    layers = moe_layers(train_module)  # the MTP modules' MoE layers included
    if layers and cfg.moe.aux_loss_coef > 0:
        losses.append(lambda: moe_aux_loss(train_module))
        objective.names.append(f"MoE balance loss (coef {cfg.moe.aux_loss_coef})")
    if layers and cfg.moe.router_score_bias and router_bias_rate > 0:
        objective.after_step = lambda: update_router_bias(train_module, router_bias_rate)
        objective.names.append(f"aux-loss-free router bias (rate {router_bias_rate})")
    if losses:
        objective.extra_losses = lambda _module: sum(loss() for loss in losses)
    if layers or train_module is not model:
        objective.stats = lambda: _loss_stats(train_module, layers)
    if not cfg.attention.causal:
        if not cfg.heads.mlm:
            raise LmforgeError("a non-causal model trains with the masked-LM objective and needs mlm_head=True")
        mask_id, vocab = find_mask_token(tokenizer), cfg.vocab_size

        def corrupt(x: torch.Tensor, _y: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor]:
            generator = torch.Generator(device=x.device).manual_seed(_mixed_seed(seed, index))
            return mask_tokens(x, mask_id, vocab, mlm_probability, generator=generator)

        objective.corrupt, objective.causal = corrupt, False
        objective.names = [f"masked LM ({mlm_probability:.0%} of tokens)"]
    return train_module, objective


def _loss_stats(train_module: nn.Module, layers) -> dict:
    out = {}
    if isinstance(train_module, MTPTrainingModel) and train_module.last_mtp_loss is not None:
        out["mtp_loss"] = float(train_module.last_mtp_loss.detach())
    if layers and any(m.aux_loss is not None for m in layers):
        out["moe_aux_loss"] = float(moe_aux_loss(train_module).detach())
    counts = [m.expert_counts.float() for m in layers if getattr(m, "expert_counts", None) is not None]
    if counts:  # max / mean expert load of the last forward, worst layer: 1.0 is perfectly balanced
        out["expert_load_max_over_mean"] = max(float(c.max() / c.mean().clamp(min=1e-9)) for c in counts)
    return out
