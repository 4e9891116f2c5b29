"""The decode loop's KV cache: transformers' `DynamicCache` with preallocated full-attention layers.

Owns: `decode_cache(model, capacity)` and the layer it substitutes; `context_length(model)`.
Other layer kinds (sliding-window, hybrid) are left as transformers builds them.

Must not: run the model or know about pauses.
"""

from __future__ import annotations

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
