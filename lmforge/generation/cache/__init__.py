"""KV caches: storage (+ slot mapping) that brings its attention backend to the model (`kv_cache.backend`).

Contiguous (KVCache, MLACache), static-shape for torch.compile (StaticKVCache), rolling window (RollingKVCache)
and paged for the serving engine (PagedKVCache).
"""

from lmforge.generation.cache.contiguous import KVCache, MLACache, new_kv_cache
from lmforge.generation.cache.paged import PagedKVCache
from lmforge.generation.cache.rolling import RollingKVCache, all_layers_sliding
from lmforge.generation.cache.static import StaticKVCache

__all__ = ["KVCache", "MLACache", "PagedKVCache", "RollingKVCache", "StaticKVCache", "all_layers_sliding",
           "new_kv_cache"]
