"""One model step over a scheduled batch: pack the new tokens of every sequence, run the model on the paged cache,
return the logits of the sequences that reached their last token (nano-vllm's `ModelRunner`, minus the globals).
The model call is generation's `model_step`, the one every decoder uses; llm.py samples with generation's Sampler.
"""

import math

import torch

from lmforge.engine.scheduler import ScheduledSeq
from lmforge.generation.cache import PagedKVCache
from lmforge.generation.step import model_step
from lmforge.model.alibi import alibi_slopes


def cache_entry_shapes(cfg) -> dict[str, tuple[int, ...]]:
    """What one token stores per layer: keys and values, or MLA's latent and shared RoPE key."""
    if cfg.attention.kind == "mla":
        return {"latent": (cfg.attention.kv_lora_rank,), "k_rope": (cfg.attention.qk_rope_head_dim,)}
    return {"k": (cfg.resolved_kv_heads, cfg.resolved_head_dim), "v": (cfg.resolved_kv_heads, cfg.resolved_head_dim)}


def kv_bytes_per_token(model) -> int:
    cfg = model.config
    numbers = sum(math.prod(shape) for shape in cache_entry_shapes(cfg).values())
    return cfg.n_layers * numbers * model.embed.weight.element_size()


class ModelRunner:
    def __init__(self, model, num_blocks: int, block_size: int):
        cfg = model.config
        weight = model.embed.weight
        self.model = model
        slopes = alibi_slopes(cfg.n_heads) if cfg.positions.kind == "alibi" else None  # BLOOM: the PyTorch path
        self.cache = PagedKVCache(cfg.n_layers, num_blocks, block_size, cache_entry_shapes(cfg), dtype=weight.dtype,
                                  device=weight.device, alibi_slopes=slopes)
        self.device = weight.device
        self.num_computed_tokens = 0  # tokens run through the model (prefill + decode), for statistics

    @torch.inference_mode()
    def run(self, batch: list[ScheduledSeq], copies: list[tuple[int, int]]) -> torch.Tensor:
        """Float logits [number of sampling sequences, V], in batch order of the sequences that sample."""
        self.cache.copy_blocks(copies)
        ids, positions, last, pictured = [], [], [], []
        offset = 0
        for item in batch:
            ids.extend(item.seq.token_ids[item.start:item.start + item.num_tokens])
            positions.extend(range(item.start, item.start + item.num_tokens))
            if item.seq.images is not None and item.seq.images.overlaps(item.start, item.start + item.num_tokens):
                pictured.append((item, offset))
            offset += item.num_tokens
            if item.samples:
                last.append(offset - 1)
        self.cache.prepare([(item.seq.block_table, item.start, item.num_tokens) for item in batch])
        self.num_computed_tokens += offset
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.device)
        pos = torch.tensor([positions], dtype=torch.long, device=self.device)
        index = torch.tensor(last, dtype=torch.long, device=self.device)
        embeds = None
        if pictured:  # prompts with images: their visual tokens replace the image tokens' embeddings
            embeds = self.model.embed(input_ids)
            for item, at in pictured:
                item.seq.images.scatter(embeds[0], item.start, item.start + item.num_tokens, at)
        return model_step(self.model, input_ids, self.cache, positions=pos, logits_at=index, inputs_embeds=embeds)[0]
