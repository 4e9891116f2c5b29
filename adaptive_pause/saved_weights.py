"""What a saved LM's weights are: the base's tensors without peft's, and a tied output embedding written once;
read from the live model or from a state dict gathered on one process (FSDP, where the model's own are shards).

Owns: `base_model`, `base_state_dict`, `without_tied_copy`.
Must not: write files (`modeling.save_lm` and `AdaptivePauseModel.save_pretrained` do).
"""

from __future__ import annotations


def base_model(lm):
    """The HF model under a peft wrapper (`lm` itself when there is none)."""
    return lm.get_base_model() if hasattr(lm, "get_base_model") else lm


def base_state_dict(lm, full: dict | None = None) -> dict:
    """The base LM's weights without peft's adapter tensors (LoRA, trainable-token deltas); from `full`, the peft
    model's gathered state dict, where its own tensors are shards (FSDP)."""
    items = (base_model(lm).state_dict().items() if full is None
             else ((key.removeprefix("base_model.model."), value) for key, value in full.items()))
    state = {}
    for key, value in items:
        if "lora_" in key or "trainable_tokens_" in key:
            continue
        state[key.replace(".token_adapter.base_layer", "").replace(".base_layer", "")] = value
    return state if full is None else without_tied_copy(base_model(lm), state)


def without_tied_copy(model, state_dict: dict) -> dict:
    """A gathered (FSDP) state dict holds a tied output embedding as its own copy, and save_pretrained, which
    finds ties by shared storage, would write the matrix twice: keep only the input embedding's."""
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    plain = [getattr(getattr(m, "token_adapter", None), "base_layer", m) for m in (inp, out)]  # peft's token rows
    if inp is None or out is None or getattr(plain[0], "weight", None) is not getattr(plain[1], "weight", None):
        return state_dict
    name = next(name for name, module in model.named_modules() if module is out) + ".weight"
    return {key: value for key, value in state_dict.items() if key != name}
