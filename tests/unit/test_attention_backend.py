"""Attention backends: the model hands every layer's q, k, v (MLA: its latent) to the backend its cache brings, and
runs the same whatever the backend is; the model code never tests what kind of cache it was given."""

import pathlib
import re

import pytest
import torch

import lmforge.model
from lmforge.model import Transformer, get_preset
from lmforge.model.attention_backend import SDPABackend


class RecordingBackend(SDPABackend):
    """SDPA over the current tokens (no cache), recording which layers called which entry point."""

    def __init__(self):
        self.calls, self.passes = [], 0

    def begin(self, num_tokens):
        self.passes += 1
        return 0

    def attend(self, layer, q, k, v, mask, is_causal, scale):
        self.calls.append(("attend", layer, tuple(q.shape), tuple(k.shape)))
        return super().attend(layer, q, k, v, mask, is_causal, scale)

    def attend_latent(self, layer, mla, q_nope, q_rope, latent, k_rope, mask, is_causal):
        self.calls.append(("attend_latent", layer, tuple(q_nope.shape), tuple(latent.shape)))
        return super().attend_latent(layer, mla, q_nope, q_rope, latent, k_rope, mask, is_causal)


class AnyCache:  # not one of lmforge's cache classes: the model only reads `backend`
    def __init__(self, backend):
        self.backend = backend


@pytest.mark.parametrize("preset, entry", [("tiny-llama", "attend"), ("tiny-deepseek-v3", "attend_latent")])
def test_every_layer_calls_the_backend_its_cache_brings(preset, entry):
    torch.manual_seed(0)
    model = Transformer(get_preset(preset)).eval()
    ids = torch.randint(0, 256, (2, 7))
    backend = RecordingBackend()
    with torch.no_grad():
        through_backend = model(ids, kv_cache=AnyCache(backend))
        plain = model(ids)
    assert torch.equal(through_backend, plain)
    assert backend.passes == 1
    assert [(name, layer) for name, layer, *_ in backend.calls] == [(entry, i) for i in range(model.config.n_layers)]
    assert all(shape[0] == 2 and shape[2] == 7 for _, _, shape, _ in backend.calls)  # [B, H, T, ·] queries


def test_the_model_never_asks_what_kind_of_cache_it_has():
    """No duck-typing on the cache in the model package: no `.paged` flag, no getattr/isinstance on the cache."""
    model_dir = pathlib.Path(lmforge.model.__file__).parent
    for path in model_dir.glob("*.py"):
        source = path.read_text()
        assert not re.search(r"getattr\(kv_cache|isinstance\(kv_cache|kv_cache\.paged|\bpaged\s*=", source), path
        assert not re.search(r"^\s*(from|import) lmforge\.(engine|generation)", source, re.M), path
