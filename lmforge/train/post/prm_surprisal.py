"""A PRM head that also reads the backbone's own surprise at each step (`lmforge prm train --step-surprisal`): the
step's logit is the scalar head at its closing newline plus w * sum over the step's tokens of g_t * log p(token_t |
everything before), with g_t = sigmoid(gate(h_t)) a learned per-token weight and w, c learned scalars. The backbone's
language-model head already predicts each token (a wrong sum is a surprising token), so the verifier reads that
prediction instead of having to rebuild the check inside the newline's hidden state — the idea of generative
verifiers (Zhang et al., 2024) as one extra feature of a discriminative PRM. The gate learns which tokens' surprise
counts (a result that should follow from the step, not an addend copied from the prompt); w and c start at 0, so an
untrained feature changes nothing. Saved next to the scalar head as surprisal_head.safetensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from lmforge.common.errors import LmforgeError
from lmforge.common.files import save_safetensors
from lmforge.train.post.value_head import ScalarHead

SURPRISAL_FILE = "surprisal_head.safetensors"


class SurprisalHead(ScalarHead):
    """ScalarHead + a per-token gate and (w, c): see the module docstring. Float32 outputs."""

    def __init__(self, backbone: nn.Module):
        super().__init__(backbone)  # the scalar head is drawn first: the same init as a plain PRM's
        self.gate = nn.Linear(backbone.config.dim, 1)
        nn.init.normal_(self.gate.weight, std=1.0 / (backbone.config.dim + 1) ** 0.5)
        nn.init.zeros_(self.gate.bias)
        self.mix = nn.Parameter(torch.zeros(2))  # w (the surprisal's weight), c (a bias)

    def step_logits(self, ids: torch.Tensor, mask: torch.Tensor, rows: Sequence) -> list[torch.Tensor]:
        """Per row of the batch: [n_steps] logits; rows[i].start and .ends bound each step's tokens."""
        ids = ids.to(self.score.weight.device)
        hidden = self.backbone.hidden_states(ids, mask.to(ids.device))
        values = self.score(hidden).squeeze(-1).float()
        logp = torch.log_softmax(self.backbone.lm_head(hidden).float(), -1)
        token_logp = torch.cat([torch.zeros_like(ids[:, :1], dtype=torch.float32),  # log p(ids[t] | ids[:t])
                                logp[:, :-1].gather(2, ids[:, 1:, None]).squeeze(2)], 1)
        weighted = token_logp * torch.sigmoid(self.gate(hidden).squeeze(-1).float())
        out = []
        for i, r in enumerate(rows):
            starts = [r.start, *(end + 1 for end in r.ends[:-1])]
            surprise = torch.stack([weighted[i, a:b + 1].sum() for a, b in zip(starts, r.ends, strict=True)])
            out.append(values[i, r.ends] + self.mix[0] * surprise + self.mix[1])
        return out


def save_surprisal(head: SurprisalHead, directory: str | Path) -> None:
    save_safetensors({"gate.weight": head.gate.weight.float(), "gate.bias": head.gate.bias.float(),
                      "mix": head.mix.float()}, Path(directory) / SURPRISAL_FILE)


def with_surprisal(head: ScalarHead, directory: str | Path) -> SurprisalHead:
    """The loaded scalar head of a PRM saved with --step-surprisal, given its gate and (w, c) back."""
    path = Path(directory) / SURPRISAL_FILE
    if not path.is_file():
        raise LmforgeError(f"{directory} was trained with --step-surprisal but {SURPRISAL_FILE} is missing")
    out = SurprisalHead(head.backbone)
    out.score.load_state_dict(head.score.state_dict())
    state = load_file(str(path))
    out.gate.load_state_dict({"weight": state["gate.weight"], "bias": state["gate.bias"]})
    out.mix.data.copy_(state["mix"])
    return out.to(head.score.weight.device)
