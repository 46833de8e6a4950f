"""Prompt tuning, P-tuning v2 prefixes and bottleneck adapters: frozen base, a loss that drops, references from
transformers (prompt embeddings fed to its Llama; prefixes given as its past keys/values), masks and generation."""

import pytest
import torch
import torch.nn.functional as F
import transformers

from lmforge.formats.hf_dir import save_hf_model
from lmforge.generation.generate import generate
from lmforge.model import Transformer, get_preset
from lmforge.peft.adapters import adapter_modules, apply_adapters, remove_adapters
from lmforge.peft.prefix_tuning import PrefixTuning
from lmforge.peft.prompt_tuning import PromptTuning


def tiny(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(get_preset("tiny-llama", vocab_size=256)).eval()


def hf_copy(model, tmp_path):
    save_hf_model(model, tmp_path / "hf")
    return transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()


def train(module, x, steps: int = 20, lr: float = 3e-2) -> list[float]:
    """A few AdamW steps of next-token loss on x; returns the losses. Checks the frozen base stays unchanged."""
    base = module.model if hasattr(module, "model") else module
    frozen = {k: v.clone() for k, v in base.state_dict().items()}
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    losses = []
    for _ in range(steps):
        logits = module(x[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    after = base.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in frozen.items() if "adapter" not in k)
    return losses


def test_prompt_tuning_matches_transformers_with_the_same_input_embeddings(tmp_path):
    model = tiny()
    pt = PromptTuning(model, n_virtual=5)
    assert [n for n, p in pt.named_parameters() if p.requires_grad] == ["prompt"]
    ids = torch.randint(0, 256, (2, 9))
    hf = hf_copy(model, tmp_path)
    with torch.no_grad():
        ours = pt(ids)
        embeds = torch.cat([pt.prompt.expand(2, -1, -1), hf.model.embed_tokens(ids)], dim=1)
        ref = hf(inputs_embeds=embeds, attention_mask=torch.ones(2, 14, dtype=torch.long)).logits[:, 5:]
    assert ours.shape == (2, 9, 256)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_prompt_tuning_with_left_padding_equals_the_unpadded_rows():
    pt = PromptTuning(tiny(), n_virtual=4)
    a, b = torch.randint(0, 256, (1, 8)), torch.randint(0, 256, (1, 5))
    batch = torch.cat([a, torch.cat([torch.zeros(1, 3, dtype=torch.long), b], dim=1)])
    mask = torch.ones_like(batch)
    mask[1, :3] = 0
    with torch.no_grad():
        out = pt(batch, attention_mask=mask)
        torch.testing.assert_close(out[0], pt(a)[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out[1, 3:], pt(b)[0], atol=1e-5, rtol=1e-5)


def test_prompt_and_prefix_tuning_generate_through_the_kv_cache():
    for wrapper in (PromptTuning(tiny(), n_virtual=3), PrefixTuning(tiny(), n_prefix=3, init_std=0.5)):
        prompts = [[5, 6, 7, 8], [9, 10]]
        out = generate(wrapper, prompts, max_new_tokens=6, temperature=0.0)
        for prompt, got in zip(prompts, out, strict=True):  # reference: full recompute without a cache
            seq = list(prompt)
            with torch.no_grad():
                for _ in range(6):
                    seq.append(int(wrapper(torch.tensor([seq]))[0, -1].argmax()))
            assert got == seq[len(prompt):], type(wrapper).__name__


def test_prefix_tuning_matches_transformers_given_the_prefixes_as_past_key_values(tmp_path):
    model = tiny()
    prefix = PrefixTuning(model, n_prefix=4, init_std=0.5)
    ids = torch.randint(0, 256, (2, 7))
    hf = hf_copy(model, tmp_path)
    cache = transformers.DynamicCache(config=hf.config)
    for layer in range(model.config.n_layers):
        cache.update(prefix.keys[layer].detach().expand(2, -1, -1, -1).clone(),
                     prefix.values[layer].detach().expand(2, -1, -1, -1).clone(), layer)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=torch.ones(2, 11, dtype=torch.long), past_key_values=cache).logits
        ours = prefix(ids)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_adapters_start_as_the_identity_and_remove_cleanly():
    model, ref = tiny(), tiny()
    x = torch.randint(0, 256, (2, 12))
    apply_adapters(model, bottleneck=8)
    assert len(adapter_modules(model)) == 2 * model.config.n_layers
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".adapter." in n for n in trainable)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))
    remove_adapters(model)
    assert set(model.state_dict()) == set(ref.state_dict())


# (method, learning rate, required drop in nats): on a tiny *random* model a prompt or a prefix can only shift the
# output distribution toward the task's 10 tokens through attention, so they move the loss less than adapters.
@pytest.mark.parametrize("method, lr, drop", [("prompt", 0.1, 0.05), ("prefix", 0.1, 0.1), ("adapters", 3e-2, 0.2)])
def test_each_method_lowers_the_loss_with_the_base_frozen(method, lr, drop):
    torch.manual_seed(1)
    x = torch.randint(10, 20, (4, 16))  # a tiny task: sequences over 10 of the 256 tokens
    model = tiny()
    module = {"prompt": lambda: PromptTuning(model, 8), "prefix": lambda: PrefixTuning(model, 8),
              "adapters": lambda: apply_adapters(model, bottleneck=16)}[method]()
    losses = train(module, x, lr=lr)
    print(method, f"{losses[0]:.3f} -> {losses[-1]:.3f}")
    assert losses[-1] < losses[0] - drop
