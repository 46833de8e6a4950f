"""BERT's masked-language-model corruption (Devlin et al., 2019): pick 15% of tokens as targets; of those, 80%
become [MASK], 10% a random token, 10% stay as they are. Labels are the original ids there and -100 elsewhere
(ignored by cross-entropy), so an encoder trains in the same loop as a decoder."""

import torch

from lmforge.common.errors import LmforgeError

IGNORE_INDEX = -100


def mask_tokens(input_ids: torch.Tensor, mask_token_id: int, vocab_size: int, mlm_probability: float = 0.15,
                special_tokens_mask: torch.Tensor | None = None, generator: torch.Generator | None = None,
                mask_fraction: float = 0.8, random_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """(corrupted input ids, labels), both shaped like input_ids [.., T]; the input is not modified.

    special_tokens_mask: True where a token may never be a target ([CLS], [SEP], padding).
    """
    if not 0 < mlm_probability < 1:
        raise LmforgeError(f"mlm_probability must be in (0, 1), got {mlm_probability}")
    if mask_fraction < 0 or random_fraction < 0 or mask_fraction + random_fraction > 1:
        raise LmforgeError(f"mask_fraction ({mask_fraction}) and random_fraction ({random_fraction}) must be >= 0 "
                           "and sum to at most 1")
    if not 0 <= mask_token_id < vocab_size:
        raise LmforgeError(f"mask_token_id {mask_token_id} is outside the vocabulary [0, {vocab_size})")
    device = input_ids.device

    def uniform() -> torch.Tensor:
        return torch.rand(input_ids.shape, generator=generator, device=device)

    targets = uniform() < mlm_probability
    if special_tokens_mask is not None:
        targets &= ~special_tokens_mask.bool()
    labels = torch.where(targets, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    choice = uniform()  # one draw decides mask / random / keep, in the given proportions
    to_mask = targets & (choice < mask_fraction)
    to_random = targets & (choice >= mask_fraction) & (choice < mask_fraction + random_fraction)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator, device=device, dtype=input_ids.dtype)
    corrupted = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    corrupted = torch.where(to_random, random_ids, corrupted)
    return corrupted, labels
