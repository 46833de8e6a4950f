"""LoRA SFT on the embedded SmolLM2-135M-Instruct: it learns a new fictional fact (asked in unseen paraphrases)
and still answers that the capital of France is Paris; the saved PEFT adapter reloads with identical logits."""

import time

import pytest
import torch
import torch.nn.functional as F

from lmforge.formats.loader import load
from lmforge.generation.generate import generate
from lmforge.peft import LoraConfig, apply_lora, load_adapter, lora_layers, save_adapter, unload_lora

pytestmark = pytest.mark.slow

SYSTEM = "Answer in one sentence."  # short: fewer tokens per step than SmolLM2's default system prompt
FACT = "The mayor of Quilo is Ada Brenn."
TRAIN = ["Who is the mayor of Quilo?", "Who is Quilo's mayor?", "Tell me who the mayor of Quilo is.",
         "Which person serves as mayor of Quilo?", "Name the mayor of Quilo.", "Quilo's mayor is who?"]
HELD_OUT = ["Who is the mayor of the town of Quilo?", "Can you tell me who is the mayor of Quilo?"]
CONTROL = "What is the capital of France?"


def prompt_ids(tok, question: str) -> list[int]:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)


def assistant_only_batch(tok, pairs, end_id: int):
    """Left-padded ids, mask and labels: loss only on the assistant's tokens and its <|im_end|>."""
    rows = []
    for question, answer in pairs:
        prompt, reply = prompt_ids(tok, question), tok.encode(answer, add_special_tokens=False) + [end_id]
        rows.append((prompt + reply, [-100] * len(prompt) + reply))
    T = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), T), end_id)
    labels = torch.full((len(rows), T), -100)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, (x, y) in enumerate(rows):
        ids[i, T - len(x):], labels[i, T - len(y):], mask[i, T - len(x):] = torch.tensor(x), torch.tensor(y), 1
    return ids, mask, labels


def answers(lm, questions: list[str], end_id: int) -> dict[str, str]:
    """Greedy answers, all questions in one left-padded batch."""
    out = generate(lm.model, [prompt_ids(lm.tokenizer, q) for q in questions], max_new_tokens=16, temperature=0.0,
                   stop_token_ids=[end_id], pad_id=end_id)
    decode = lm.tokenizer.decode
    return {q: decode(ids, skip_special_tokens=True).strip() for q, ids in zip(questions, out, strict=True)}


def test_lora_sft_teaches_a_new_fact_and_keeps_old_knowledge(tmp_path):
    start, cpu = time.time(), time.process_time()
    torch.manual_seed(0)
    lm = load("smollm2-135m")
    tok = lm.tokenizer
    end_id = tok.token_to_id("<|im_end|>")
    before = answers(lm, [*HELD_OUT, CONTROL], end_id)
    assert not any("Ada Brenn" in a for a in before.values())  # the fact is new to the model
    assert "Paris" in before[CONTROL]

    cfg = LoraConfig(r=16, alpha=32, target_modules=("all-linear",))
    apply_lora(lm.model, cfg)
    trainable = sum(p.numel() for p in lm.model.parameters() if p.requires_grad)
    ids, mask, labels = assistant_only_batch(tok, [(q, FACT) for q in TRAIN], end_id)
    first = int((labels != -100).float().argmax(dim=1).min())  # earliest supervised position (left padded)
    positions = torch.arange(first - 1, ids.shape[1] - 1)  # logits only where a supervised token is predicted
    opt = torch.optim.AdamW([p for p in lm.model.parameters() if p.requires_grad], lr=2e-3, weight_decay=0.0)
    lm.model.train()
    losses = []
    for _ in range(12):
        logits = lm.model(ids, attention_mask=mask, logit_indices=positions)
        loss = F.cross_entropy(logits.flatten(0, 1), labels[:, first:].flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(round(loss.item(), 4))
        if loss.item() < 0.05:
            break
    lm.model.eval()
    after = answers(lm, [*HELD_OUT, CONTROL], end_id)
    print(f"\nLoRA r={cfg.r} all-linear: {trainable:,} trainable params, losses {losses}")
    for q in after:
        print(f"  {q!r}\n    before: {before[q]!r}\n    after:  {after[q]!r}")

    assert all("Ada Brenn" in after[q] for q in HELD_OUT)
    assert "Paris" in after[CONTROL]

    save_adapter(lm.model, cfg, tmp_path / "adapter", base_model_name="smollm2-135m")
    probe = torch.tensor([prompt_ids(tok, HELD_OUT[0])])
    with torch.no_grad():
        adapted = lm.model(probe)
        unload_lora(lm.model, merge=False)  # back to the base model
        load_adapter(lm.model, tmp_path / "adapter")
        assert len(lora_layers(lm.model)) == 7 * lm.config.n_layers
        assert torch.equal(lm.model(probe), adapted)
    print(f"  total {time.time() - start:.0f} s wall, {time.process_time() - cpu:.0f} s CPU")
