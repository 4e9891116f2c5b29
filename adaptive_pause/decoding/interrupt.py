"""Interruptions: text that arrives while rows are being answered, prefilled into their context in one pass.

Owns: `interrupt(rows, texts, urgency=None)` of `DecodeSession` (validation; the framed chunk
`<interrupt> text </interrupt>`, right-aligned with masked padding as in `step_pauses`, numbered by the one
position rule; one forward pass; rows not interrupted keep their state exactly), what an interruption
resets (the answer restarts after it: the row may pause again and its answer is what follows the last
interruption), the `Interruption` records the trace carries, and how a result reads answers (an EOS as the
very first reply to an interruption is a cancellation: finish reason `cancelled`).
Why a closing marker: the text arrives whole, but a causal model reads it one token at a time, so without
`</interrupt>` it cannot tell "add 5" from the start of "add 50"; the closing marker is the point at which the
row's own output resumes, and the one place training puts the first target after an interruption.

Must not: know what kind an interruption is (tasks do) or how urgency is estimated (a callable is passed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, Union

import torch

from ..positions import advance, next_position_ids
from ..tokens import encode_text, interrupt_token_ids, special_token_strings
from .cache import context_length
from .config import as_urgency
from .trace import CANCELLED, FINISH_NAMES, FINISHED_EOS


@dataclass(frozen=True)
class Interruption:
    """One interruption of one row, as the trace records it."""

    column: int  # trace columns (appended token slots) before it arrived
    row: int
    text: str
    token_ids: tuple[int, ...]  # <interrupt> + the text's tokens + </interrupt>
    urgency: float | None  # the row's urgency from the next step on, when the interruption set one


# urgency argument of `interrupt`: a number, one per row, or a reader (session, rows, texts) -> one per row.
InterruptUrgency = Union[float, Sequence[float], torch.Tensor, Callable, None]


def check_interruption_text(tokenizer, text, what: str = "text") -> None:
    """An interruption is plain words: a non-empty string holding no special token's text (`<pause>`, `</s>`,
    the markers), else a ValueError naming `what`. Shared by `DecodeSession.interrupt` and the server."""
    if not isinstance(text, str):
        raise ValueError(f"{what}: expected a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"{what}: empty interruption text")
    found = [token for token in special_token_strings(tokenizer) if token in text]
    if found:
        raise ValueError(f"{what}: contains special-token text {found!r}; an interruption is plain words (it is "
                         "framed by the interrupt markers), so this is refused rather than guessed at")


class InterruptSteps:
    """Mixed into `DecodeSession`: the interruption step."""

    def init_interruptions(self) -> None:
        self.interruptions: list[Interruption] = []
        # Emitted tokens before each row's last interruption: its answer is what follows (batch,) long.
        self.restart_at = torch.zeros(self.batch, dtype=torch.long, device=self.device)
        self.interrupted = torch.zeros(self.batch, dtype=torch.bool, device=self.device)  # (batch,)
        # Set by the caller that built the session (e.g. `generate` with an urgency estimator): how an
        # interruption's urgency is read when `interrupt` is given none. None: urgency stays as it is.
        self.urgency_reader: Callable | None = None

    def _check_interruption(self, rows, texts) -> tuple[list[int], list[str]]:
        if isinstance(rows, (int, torch.Tensor)) and not isinstance(rows, bool) and torch.as_tensor(rows).dim() == 0:
            rows = [int(rows)]
        try:
            listed = rows.tolist() if isinstance(rows, torch.Tensor) else list(rows)
        except TypeError:
            listed = None
        if isinstance(rows, (str, bytes)) or listed is None or \
                not all(isinstance(r, int) and not isinstance(r, bool) for r in listed):
            raise ValueError(f"rows: expected row indices (integers), got {rows!r}")
        rows = listed
        if not rows:
            raise ValueError("rows: need at least one row to interrupt")
        if len(set(rows)) != len(rows):
            raise ValueError(f"rows: each row may be interrupted once per call, got {rows}")
        bad = [r for r in rows if not 0 <= r < self.batch]
        if bad:
            raise ValueError(f"rows: row indices must lie in [0, {self.batch}), got {bad}")
        texts = [texts] * len(rows) if isinstance(texts, str) else list(texts)
        if len(texts) != len(rows):
            raise ValueError(f"texts: got {len(texts)} texts for {len(rows)} rows")
        for i, text in enumerate(texts):
            check_interruption_text(self.tokenizer, text, f"texts[{i}]")
        active = self.active.cpu()
        reasons = self.finish_reason.cpu()
        for r in rows:
            if not bool(active[r]):
                raise ValueError(f"rows: row {r} has already finished ({FINISH_NAMES[int(reasons[r])]}); only a "
                                 "running row can be interrupted")
        return rows, texts

    def _check_room(self, rows: list[int], framed: list[list[int]]) -> None:
        """The interruption plus a whole new answer must still fit the model's positions."""
        context = context_length(self.model)
        if context is None:
            return
        state = self.positions
        for i, (r, ids) in enumerate(zip(rows, framed)):
            if self.numbering == "slotted":
                needed = (int(state.tokens_so_far[r]) + len(ids) + self.config.max_new_tokens) * (self.pause_slots + 1)
            else:
                needed = int(state.next_contiguous[r]) + len(ids) + self.config.max_new_tokens + self._pause_budget
            if needed > context:
                raise ValueError(f"texts[{i}]: row {r} with this interruption ({len(ids)} tokens) and a new answer "
                                 f"needs positions up to {needed}, more than the model's context of {context}")

    @torch.no_grad()
    def interrupt(self, rows: int | Sequence[int], texts: str | Sequence[str],
                  urgency: InterruptUrgency = None) -> None:
        """`texts[i]` arrives for row `rows[i]` now (between steps: during its pauses or between answer tokens).

        `<interrupt> text </interrupt>` enters each such row's context in ONE forward pass; other rows are
        untouched. Text holding a special token's string (`<pause>`, `</s>`, the markers) is refused with a
        ValueError; the rest is encoded literally (`tokens.encode_text`, never parsed for special tokens).
        Each interrupted row restarts its answer after it (its pause counters for the current token restart
        too; its pause budget does not). `urgency` (a number, one per row, or a reader
        (session, rows, texts) -> one per row; default the session's `urgency_reader`, else unchanged) is
        the rows' urgency from the next step on.
        """
        rows, texts = self._check_interruption(rows, texts)
        opening, closing = interrupt_token_ids(self.tokenizer)
        framed = [[opening] + encode_text(self.tokenizer, t, what=f"texts[{i}]") + [closing]
                  for i, t in enumerate(texts)]
        self._check_room(rows, framed)
        reader = self.urgency_reader if urgency is None else urgency
        new_urgency = None
        if reader is not None:
            values = reader(self, rows, texts) if callable(reader) else reader
            new_urgency = as_urgency(values, len(rows), self.device)  # (len(rows),)

        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        hit = torch.zeros(self.batch, dtype=torch.bool, device=self.device)
        hit[index] = True  # (batch,)
        width = max(len(ids) for ids in framed)
        chunk_ids = torch.full((self.batch, width), self.pad_id, dtype=torch.long, device=self.device)
        for r, ids in zip(rows, framed):  # building the chunk from Python lists: once per interruption
            chunk_ids[r, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        lengths = torch.zeros(self.batch, dtype=torch.long, device=self.device)
        lengths[index] = torch.tensor([len(ids) for ids in framed], dtype=torch.long, device=self.device)
        slots = torch.arange(width, device=self.device)
        valid = hit[:, None] & (slots[None, :] >= (width - lengths)[:, None])  # (batch, width), right-aligned
        no_pause = torch.zeros(self.batch, dtype=torch.bool, device=self.device)
        chunk_pos = torch.zeros((self.batch, width), dtype=torch.long, device=self.device)
        for j in range(width):  # over chunk slots, never over rows
            chunk_pos[:, j] = next_position_ids(self.positions, no_pause, self.numbering, self.pause_slots)
            self.positions = advance(self.positions, no_pause, valid[:, j])
        self._grow(width)
        self._mask[:, self.length:self.length + width] = valid
        self._bias[:, 0, 0, self.length:self.length + width].masked_fill_(~valid, self._masked)
        if self._every_column_attended:  # rows not interrupted (or with shorter texts) get masked slots
            self._every_column_attended = bool(valid.all())
        self._ids[:, self.length:self.length + width] = chunk_ids
        self.length += width
        kept = (self.hidden, self.logits, self.top_prob)
        self._forward(chunk_ids, self._mask[:, :self.length], chunk_pos, torch.zeros_like(chunk_ids))  # not pauses: 0
        self.forward_passes += 1
        # Rows not interrupted read only masked padding in this pass: their state stays what it was.
        self.hidden = torch.where(hit[:, None], self.hidden, kept[0])
        self.logits = torch.where(hit[:, None], self.logits, kept[1])
        self.top_prob = torch.where(hit, self.top_prob, kept[2])

        # The answer restarts: counters are replaced, never updated in place (earlier ControllerInputs stay valid).
        self.restart_at = torch.where(hit, self.restart_at + self.answer_tokens, self.restart_at)
        self.answer_tokens = self.answer_tokens.masked_fill(hit, 0)
        self.pauses_before_token = self.pauses_before_token.masked_fill(hit, 0)
        self.interrupted = self.interrupted | hit
        self.pending = self.pending & ~hit
        if self.stop_criteria is not None:
            self.answer_tail = self.answer_tail.masked_fill(hit[:, None], self.pad_id)
        if new_urgency is not None:
            self.set_urgency(new_urgency, rows)
        column = len(self.records)
        for i, (r, text, ids) in enumerate(zip(rows, texts, framed)):
            self.interruptions.append(Interruption(column, r, text, tuple(ids),
                                                   None if new_urgency is None else float(new_urgency[i])))

    def answers_after_interruptions(self, answer_ids: list[list[int]], pauses_per_token: list[list[int]],
                                    finish_reasons: list[str]) -> None:
        """In place: each interrupted row's answer is what it emitted after its last interruption; a row whose
        first reply to it was EOS finished `cancelled` (the model took the interruption as "never mind")."""
        if not self.interruptions:
            return
        starts = self.restart_at.cpu().tolist()
        answered = (self.answer_tokens > 0).cpu().tolist()  # an EOS counts as an emitted token
        interrupted = self.interrupted.cpu().tolist()
        for row in range(self.batch):  # once per result, over Python lists: not the per-step path
            if not interrupted[row]:
                continue
            answer_ids[row] = answer_ids[row][starts[row]:]
            pauses_per_token[row] = pauses_per_token[row][starts[row]:]
            if finish_reasons[row] == FINISH_NAMES[FINISHED_EOS] and answered[row] and not answer_ids[row]:
                finish_reasons[row] = FINISH_NAMES[CANCELLED]
