"""Sentence embedders: a sentence-transformers directory (its pooling, normalisation and max length) or any lmforge
model (an HF encoder or decoder, a GGUF file) with mean / CLS / max / last-token pooling.

Texts are tokenized once, sorted by length and batched, so a batch pads to similar lengths (as
sentence-transformers' `encode` does); the vectors come back in the input order. A loaded embedder's model is
prepared for inference (lmforge.model.inference: fused q/k/v, lmforge's float32 / bf16 linear kernels), about twice
as fast on one CPU thread with the same vectors within float rounding (docs/rag.md). Pooling as in Sentence-BERT
(Reimers & Gurevych, 2019); last-token pooling for decoders as in SGPT / E5-Mistral.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer as Backend

from lmforge.common.errors import LmforgeError
from lmforge.common.threads import tick as tick_threads
from lmforge.formats.loader import load, resolve_dtype, resolve_source
from lmforge.model.inference import prepare_for_inference
from lmforge.rag.st_dir import (
    EMBEDDED_ENCODERS,
    ENCODER_INSTALL_HINT,
    embedded_encoder_path,
    is_st_dir,
    load_headless_encoder,
    read_st_pipeline,
)

POOLINGS = ("mean", "cls", "max", "mean_sqrt_len", "last")


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """[B, T, d] states, [B, T] mask (1 = token, right padding) -> [B, d], as sentence-transformers' Pooling."""
    weights = mask.to(hidden.dtype)[..., None]
    if mode == "cls":
        return hidden[:, 0]
    if mode == "last":
        return hidden[torch.arange(hidden.shape[0]), mask.sum(1) - 1]
    if mode == "max":
        return hidden.masked_fill(weights == 0, -1e9).max(1).values
    summed, count = (hidden * weights).sum(1), weights.sum(1).clamp(min=1e-9)
    return summed / (count.sqrt() if mode == "mean_sqrt_len" else count)


class Embedder:
    """`embed(texts)` -> [N, dim] float32. `name` is what an index or the server records as the model."""

    def __init__(self, model, backend: Backend, name: str, pooling: str = "mean", normalize: bool = True,
                 max_length: int | None = None, lower_case: bool = False, pad_id: int = 0):
        if pooling not in POOLINGS:
            raise LmforgeError(f"unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}")
        self.model, self.name, self.pooling, self.normalize = model, name, pooling, normalize
        self.max_length = min(max_length or model.config.max_seq_len, model.config.max_seq_len)
        self.lower_case, self.pad_id = lower_case, pad_id
        self.backend = Backend.from_str(backend.to_str())  # our own copies: whole texts (for chunking) ...
        self.backend.no_padding()
        self.backend.no_truncation()
        self.truncating = Backend.from_str(self.backend.to_str())  # ... and cut to the model's window (to embed)
        self.truncating.enable_truncation(self.max_length)

    @property
    def dim(self) -> int:
        return self.model.config.dim

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise LmforgeError("embed expects a list of strings")
        texts = [t.lower() for t in texts] if self.lower_case else list(texts)
        return [e.ids for e in self.truncating.encode_batch(texts, add_special_tokens=True)]

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        return self.embed_ids(self.tokenize(texts), batch_size)

    @torch.inference_mode()
    def embed_ids(self, sequences: Sequence[Sequence[int]], batch_size: int = 32) -> torch.Tensor:
        """[N, dim] float32 embeddings of token-id sequences, batched longest first (less padding)."""
        vocab = self.model.config.vocab_size
        for seq in sequences:
            if len(seq) == 0:
                raise LmforgeError("every input must give at least one token")
            if len(seq) > self.max_length:
                raise LmforgeError(f"an input has {len(seq)} tokens, more than this model's {self.max_length}")
            bad = next((t for t in seq if not isinstance(t, int) or not 0 <= t < vocab), None)
            if bad is not None:
                raise LmforgeError(f"token id {bad!r} is outside the vocabulary [0, {vocab})")
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
        device = next(self.model.parameters()).device
        out = torch.empty(len(sequences), self.dim)
        for start in range(0, len(order), batch_size):
            tick_threads()  # fewer OpenMP threads while other processes use the CPU (lmforge.common.threads)
            rows = order[start:start + batch_size]
            width = len(sequences[rows[0]])
            ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                ids[r, :len(sequences[i])] = torch.tensor(sequences[i], dtype=torch.long)
                mask[r, :len(sequences[i])] = 1
            ids, mask = ids.to(device), mask.to(device)
            pooled = pool(self.model.hidden_states(ids, attention_mask=mask).float(), mask, self.pooling)
            out[rows] = (F.normalize(pooled, dim=-1) if self.normalize else pooled).cpu()
        return out


def load_embedder(name_or_path: str, pooling: str | None = None, normalize: bool | None = None,
                  dtype: str = "float32", device: torch.device | str = "cpu") -> Embedder:
    """A sentence-transformers directory (its own pooling, normalisation, max length), the embedded
    all-minilm-l6-v2, or anything `lmforge.load` reads (pooling default mean, L2-normalised); its model on
    `device` (the vectors come back on the CPU)."""
    text = str(name_or_path)
    if pooling is not None and pooling not in POOLINGS:  # before loading anything
        raise LmforgeError(f"unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}")
    if text.lower() in EMBEDDED_ENCODERS:
        path = embedded_encoder_path(text)
        if path is None:
            raise LmforgeError(f"the embedding model {text!r} is not installed; run: {ENCODER_INSTALL_HINT}")
    else:
        path = resolve_source(text)
    if is_st_dir(path):
        pipe = read_st_pipeline(path)
        model = load_headless_encoder(pipe.encoder_dir, resolve_dtype(dtype)).to(device)
        backend_file = pipe.encoder_dir / "tokenizer.json"
        if not backend_file.is_file():
            raise LmforgeError(f"{pipe.encoder_dir} has no tokenizer.json; lmforge reads fast-tokenizer files only")
        backend = Backend.from_file(str(backend_file))
        prepare_for_inference(model)  # inference only: fused projections, lmforge's CPU linears
        return Embedder(model, backend, text, pooling or pipe.pooling,
                        pipe.normalize if normalize is None else normalize, pipe.max_seq_length, pipe.lower_case,
                        pad_id=model.config.pad_token_id or 0)
    lm = load(path, dtype=dtype)
    if lm.tokenizer is None:
        raise LmforgeError(f"{text} has no tokenizer (tokenizer.json); an embedder needs one")
    pad = lm.config.pad_token_id if lm.config.pad_token_id is not None else 0
    lm.model.to(device)
    prepare_for_inference(lm.model)
    return Embedder(lm.model, lm.tokenizer.backend, text, pooling or "mean", True if normalize is None else normalize,
                    pad_id=pad)


def truncate_dimensions(vectors: torch.Tensor, dimensions: int | None, normalize: bool) -> torch.Tensor:
    """The first `dimensions` components (Matryoshka truncation, as sentence-transformers' truncate_dim),
    re-normalised when the model normalises."""
    if dimensions is None or dimensions == vectors.shape[-1]:
        return vectors
    if not 1 <= dimensions <= vectors.shape[-1]:
        raise LmforgeError(f"dimensions={dimensions} must be between 1 and this model's {vectors.shape[-1]}")
    cut = vectors[:, :dimensions]
    return F.normalize(cut, dim=-1) if normalize else cut
