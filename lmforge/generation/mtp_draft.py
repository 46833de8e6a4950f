"""The multi-token-prediction head as a speculative-decoding draft (DeepSeek-V3 report, section 2.2 / 5.4.3).

The target's own final hidden states (read from its verification forwards) and the embeddings of the next tokens
feed MTP depth 1, 2, ... exactly as in training (`mtp_logits`), each depth proposing one more token: no second
model, D drafts per round. The MTP blocks are recomputed over the context each round (correct, not cached).
"""

import torch

from lmforge.common.errors import LmforgeError
from lmforge.model.mtp import MultiTokenPrediction, forward_with_hidden


class MTPDraft:
    """Drafts up to D = len(mtp.depths) tokens from the hidden states of every context position but the last.

    `target_forward` replaces the target's forward in the speculative loop: it keeps the final (normed) hidden
    states of the positions it runs, aligned with the target's KV cache; `rollback` drops rejected positions.
    """

    def __init__(self, target, mtp: MultiTokenPrediction, max_len: int):
        cfg, own = target.config, mtp.config
        if (own.vocab_size, own.dim) != (cfg.vocab_size, cfg.dim):
            raise LmforgeError(f"the MTP modules (vocab {own.vocab_size}, dim {own.dim}) do not fit the target "
                               f"(vocab {cfg.vocab_size}, dim {cfg.dim})")
        self.target, self.mtp = target, mtp
        param = target.embed.weight
        self.hidden = torch.empty(max_len, cfg.dim, dtype=param.dtype, device=param.device)
        self.length = 0  # positions whose hidden states are kept (= the target cache's length)
        self.cos, self.sin = mtp.rope(max_len, param.device, param.dtype)

    def target_forward(self, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
        """The target's logits for `input_ids` [1, T] (after its cached positions); their hidden states are kept."""
        logits, h = forward_with_hidden(self.target, input_ids, **kwargs)
        T = h.shape[1]
        self.hidden[self.length:self.length + T] = h[0]
        self.length += T
        return logits

    def propose(self, tokens: list[int], k: int, dist, generator: torch.Generator | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(draft tokens [<= k], their distributions q): depth j at the last seen position i = len(tokens) - 2
        reads h_{j-1}[i] and emb(token i + j) and proposes token i + j + 1."""
        T = self.length
        k = min(k, len(self.mtp.depths))
        device = self.hidden.device
        if len(tokens) != T + 1:
            raise LmforgeError(f"MTPDraft holds {T} hidden states for a context of {len(tokens)} tokens")
        if T == 0 or k == 0:
            return torch.empty(0, dtype=torch.long, device=device), torch.empty(0, self.target.config.vocab_size,
                                                                                  device=device)
        ids = torch.tensor(tokens, device=device)
        h, cos, sin = self.hidden[None, :T], self.cos[:, :T], self.sin[:, :T]
        drafted, qs = [], []
        for j, module in enumerate(self.mtp.depths[:k], start=1):
            h = module(h, self.target.embed(ids[j:j + T][None]), cos, sin)
            logits = self.target.lm_head(module.norm(h[:, -1])).float()
            q = dist(logits)
            token = q.argmax(-1) if dist.greedy else torch.multinomial(q, 1, generator=generator)[:, 0]
            drafted.append(token)
            qs.append(q[0])
            ids = torch.cat([ids, token])
        return torch.cat(drafted), torch.stack(qs)

    def rollback(self, n_valid: int) -> None:
        self.length = min(self.length, n_valid)
