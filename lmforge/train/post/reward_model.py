"""A reward model from ranked pairs (Ouyang et al., 2022 "InstructGPT"): a scalar head on an LM backbone scores
the last token of prompt + answer, trained with the Bradley-Terry loss -log sigmoid(r_chosen - r_rejected).
Saved as a Hugging Face directory of the backbone plus `score_head.safetensors`; `load_reward_model` gives PPO and
GRPO a scorer of (prompt, completion) pairs or of already tokenized sequences.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from lmforge.common.errors import LmforgeError
from lmforge.common.files import save_safetensors
from lmforge.formats.hf_dir import save_hf_model
from lmforge.train.post.pairs import Encoded, EncodedPair, collate, collate_pairs, encode_completion
from lmforge.train.post.value_head import ScalarHead

HEAD_FILE = "score_head.safetensors"
META_FILE = "reward_model.json"


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Mean over pairs of -log sigmoid(r_w - r_l): the negative log-likelihood that the chosen answer wins."""
    return -F.logsigmoid(chosen - rejected).mean()


def pair_scores(head: ScalarHead, pairs: Sequence[EncodedPair], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """([B] chosen scores, [B] rejected scores) of one batch of pairs, in one forward pass."""
    batch = collate_pairs(pairs, pad_id)
    scores = head.last_token_scores(batch.ids, batch.attention_mask)
    return scores[:len(pairs)], scores[len(pairs):]


@torch.no_grad()
def pairwise_accuracy(head: ScalarHead, pairs: Sequence[EncodedPair], batch_size: int = 64, pad_id: int = 0,
                      kinds: Sequence[str] | None = None) -> dict[str, float]:
    """Held-out figures: accuracy (r_w > r_l), the mean margin r_w - r_l, the Bradley-Terry loss, and with
    `kinds` (one label per pair) the accuracy of each kind as accuracy_<kind>."""
    was_training = head.training
    head.eval()
    chosen, rejected = [], []
    for i in range(0, len(pairs), batch_size):
        c, r = pair_scores(head, pairs[i:i + batch_size], pad_id)
        chosen.append(c)
        rejected.append(r)
    head.train(was_training)
    c, r = torch.cat(chosen), torch.cat(rejected)
    wins = (c > r).float()
    out = {"accuracy": float(wins.mean()), "margin": float((c - r).mean()), "loss": float(bradley_terry_loss(c, r))}
    for kind in sorted(set(kinds or ())):
        out[f"accuracy_{kind}"] = float(wins[[k == kind for k in kinds]].mean())
    return out


def save_reward_model(head: ScalarHead, tokenizer, directory: str | Path, meta: dict | None = None) -> Path:
    """The backbone as a Hugging Face directory (transformers loads it as an LM) + the head + a small JSON."""
    directory = Path(directory)
    save_hf_model(head.backbone, directory)
    if tokenizer is not None:
        tokenizer.save(directory)
    save_safetensors({"weight": head.score.weight.float(), "bias": head.score.bias.float()}, directory / HEAD_FILE)
    (directory / META_FILE).write_text(json.dumps({"kind": "reward_model", "head": HEAD_FILE, **(meta or {})},
                                                  indent=2) + "\n")
    return directory


class RewardModel:
    """A trained reward model: `score(prompts, completions)` -> [B] float32 rewards (no gradients).

    prompts: strings (one user turn) or lists of chat messages; completions: the assistant answers. Each is
    rendered with the tokenizer's chat template exactly as in training (the answer ends with its end-of-turn
    token) and scored at its last token. `score_ids(ids, attention_mask)` scores sequences already tokenized the
    same way (e.g. PPO rollouts: prompt ids + sampled ids up to and including <|im_end|>).
    """

    def __init__(self, head: ScalarHead, tokenizer, max_len: int = 512) -> None:
        self.head = head.eval()
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.pad_id = head.config.pad_token_id if head.config.pad_token_id is not None else 0

    @torch.no_grad()
    def score_ids(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head.last_token_scores(ids, attention_mask)

    def encode(self, prompt: str | Sequence[dict], completion: str) -> Encoded:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        return encode_completion(self.tokenizer, messages, completion, self.max_len)

    @torch.no_grad()
    def score(self, prompts: Sequence, completions: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        if len(prompts) != len(completions):
            raise LmforgeError(f"{len(prompts)} prompts but {len(completions)} completions")
        rows = [self.encode(p, c) for p, c in zip(prompts, completions, strict=True)]
        out = []
        for i in range(0, len(rows), batch_size):
            batch = collate(rows[i:i + batch_size], self.pad_id)
            out.append(self.score_ids(batch.ids, batch.attention_mask))
        return torch.cat(out) if out else torch.zeros(0)


def load_reward_model(directory: str | Path, dtype: str = "float32") -> RewardModel:
    """A reward model saved by `lmforge rm` (backbone HF directory + score_head.safetensors)."""
    from lmforge.formats.loader import load

    directory = Path(directory)
    if not (directory / HEAD_FILE).is_file():
        raise LmforgeError(f"{directory} is not a reward model directory: {HEAD_FILE} is missing "
                           f"(train one with `lmforge rm`)")
    lm = load(str(directory), dtype=dtype)
    if lm.tokenizer is None:
        raise LmforgeError(f"{directory} has no tokenizer.json; a reward model needs its tokenizer")
    head = ScalarHead(lm.model)
    state = load_file(str(directory / HEAD_FILE))
    if set(state) != {"weight", "bias"} or tuple(state["weight"].shape) != (1, lm.config.dim):
        raise LmforgeError(f"{directory / HEAD_FILE} must hold weight [1, {lm.config.dim}] and bias [1]")
    head.score.load_state_dict(state)
    meta_path = directory / META_FILE
    max_len = json.loads(meta_path.read_text()).get("max_len", 512) if meta_path.is_file() else 512
    return RewardModel(head, lm.tokenizer, max_len)
