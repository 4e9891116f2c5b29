"""Position numbering: the one rule that gives every token its `position_ids`.

Owns: the two numberings (../shared/RESEARCH.md, section 1), vectorised for whole sequences (collators,
teacher-forced evaluation) and one step at a time (the decode loop), on the same arithmetic.
- ``contiguous``: every real token takes the next position (HF's default). Required for a pretrained base.
- ``slotted``: every non-pause token owns a block of ``pause_slots + 1`` positions; the pauses before it fill
  the first slots and the token takes the last. A token's position never depends on how many pauses came
  before it, and pause j before a token always sits at the same offset from it. Padding takes position 0.

Must not: know about tasks, models or policies.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NUMBERINGS = ("contiguous", "slotted")


def check_numbering(numbering: str, pause_slots: int) -> None:
    if numbering not in NUMBERINGS:
        raise ValueError(f"position_numbering must be one of {NUMBERINGS}, got {numbering!r}")
    if pause_slots < 0:
        raise ValueError(f"pause_slots must be >= 0, got {pause_slots}")


def position_ids(
    input_ids: torch.Tensor,  # (batch, seq)
    attention_mask: torch.Tensor,  # (batch, seq), 1 for real tokens
    pause_id: int,
    numbering: str,
    pause_slots: int,
) -> torch.Tensor:  # (batch, seq), long
    """Positions for whole (left- or right-padded) sequences."""
    check_numbering(numbering, pause_slots)
    real = attention_mask.bool()
    if numbering == "contiguous":
        pos = real.long().cumsum(-1) - 1
        return pos.masked_fill(~real, 0)
    is_pause = (input_ids == pause_id) & real
    token = real & ~is_pause
    tokens_before = token.long().cumsum(-1) - token.long()  # non-pause tokens strictly before
    pauses_so_far = is_pause.long().cumsum(-1)
    # pauses counted up to the last non-pause token (pauses_so_far is monotone, so cummax works)
    at_last_token = torch.cummax(pauses_so_far * token.long(), dim=-1).values
    run_index = pauses_so_far - at_last_token - 1  # 0 for the first pause of a run
    if bool((run_index[is_pause] >= pause_slots).any()):
        raise ValueError(
            f"a run of more than pause_slots={pause_slots} consecutive pauses cannot be numbered "
            "in slotted mode; raise pause_slots (a model setting) or lower max_pauses"
        )
    block = pause_slots + 1
    pos = tokens_before * block + torch.where(is_pause, run_index, torch.full_like(run_index, pause_slots))
    return pos.masked_fill(~real, 0)


@dataclass
class PositionState:
    """Per-row numbering state for the decode loop (all tensors of shape (batch,))."""

    next_contiguous: torch.Tensor  # position the next token takes under contiguous numbering
    tokens_so_far: torch.Tensor  # non-pause tokens written so far
    pause_run: torch.Tensor  # pauses written since the last non-pause token


def initial_state(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, pause_id: int
) -> PositionState:
    """State after the (already numbered) prompt."""
    real = attention_mask.bool()
    is_pause = (input_ids == pause_id) & real
    token = real & ~is_pause
    pauses_so_far = is_pause.long().cumsum(-1)
    at_last_token = torch.cummax(pauses_so_far * token.long(), dim=-1).values
    return PositionState(
        next_contiguous=real.long().sum(-1),
        tokens_so_far=token.long().sum(-1),
        pause_run=(pauses_so_far - at_last_token)[:, -1],
    )


def next_position_ids(
    state: PositionState, is_pause: torch.Tensor, numbering: str, pause_slots: int
) -> torch.Tensor:  # (batch,)
    """Positions for the token about to be appended to every row (`is_pause`: (batch,) bool)."""
    if numbering == "contiguous":
        return state.next_contiguous.clone()
    block = pause_slots + 1
    within = torch.where(is_pause, state.pause_run, torch.full_like(state.pause_run, pause_slots))
    return state.tokens_so_far * block + within


def advance(state: PositionState, is_pause: torch.Tensor, active: torch.Tensor | None = None) -> PositionState:
    """State after appending one token per row; rows with `active` False are left unchanged."""
    step = torch.ones_like(state.next_contiguous) if active is None else active.long()
    pause = is_pause.long() * step
    token = (~is_pause).long() * step
    return PositionState(
        next_contiguous=state.next_contiguous + step,
        tokens_so_far=state.tokens_so_far + token,
        pause_run=torch.where(token.bool(), torch.zeros_like(state.pause_run), state.pause_run + pause),
    )
