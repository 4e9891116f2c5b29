"""The pause countdown: an optional model input telling each pause how many pauses are still to come.

Owns: the model setting (`pause_countdown` in the HF config; the embedding table is the module
`pause_countdown_embedding` on the causal LM, saved as `pause_countdown.safetensors` beside the model), the
whole-sequence rule (`countdown_values`: in a run of n pauses, pause j carries n - j, i.e. n, ..., 1; every other
token 0; capped at `pause_slots`), and `lm_inputs`, the one place a forward's token inputs become
`inputs_embeds = E[token] + C[countdown]`. Row 0 of C is fixed at zero (padding_idx): a forward without pauses
(a prompt pass, the urgency estimator) is exactly the plain model's, and a learned row 0 would only be a bias on
every token input that the token embeddings already carry. Collators, teacher-forced evaluation, the decode loop
and the joint PPO pass all call `lm_inputs`; the decode loop defines what "remaining" means for each controller
(`decoding/session.py`).

Must not: know about tasks, policies or training loops.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

COUNTDOWN_KEY = "pause_countdown"  # in the HF config: true when the model reads a countdown
MODULE_NAME = "pause_countdown_embedding"
WEIGHTS_NAME = "pause_countdown.safetensors"
# The table's keys in a state dict, also as peft wraps it (modules_to_save): saved in its own file, not HF's.
_STATE_KEYS = (f"{MODULE_NAME}.weight", f"{MODULE_NAME}.original_module.weight",
               f"{MODULE_NAME}.modules_to_save.default.weight")


def _base(model) -> nn.Module:
    model = getattr(model, "module", model)  # a DDP wrapper (Accelerate's prepare) holds the model as .module
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def countdown_module(model) -> nn.Module | None:
    """The countdown table of `model` (a HF causal LM or a peft model around one), or None."""
    return getattr(_base(model), MODULE_NAME, None)


def countdown_cap(model) -> int | None:
    """The largest countdown value the model distinguishes (its `pause_slots`), or None without a countdown."""
    module = countdown_module(model)
    return None if module is None else _table(module).num_embeddings - 1


def _table(module: nn.Module) -> nn.Embedding:
    return getattr(module, "original_module", module)  # peft's modules_to_save wrapper keeps the base copy there


def enable_countdown(model, cap: int, weight: torch.Tensor | None = None) -> None:
    """Give `model` a countdown table over 0..cap (zero-initialised: the model starts as it was); idempotent."""
    base = _base(model)
    if not (isinstance(cap, int) and cap >= 1):
        raise ValueError(f"pause_countdown: needs pause_slots >= 1 (the countdown's cap), got {cap!r}")
    if getattr(base, MODULE_NAME, None) is None:
        param = base.get_input_embeddings().weight
        table = nn.Embedding(cap + 1, param.shape[1], padding_idx=0, device=param.device, dtype=param.dtype)
        nn.init.zeros_(table.weight)
        setattr(base, MODULE_NAME, table)
    if weight is not None:
        with torch.no_grad():
            _table(getattr(base, MODULE_NAME)).weight.copy_(weight)
    setattr(base.config, COUNTDOWN_KEY, True)
    ignore = getattr(base, "_keys_to_ignore_on_save", None)  # HF honours this set in save_pretrained
    base._keys_to_ignore_on_save = set(ignore or ()) | set(_STATE_KEYS)


def save_countdown(model, directory: str | os.PathLike, state_dict: dict | None = None) -> None:
    """Write the countdown table beside a saved model (nothing when the model has none)."""
    module = countdown_module(model)
    if module is None:
        return
    weight = next((state_dict[k] for k in _STATE_KEYS if state_dict and k in state_dict), _table(module).weight)
    save_file({"weight": weight.detach().cpu().contiguous()}, str(Path(directory) / WEIGHTS_NAME))


def load_countdown(model, tokenizer, directory: str | os.PathLike):
    """(model, tokenizer), with the countdown table saved in `directory` attached (if there is one)."""
    path = Path(directory) / WEIGHTS_NAME
    if path.is_file():
        weight = load_file(str(path))["weight"]
        enable_countdown(model, int(weight.shape[0]) - 1, weight)
    elif getattr(_base(model).config, COUNTDOWN_KEY, False):
        raise ValueError(f"{directory}: the model's config says pause_countdown but {WEIGHTS_NAME} is missing")
    return model, tokenizer


def countdown_values(input_ids: torch.Tensor, attention_mask: torch.Tensor, pause_id: int,
                     cap: int) -> torch.Tensor:  # (batch, seq) long
    """The whole-sequence rule: each real pause carries the pauses from it to the end of its run (itself
    included), capped at `cap`; other tokens and padding 0. Masked columns inside a run are skipped, as in
    `positions.position_ids`."""
    real = attention_mask.bool()
    is_pause = (input_ids == pause_id) & real
    token = real & ~is_pause
    # Read right to left: pauses counted since the last non-pause token seen from the right.
    pause_r, token_r = is_pause.flip(-1).long(), token.flip(-1).long()
    pauses_so_far = pause_r.cumsum(-1)
    at_last_token = torch.cummax(pauses_so_far * token_r, dim=-1).values
    remaining = (pauses_so_far - at_last_token).flip(-1)
    return torch.where(is_pause, remaining.clamp(max=cap), torch.zeros_like(remaining))


def lm_inputs(model, input_ids: torch.Tensor, countdown: torch.Tensor | None) -> dict:
    """A forward's token inputs: {"input_ids"} for a model without a countdown (or no countdown given), else
    {"inputs_embeds": E[input_ids] + C[countdown capped]}. `input_ids`, `countdown`: (batch, n)."""
    module = countdown_module(model)
    if module is None or countdown is None:
        return {"input_ids": input_ids}
    cap = _table(module).num_embeddings - 1
    embeds = _base(model).get_input_embeddings()(input_ids)  # peft swaps wrapped layers in place: the base has them
    return {"inputs_embeds": embeds + module(countdown.clamp(0, cap)).to(embeds.dtype)}
