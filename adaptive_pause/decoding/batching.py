"""Continuous batching for `DecodeSession`: rows join a running session and leave it between steps.

Owns: `admit(running, fresh, keep)` (append a freshly prefilled session's rows to a running one, dropping
the running rows `keep` excludes in the same cache rebuild), `keep_rows`
(drop rows, e.g. finished ones, and the columns no kept row attends to) and `take_records` (hand the
caller each step's records and forget them). Rows are left-padded to a common width: padding columns are
masked (attention mask 0, bias at the dtype's minimum) and positions are per row, so each row's context
and positions are exactly those it would have decoding alone (tests check greedy answers against `generate`).
A session that admits or drops rows keeps no whole-run trace: row indices change, so the caller reads
each step's record as it comes (`take_records`), as the server does. Its interruption records
(`session.interruptions`) follow their rows: re-indexed when rows leave, dropped with them.

Must not: choose actions, schedule requests or know about HTTP; loop over rows in Python.
"""

from __future__ import annotations

import dataclasses

import torch

from ..positions import PositionState
from .cache import decode_cache
from .session import DecodeSession
from .trace import StepRecord

# Per-row tensors of a session (batch first); the optional ones may be None (feature off).
_ROW_STATE = ("urgency", "active", "finish_reason", "pauses_before_token", "pauses_total", "answer_tokens",
              "hidden", "logits", "top_prob", "pending", "pending_log_prob", "pending_value",
              "restart_at", "interrupted")
_OPTIONAL_ROW_STATE = ("prompt_summary", "answer_tail")


def take_records(session: DecodeSession) -> list[StepRecord]:
    """The records of the steps since the last call, removed from the session (a long-running session
    would otherwise keep one record per step forever)."""
    records = session.records
    session.records = []
    session._column_times = []
    return records


def _columns(session: DecodeSession) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The filled part of the column buffers: (mask, bias columns, ids), each (batch, length)."""
    n = session.length
    return session._mask[:, :n], session._bias[:, 0, 0, :n], session._ids[:, :n]


def _layer_states(session: DecodeSession) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) per layer, each (batch, heads, length, head dim)."""
    states = []
    for layer in session.cache.layers:
        if getattr(layer, "is_sliding", False) or not hasattr(layer, "keys") or layer.keys is None:
            raise ValueError("cache: continuous batching needs a full-attention KV cache on every layer; "
                             f"got {type(layer).__name__}")
        if layer.keys.shape[-2] != session.length:
            raise ValueError(f"cache: holds {layer.keys.shape[-2]} positions, the session {session.length}")
        states.append((layer.keys, layer.values))
    return states


def _install(session: DecodeSession, mask, bias_columns, ids, layers) -> None:
    """Replace the session's columns and cache with these (batch, length) columns and per-layer states,
    with room to grow as the session's own constructor leaves it."""
    batch, length = mask.shape
    room = session.config.max_new_tokens + session.config.pause_budget
    capacity = length + room
    device, dtype = session.device, session._dtype
    session._mask = torch.ones((batch, capacity), dtype=torch.long, device=device)
    session._mask[:, :length] = mask
    session._bias = torch.zeros((batch, 1, 1, capacity), dtype=dtype, device=device)
    session._bias[:, 0, 0, :length] = bias_columns
    session._bias_columns = session._bias[:, 0, 0]
    session._ids = torch.full((batch, capacity), session.pad_id, dtype=torch.long, device=device)
    session._ids[:, :length] = ids
    session.length = length
    session._every_column_attended = bool(mask.all())  # (see DecodeSession.__init__)
    cache = decode_cache(session.model, capacity)
    for index, (keys, values) in enumerate(layers):
        cache.update(keys.contiguous(), values.contiguous(), index)  # the cache's own API fills its buffers
    session.cache = cache
    session.batch = batch
    session._features_of = None  # cached features belong to the old rows
    session._stale = True
    session._refresh_done()


def _pad_left(tensor: torch.Tensor, width: int, dim: int, value) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([torch.full(shape, value, dtype=tensor.dtype, device=tensor.device), tensor], dim)


def _check_compatible(running: DecodeSession, fresh: DecodeSession) -> None:
    if fresh.model is not running.model:
        raise ValueError("fresh: must decode with the same model as the running session")
    if fresh.config != running.config:
        raise ValueError("fresh: its DecodeConfig differs from the running session's; rows of one session share "
                         "their limits and sampling")
    if (fresh.pause_id, fresh.numbering, fresh.pause_slots) != (running.pause_id, running.numbering,
                                                                running.pause_slots):
        raise ValueError("fresh: pause settings (pause id, numbering, pause_slots) differ from the running session's")
    if fresh.records or fresh.forward_passes:
        raise ValueError("fresh: must be freshly prefilled (no steps taken)")


@torch.no_grad()
def admit(running: DecodeSession, fresh: DecodeSession, keep: torch.Tensor | None = None) -> None:
    """Append `fresh`'s rows (a just-prefilled session: same model, config and pause settings) to `running`,
    in place, between two steps. With `keep` ((batch,) bool), only the running rows where it is True stay,
    as `keep_rows` would drop the others, in the same rebuild of the cache. The running session's past
    records are dropped (see the module note)."""
    _check_compatible(running, fresh)
    if keep is None:
        kept_columns, kept_layers = _columns(running), _layer_states(running)
    else:
        kept_columns, kept_layers = _select(running, keep, allow_empty=True)  # fresh rows remain
    width = max(kept_columns[0].shape[1], fresh.length)
    columns = []
    for (a, b), fill in zip(zip(kept_columns, _columns(fresh)), (0, running._masked, running.pad_id)):
        columns.append(torch.cat([_pad_left(a, width, 1, fill), _pad_left(b, width, 1, fill)], 0))
    # Padded key/value columns are never attended to (mask 0); zeros keep them finite.
    layers = [(torch.cat([_pad_left(ka, width, 2, 0), _pad_left(kb, width, 2, 0)], 0),
               torch.cat([_pad_left(va, width, 2, 0), _pad_left(vb, width, 2, 0)], 0))
              for (ka, va), (kb, vb) in zip(kept_layers, _layer_states(fresh))]
    for name in _ROW_STATE:
        setattr(running, name, torch.cat([getattr(running, name), getattr(fresh, name)], 0))
    for name in _OPTIONAL_ROW_STATE:
        mine, theirs = getattr(running, name, None), getattr(fresh, name, None)
        if mine is not None and theirs is not None:
            setattr(running, name, torch.cat([mine, theirs], 0))
    running.positions = PositionState(*(torch.cat([getattr(running.positions, f), getattr(fresh.positions, f)], 0)
                                        for f in ("next_contiguous", "tokens_so_far", "pause_run")))
    if fresh._fast is None:  # the fast path is kept only if it was verified on every prompt
        running._fast = None
    take_records(running)
    _install(running, *columns, layers)


def _select(session: DecodeSession, keep: torch.Tensor, allow_empty: bool = False):
    """Keep the rows where `keep` is True in the session's per-row state (in place); return their columns
    and per-layer cache states without the leading columns no kept row attends to (not yet installed)."""
    keep = keep.to(session.device).bool()
    if keep.shape != (session.batch,):
        raise ValueError(f"keep: expected a ({session.batch},) bool mask, got shape {tuple(keep.shape)}")
    if not bool(keep.any()):
        if not allow_empty:
            raise ValueError("keep: a session needs at least one row; drop the session instead")
        # Every row finished: the last step ran no forward, so the cache is a column short; keep nothing.
        mask, bias_columns, ids = (c[:0, :0] for c in _columns(session))
        layers = [(layer.keys[:0, :, :0], layer.values[:0, :, :0]) for layer in session.cache.layers]
        start = 0
    else:
        mask, bias_columns, ids = (c[keep] for c in _columns(session))
        used = mask.bool().any(0)
        start = int(used.long().argmax())
        layers = [(k[keep][:, :, start:], v[keep][:, :, start:]) for k, v in _layer_states(session)]
    # Interruptions follow their rows: a kept row's records take its new index, a dropped row's go with it.
    new_index = (keep.long().cumsum(0) - 1).tolist()
    kept = keep.tolist()
    session.interruptions = [dataclasses.replace(i, row=new_index[i.row]) for i in session.interruptions
                             if kept[i.row]]
    for name in _ROW_STATE:
        setattr(session, name, getattr(session, name)[keep])
    for name in _OPTIONAL_ROW_STATE:
        if getattr(session, name, None) is not None:
            setattr(session, name, getattr(session, name)[keep])
    session.positions = PositionState(*(getattr(session.positions, f)[keep]
                                        for f in ("next_contiguous", "tokens_so_far", "pause_run")))
    return (mask[:, start:], bias_columns[:, start:], ids[:, start:]), layers


@torch.no_grad()
def keep_rows(session: DecodeSession, keep: torch.Tensor) -> None:
    """Keep only the rows where `keep` (batch,) bool is True, in place, between two steps; columns that no
    kept row attends to (leading ones) are dropped, so a long-running session stays as wide as its oldest
    row. The session's past records are dropped (see the module note)."""
    columns, layers = _select(session, keep)
    take_records(session)
    _install(session, *columns, layers)


__all__ = ["admit", "keep_rows", "take_records"]
