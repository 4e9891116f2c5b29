"""What the decode loop records and returns, and the rules it shares with the teacher-forced replay.

Owns: `StepRecord` (one named record per appended token slot), `DecodeTrace` (the records stacked to
(batch, steps) tensors), `DecodeResult`, the finish reasons, and the two rules that must read the same in
the loop and in the replay: `controller_features` (what a controller reads) and `mask_pause` (an emit never
produces `<pause>`).

Must not: run the model, or know about tasks, rewards or training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from policies.base import EMIT, ControllerInputs

# Finish reasons, stored per row as small ints so the hot path stays on tensors.
RUNNING, FINISHED_EOS, FINISHED_STOP, FINISHED_LENGTH, CANCELLED = 0, 1, 2, 3, 4
FINISH_NAMES = {RUNNING: "running", FINISHED_EOS: "eos", FINISHED_STOP: "stop_string",
                FINISHED_LENGTH: "max_new_tokens", CANCELLED: "cancelled"}


def mask_pause(logits: torch.Tensor, pause_id: int) -> torch.Tensor:  # (..., vocab) float
    """`logits` with `<pause>` at -inf: an emit never produces a pause. In place unless autograd tracks it."""
    if logits.requires_grad:
        logits = logits.clone()
    logits[..., pause_id] = -math.inf
    return logits


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # (batch, hidden)
    """Mean of hidden (batch, length, hidden) over the columns where mask (batch, length) is 1."""
    keep = mask.bool()[..., None]
    # masked_fill, not a product: a padded column's state may be NaN/inf (fully masked queries in half precision)
    return hidden.masked_fill(~keep, 0).sum(1) / keep.sum(1).clamp(min=1).to(hidden.dtype)


def controller_features(hidden: torch.Tensor, prompt_summary: torch.Tensor | None) -> torch.Tensor:
    """What a controller reads from hidden states (batch, hidden) or (batch, n, hidden): the states alone, or
    [state, prompt summary (batch, hidden)] (2 x hidden) for heads built with `prompt_summary`."""
    if prompt_summary is None:
        return hidden
    summary = prompt_summary if hidden.dim() == 2 else prompt_summary[:, None].expand(-1, hidden.shape[1], -1)
    return torch.cat([hidden, summary.to(hidden.dtype)], -1)


@dataclass
class StepRecord:
    """One appended token slot, per row: all (batch,) tensors, or None where the slot has no such value."""

    valid: torch.Tensor  # bool: the row appended a real token in this slot
    tokens: torch.Tensor  # long: the token appended (<pause> or an answer token; pad where invalid)
    is_pause: torch.Tensor  # bool: the token is <pause>
    log_prob: torch.Tensor | None  # float: the controller's log-prob of its action (None: no decision)
    value: torch.Tensor | None  # float: the controller's value estimate
    forced: torch.Tensor  # bool: an emit forced by a cap
    planned: torch.Tensor | None  # bool: a pause committed ahead (chunked), not decided here
    decided: torch.Tensor | None  # bool: rows where the decision was taken in this slot (None: all valid rows)
    urgency: torch.Tensor  # float: controller input
    pauses_before_token: torch.Tensor  # long: controller input
    pauses_total: torch.Tensor  # long: controller input
    top_prob: torch.Tensor  # float: controller input
    features: torch.Tensor | None  # (batch, feature width) float, or None when features are not recorded
    countdown: torch.Tensor | None = None  # long: the countdown input fed with the token (0 for emits)
    choice: torch.Tensor | None = None  # long: the decision's own action (a planning controller's count)


@dataclass
class DecodeTrace:
    """Per-step records, one column per appended token slot. Invalid entries (row inactive, chunk padding) are 0."""

    valid: torch.Tensor  # (batch, steps) bool: the row appended a real token in this column
    tokens: torch.Tensor  # (batch, steps) long: the token appended (<pause> or answer token)
    actions: torch.Tensor  # (batch, steps) long: 1 pause, 0 emit
    log_probs: torch.Tensor  # (batch, steps) float: controller log-prob of the action (0 where forced/planned)
    values: torch.Tensor  # (batch, steps) float: controller value estimate
    forced: torch.Tensor  # (batch, steps) bool: emit forced by a cap (not a decision; never train on it)
    planned: torch.Tensor  # (batch, steps) bool: a pause committed ahead by `plan_pauses` (chunked)
    urgency: torch.Tensor  # (batch, steps) float: controller input
    pauses_before_token: torch.Tensor  # (batch, steps) long: controller input
    pauses_total: torch.Tensor  # (batch, steps) long: controller input
    top_prob: torch.Tensor  # (batch, steps) float: controller input
    features: torch.Tensor | None  # (batch, steps, feature width) float, or None
    countdown: torch.Tensor | None = None  # (batch, steps) long: the countdown input fed with each token
    choices: torch.Tensor | None = None  # (batch, steps) long: the controller's action where it decided (a
    #                                      planning controller's count; per-step: = actions), else `actions`
    interruptions: list = field(default_factory=list)  # decoding.interrupt.Interruption records, in arrival order

    def decisions(self) -> torch.Tensor:  # (batch, steps) bool
        """Steps that were genuine controller decisions: what PPO trains on."""
        return self.valid & ~self.forced & ~self.planned

    def controller_inputs(self) -> ControllerInputs:
        """All steps flattened to (batch * steps,) controller inputs (features required)."""
        if self.features is None:
            raise ValueError("features: this trace was recorded with record_features=False")
        return ControllerInputs(self.features.flatten(0, 1), self.urgency.flatten(), self.pauses_before_token.flatten(),
                                self.pauses_total.flatten(), self.top_prob.flatten())

    @classmethod
    def stack(cls, records: list[StepRecord], batch: int, device, feature_width: int | None) -> "DecodeTrace":
        """Stack per-slot records to (batch, steps); `feature_width` None: features were not recorded."""
        if not records:
            z = torch.zeros((batch, 0), device=device)
            features = None if feature_width is None else torch.zeros((batch, 0, feature_width), device=device)
            return cls(z.bool(), z.long(), z.long(), z, z, z.bool(), z.bool(), z, z.long(), z.long(), z, features,
                       z.long(), z.long())
        zeros = torch.zeros(batch, device=device)

        def stack(name: str, fill=None) -> torch.Tensor:  # (batch, steps)
            items = [getattr(r, name) for r in records]
            if fill is not None:
                items = [fill(r) if x is None else x for r, x in zip(records, items)]
            return torch.stack(items, 1)

        valid = stack("valid")
        forced = stack("forced") & valid
        planned = stack("planned", lambda r: torch.zeros_like(r.valid)) & valid
        decided = stack("decided", lambda r: r.valid)
        keep = decided & ~forced & ~planned
        log_probs = torch.where(keep, stack("log_prob", lambda r: zeros).float(), 0.0)
        values = torch.where(decided, stack("value", lambda r: zeros).float(), 0.0)
        actions = torch.where(valid, stack("is_pause").long(), 0)
        choices = torch.where(keep, stack("choice", lambda r: r.is_pause.long()), actions)
        countdown = torch.where(valid, stack("countdown", lambda r: torch.zeros_like(r.tokens)), 0)
        features = None
        if feature_width is not None:
            features = stack("features").float() * valid[..., None]  # (batch, steps, feature width)
        return cls(valid=valid, tokens=torch.where(valid, stack("tokens"), 0),
                   actions=actions, log_probs=log_probs, values=values,
                   forced=forced, planned=planned, urgency=stack("urgency").float(),
                   pauses_before_token=stack("pauses_before_token"), pauses_total=stack("pauses_total"),
                   top_prob=stack("top_prob").float(), features=features, countdown=countdown, choices=choices)


@dataclass
class DecodeResult:
    """What a finished (or stopped) session produced; lists are per row."""

    answer_ids: list[list[int]]  # answer tokens, EOS excluded, pauses excluded
    pauses_per_token: list[list[int]]  # pauses before each answer token (and before EOS, if emitted)
    pauses_total: torch.Tensor  # (batch,) long
    answer_tokens: torch.Tensor  # (batch,) long: tokens emitted (EOS included)
    steps: torch.Tensor  # (batch,) long: tokens appended after the prompt (pauses + emits)
    forward_passes: int  # sequential forward passes after prefill (latency in model calls)
    finish_reasons: list[str]
    time_s: torch.Tensor  # (batch,) float: wall-clock from start (prefill included) until the row's last token
    #                       was decided; rows still running: until result() was called
    trace: DecodeTrace
    sequences: torch.Tensor  # (batch, prompt + steps) long: left-padded prompt + appended tokens (pad where invalid)
    attention_mask: torch.Tensor  # (batch, prompt + steps) long: 1 where `sequences` holds a real token
    countdown: torch.Tensor | None = None  # (batch, prompt + steps) long: the countdown input of each column

    @property
    def cancelled(self) -> list[bool]:
        return [r == FINISH_NAMES[CANCELLED] for r in self.finish_reasons]


def answers_from_trace(trace: DecodeTrace, finish_reason: torch.Tensor, eos_ids: set[int]
                       ) -> tuple[list[list[int]], list[list[int]]]:
    """(answer ids, pauses before each answer token) per row, read back from the trace (EOS dropped)."""
    emitted = (trace.valid & (trace.actions == EMIT)).cpu()  # (batch, steps)
    tokens, before = trace.tokens.cpu(), trace.pauses_before_token.cpu()
    reasons = finish_reason.cpu()
    answer_ids, pauses_per_token = [], []
    for row in range(emitted.shape[0]):  # once per run, to build Python lists: not the per-step path
        ids = tokens[row][emitted[row]].tolist()
        per_token = before[row][emitted[row]].tolist()
        if int(reasons[row]) == FINISHED_EOS and ids and ids[-1] in eos_ids:
            ids = ids[:-1]
        answer_ids.append(ids)
        pauses_per_token.append(per_token)
    return answer_ids, pauses_per_token


__all__ = [
    "StepRecord", "DecodeTrace", "DecodeResult", "controller_features", "mask_pause", "masked_mean",
    "answers_from_trace", "FINISH_NAMES"]
