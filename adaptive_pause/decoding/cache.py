"""The decode loop's KV cache: transformers' `DynamicCache` with preallocated full-attention layers.

Owns: `decode_cache(model, capacity)` and the layer it substitutes; `context_length(model)`; whether a
cache holds full attention only (`full_attention_only`); the name under which a model takes its cache
(`cache_argument`). Other layer kinds (sliding-window, hybrid) are left as transformers builds them.

Must not: run the model or know about pauses.
"""

from __future__ import annotations

import functools
import inspect

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


def context_length(model) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "max_position_embeddings", None)


class PreallocatedLayer(DynamicLayer):
    """A `DynamicLayer` whose keys/values live in a buffer sized for the whole decode.

    Why: `DynamicLayer.update` appends with `torch.cat`, copying the whole cache at every step (about 7% of
    decode time at batch 64 on the embedded model). Here a step writes its new states in place. Attention
    sees views of the filled part, so lengths and masks are exactly those of `DynamicLayer`.
    """

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self._length = 0
        self._key_buffer = self._value_buffer = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        need = self._length + key_states.shape[-2]
        if self._key_buffer is None or need > self._key_buffer.shape[-2]:
            size = max(need, self.capacity)
            keys = key_states.new_empty(*key_states.shape[:-2], size, key_states.shape[-1])
            values = value_states.new_empty(*value_states.shape[:-2], size, value_states.shape[-1])
            if self._length:
                keys[..., : self._length, :] = self._key_buffer[..., : self._length, :]
                values[..., : self._length, :] = self._value_buffer[..., : self._length, :]
            self._key_buffer, self._value_buffer = keys, values
        self._key_buffer[..., self._length : need, :] = key_states
        self._value_buffer[..., self._length : need, :] = value_states
        self._length = need
        self.keys = self._key_buffer[..., :need, :]
        self.values = self._value_buffer[..., :need, :]
        return self.keys, self.values

    def crop(self, tokens_to_remove: int) -> None:
        super().crop(tokens_to_remove)
        if self.is_initialized and self.keys is not None:
            self._length = self.keys.shape[-2]


def decode_cache(model, capacity: int) -> DynamicCache:
    """A DynamicCache whose full-attention layers are preallocated for `capacity` positions."""
    cache = DynamicCache(config=getattr(model, "config", None))
    if cache.layers:
        cache.layers = [PreallocatedLayer(capacity) if type(layer) is DynamicLayer else layer
                        for layer in cache.layers]
    elif getattr(cache, "layer_class_to_replicate", None) is DynamicLayer:
        cache.layer_class_to_replicate = lambda: PreallocatedLayer(capacity)
    return cache


def full_attention_only(cache: DynamicCache) -> bool:
    """True when every layer of `cache` keeps every position (no sliding window, no linear-attention state)."""
    return bool(cache.layers) and all(type(layer) in (DynamicLayer, PreallocatedLayer) for layer in cache.layers)


def cache_argument(module) -> str:
    """The keyword `module.forward` takes its KV cache under: `cache` (transformers >= 5.2x, where
    `past_key_values` is deprecated) or `past_key_values` (older releases the dependency range still allows)."""
    module = module.get_base_model() if hasattr(module, "get_base_model") else module
    return _cache_argument_of(type(module))


@functools.lru_cache(maxsize=None)
def _cache_argument_of(module_type: type) -> str:
    # Cached per class: inspect.signature costs about 0.5 ms, and the server builds a session per admission.
    return "cache" if "cache" in inspect.signature(module_type.forward).parameters else "past_key_values"
