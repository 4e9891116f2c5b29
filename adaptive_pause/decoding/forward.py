"""One LM forward pass that also returns the last layer's hidden states, without keeping every layer's.

Owns: `forward_last_hidden(model, **kwargs) -> (output, last_hidden)`.

Why not `output_hidden_states=True`: it keeps one (batch, length, hidden) tensor per layer (31 for
SmolLM2-135M: 174 MB for a batch of 64 prompts of 38 tokens) where the decode loop, the teacher-forced replay
and the urgency estimator read only the last. A forward hook on the decoder (`get_decoder()`, the stack
that ends with the final norm) gives that one tensor; it equals `hidden_states[-1]` exactly on every
architecture of tests/decoding/test_architectures.py (checked there). A model without `get_decoder` falls
back to `output_hidden_states`.

Must not: build inputs, masks or caches (the callers do), or keep the hook after the call.
"""

from __future__ import annotations

import torch


def _decoder(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    get_decoder = getattr(base, "get_decoder", None)
    try:
        decoder = get_decoder() if get_decoder is not None else None
    except (AttributeError, NotImplementedError):
        return None
    return decoder if isinstance(decoder, torch.nn.Module) and decoder is not base else None


def forward_last_hidden(model, **kwargs):
    """`model(**kwargs)` and the decoder's last hidden states (batch, length, hidden), final norm applied."""
    decoder = _decoder(model)
    if decoder is None:
        out = model(**kwargs, output_hidden_states=True)
        return out, out.hidden_states[-1]
    seen = []

    def keep(module, args, output):
        seen.append(output[0] if isinstance(output, tuple) else output.last_hidden_state)

    handle = decoder.register_forward_hook(keep)
    try:
        out = model(**kwargs)
    finally:
        handle.remove()
    if len(seen) != 1:  # a decoder called more or less than once per forward: take the model's own record
        out = model(**kwargs, output_hidden_states=True)
        return out, out.hidden_states[-1]
    return out, seen[0]
