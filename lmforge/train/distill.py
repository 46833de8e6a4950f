"""Knowledge distillation (Hinton et al. 2015): the student matches the teacher's temperature-softened
distribution, loss = alpha * T^2 * KL + (1 - alpha) * CE(labels), with the forward KL(p_teacher || p_student)
(mode-covering) or the reverse KL(p_student || p_teacher) (mode-seeking, as in MiniLLM). It runs in the
pretraining Trainer through its loss hook; the teacher is any lmforge-loadable model with the same vocabulary.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.common.errors import ConfigError, LmforgeError
from lmforge.train.distill_config import KINDS, DistillConfig
from lmforge.train.step import IGNORE_INDEX, TokenLossFn


def token_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
             kind: str = "forward") -> torch.Tensor:
    """Per-position KL between the softened distributions, shape [...] (the vocabulary axis summed)."""
    log_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    if kind == "forward":
        return (log_t.exp() * (log_t - log_s)).sum(-1)
    if kind == "reverse":
        return (log_s.exp() * (log_s - log_t)).sum(-1)
    raise ConfigError(f"kind={kind!r}; allowed: {', '.join(KINDS)}")


def distill_loss_sum(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                     cfg: DistillConfig) -> torch.Tensor:
    """Sum over the labelled positions of alpha * T^2 * KL + (1 - alpha) * CE (the Trainer divides by the count)."""
    mask = labels != IGNORE_INDEX
    kl = token_kl(student_logits, teacher_logits, cfg.temperature, cfg.kind)[mask].sum()
    loss = cfg.alpha * cfg.temperature ** 2 * kl
    if cfg.alpha < 1:
        ce = F.cross_entropy(student_logits.reshape(-1, student_logits.shape[-1]).float(), labels.reshape(-1),
                             ignore_index=IGNORE_INDEX, reduction="sum")
        loss = loss + (1 - cfg.alpha) * ce
    return loss


def distill_loss_fn(teacher: nn.Module, cfg: DistillConfig) -> TokenLossFn:
    """The Trainer's loss hook: the frozen teacher's logits for the same inputs, then distill_loss_sum."""
    teacher.eval().requires_grad_(False)

    def loss_fn(logits: torch.Tensor, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = teacher(inputs)
        return distill_loss_sum(logits, teacher_logits, labels, cfg)

    return loss_fn


def check_vocab(teacher_vocab_size: int, tokenizer, teacher_tokenizer=None) -> None:
    """The student is trained on the teacher's token ids: the vocabularies must be the same."""
    if len(tokenizer) > teacher_vocab_size:
        raise LmforgeError(f"the data tokenizer has {len(tokenizer)} tokens but the teacher's vocabulary has "
                           f"{teacher_vocab_size}: distillation needs the teacher's tokenizer (pass the teacher's "
                           f"tokenizer, or pack the data with it)")
    if teacher_tokenizer is not None and teacher_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise LmforgeError("the data tokenizer differs from the teacher's (same size, different token ids): "
                           "distillation needs the data packed with the teacher's tokenizer")


@torch.no_grad()
def held_out_kl(student: nn.Module, teacher: nn.Module, loader, batches: int = 10, kind: str = "forward",
                device: torch.device | str = "cpu") -> float:
    """Mean per-token KL (T = 1) of the student to the teacher over the first `batches` batches of `loader`."""
    saved = loader.state_dict()
    loader.load_state_dict({**saved, "epoch": 0, "position": 0})
    was_training = student.training
    student.eval()
    teacher.eval()
    total, count = 0.0, 0
    for i, (x, y) in enumerate(loader):
        x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        kl = token_kl(student(x), teacher(x), 1.0, kind)[y != IGNORE_INDEX]
        total, count = total + float(kl.sum()), count + kl.numel()
        if i + 1 >= batches:
            break
    loader.load_state_dict(saved)
    student.train(was_training)
    if count == 0:
        raise LmforgeError("no held-out tokens to measure the KL on; lower batch_size or add validation data")
    return total / count


def save_summary(run_dir: Path, summary: dict) -> None:
    (run_dir / "distill_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
