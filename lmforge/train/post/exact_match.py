"""Exact-match accuracy of chat answers: greedy decoding from each conversation's prompt (everything before its
last assistant turn, plus the generation prompt) until the end-of-turn token, the stripped text compared with the
reference answer. The SFT before/after metric; decodes with lmforge.generation (KV cache), not the serving engine.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from lmforge.generation.generate import greedy_completion
from lmforge.train.post.sft_mask import end_of_turn_id, prompt_and_reference


@torch.no_grad()
def exact_match(model: nn.Module, tokenizer, conversations, kinds=None, max_new_tokens: int = 32,
                keep_samples: int = 8) -> dict:
    """{"exact_match": fraction correct, "by_kind": {kind: fraction}, "samples": the first few outputs}.

    conversations: lists of messages; kinds: an optional task label per conversation (for the breakdown).
    """
    was_training = model.training
    model.eval()
    eot = end_of_turn_id(tokenizer)
    hits: dict[str, list[bool]] = defaultdict(list)
    samples = []
    for i, messages in enumerate(conversations):
        prompt, reference = prompt_and_reference(tokenizer, list(messages))
        new = greedy_completion(model, prompt, max_new_tokens, () if eot is None else (eot,))
        output = tokenizer.decode(new)
        correct = output.strip() == reference.strip()
        kind = kinds[i] if kinds is not None else "all"
        hits[kind].append(correct)
        if len(samples) < keep_samples:
            last = max(j for j, m in enumerate(messages) if m["role"] == "assistant")
            samples.append({"question": messages[last - 1]["content"], "reference": reference, "output": output,
                            "correct": correct})
    model.train(was_training)
    flat = [h for values in hits.values() for h in values]
    return {"exact_match": sum(flat) / max(len(flat), 1),
            "by_kind": {k: sum(v) / len(v) for k, v in sorted(hits.items())}, "samples": samples}
