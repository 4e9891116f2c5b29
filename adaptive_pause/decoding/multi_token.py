"""Multi-token steps of `DecodeSession`: known pauses prefilled in one forward pass.

Owns: `step_pauses` (a chunk of pauses a policy committed to, `chunk_pauses`) and `step_speculative` (a run
of pauses prefilled at once and kept as far as the controller confirms them), with the decision they may
carry over to the next step (`pending`). Context and positions are exactly those of appending the same
tokens one by one (rejected or padding slots are masked); tests check it.

Must not: choose actions itself (the policy does), or know about tasks, rewards or training.
"""

from __future__ import annotations

import torch

from policies.base import EMIT, PAUSE, ControllerInputs, Decision, PausePolicy

from ..countdown import lm_inputs
from ..positions import advance, next_position_ids
from .forward import forward_last_hidden
from .trace import mask_pause


class MultiTokenSteps:
    """Mixed into `DecodeSession`: the steps that append more than one token per row in one pass."""

    def init_pending(self) -> None:
        # A controller decision already taken for the next step (speculation stopped at an emit there).
        self.pending = torch.zeros(self.batch, dtype=torch.bool, device=self.device)  # (batch,)
        self.pending_log_prob = torch.zeros(self.batch, device=self.device)  # (batch,)
        self.pending_value = torch.zeros(self.batch, device=self.device)  # (batch,)

    def _forward_all(self, input_ids, attention_mask, positions, countdown):
        """Run the LM on a chunk (batch, n) with its countdown inputs; return every position's (hidden (batch, n, hidden), masked float
        logits (batch, n, vocab), top_prob (batch, n)) without changing the session's current state."""
        n = input_ids.shape[1]
        out, last = forward_last_hidden(self.model, **lm_inputs(self.model, input_ids, countdown),
                                        attention_mask=attention_mask, position_ids=positions, use_cache=True,
                                        logits_to_keep=n, **{self._cache_key: self.cache})
        logits = mask_pause(out.logits.float(), self.pause_id)
        return last[:, -n:], logits, logits.softmax(-1).amax(-1)

    def take_pending(self, decision: Decision) -> Decision:
        """`decision` with rows that already decided to emit (a speculative run stopped there) overridden."""
        p = self.pending
        return Decision(torch.where(p, EMIT, decision.action), torch.where(p, self.pending_log_prob,
                        decision.log_prob.float()), torch.where(p, self.pending_value, decision.value.float()))

    @torch.no_grad()
    def step_speculative(self, decision: Decision, policy: PausePolicy, width: int,
                         greedy: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        """Speculative pauses: rows that decided to pause get up to `width` pauses in ONE forward pass.

        Pauses are known inputs, so the hidden states after 1, 2, ... pauses all come out of one pass. The
        controller then decides at each of them (one vectorised call over rows x slots) and a row keeps its
        pauses up to its first emit decision; the rejected ones are masked out (attention mask 0, as chunk
        padding), so context and positions are exactly those of deciding pause by pause. That emit decision
        is kept (`pending`) and honoured at the next step. Rows that decided to emit emit in the same pass.
        Decisions are taken at chunk boundaries' urgency. Returns the active mask.
        """
        if self.done:
            raise ValueError("step_speculative: every row has finished; check `done` before stepping")
        active = self.active
        forced = self.forced()
        pause0 = (decision.action == PAUSE) & active & ~forced  # (batch,)
        spec = torch.where(pause0, self.pause_room().clamp(max=width), 0)  # (batch,) speculative pauses per row
        count = torch.where(active & ~pause0, 1, spec)  # (batch,) slots each row fills (emit rows: one)
        w = max(int(count.max()), 1)
        emit_tokens = self._choose_emits()
        self._grow(w)
        slots = torch.arange(w, device=self.device)
        valid = active[:, None] & (slots[None, :] < count[:, None])  # (batch, w), left-aligned
        is_pause = valid & pause0[:, None]
        chunk_ids = torch.where(is_pause, self.pause_id, torch.where(valid, emit_tokens[:, None], self.pad_id))
        state = self.positions
        chunk_pos = torch.zeros((self.batch, w), dtype=torch.long, device=self.device)
        for j in range(w):  # over chunk slots, never over rows
            chunk_pos[:, j] = next_position_ids(state, is_pause[:, j], self.numbering, self.pause_slots)
            state = advance(state, is_pause[:, j], valid[:, j])
        self._mask[:, self.length:self.length + w] = valid
        # Speculative pauses are per-step decisions: each commits to one pause (countdown 1).
        hidden, logits, top_prob = self._forward_all(chunk_ids, self._mask[:, :self.length + w], chunk_pos,
                                                     is_pause.long())
        self.forward_passes += 1

        # The controller at the state after pause j+1 (slot j) decides whether pause j+2 is kept.
        before, total = self.pauses_before_token, self.pauses_total
        if w > 1:
            spent = slots[None, :-1] + 1  # (1, w-1)
            inputs = ControllerInputs(self._features(hidden[:, :-1]).flatten(0, 1),
                                      self.urgency[:, None].expand(-1, w - 1).flatten(),
                                      (before[:, None] + spent).flatten(), (total[:, None] + spent).flatten(),
                                      top_prob[:, :-1].flatten())
            inner = policy.decide(inputs, greedy=greedy, generator=generator)
            again = inner.action.view(self.batch, w - 1).bool()  # (batch, w-1)
            inner_lp = inner.log_prob.view(self.batch, w - 1).float()
            inner_v = inner.value.view(self.batch, w - 1).float()
            kept_run = torch.cat([torch.ones_like(again[:, :1]), again], 1).long().cumprod(1).bool()  # (batch, w)
        else:
            kept_run = torch.ones((self.batch, 1), dtype=torch.bool, device=self.device)
        accepted = valid & (kept_run | ~pause0[:, None])  # (batch, w)
        kept = accepted.sum(1)  # (batch,) pauses kept (pause rows) or 1 (emit rows)
        last = (kept - 1).clamp(min=0)  # (batch,) slot whose output is the row's new state
        # A pause row stopped early by an emit decision at slot `last`: that decision is taken.
        stopped = pause0 & (kept < spec)
        if w > 1:
            at = last.clamp(max=w - 2)[:, None]
            self.pending_log_prob = torch.where(stopped, inner_lp.gather(1, at)[:, 0], 0.0)
            self.pending_value = torch.where(stopped, inner_v.gather(1, at)[:, 0], 0.0)
        self.pending = stopped

        # Record and account slot by slot; rejected slots become masked padding.
        self._bias[:, 0, 0, self.length:self.length + w].masked_fill_(~accepted, self._masked)
        self._every_column_attended = False  # rejected slots stay in the sequence, masked
        self._mask[:, self.length:self.length + w] = accepted
        self._ids[:, self.length:self.length + w] = torch.where(accepted, chunk_ids, self.pad_id)
        self.length += w
        for j in range(w):
            slot_valid, slot_pause = accepted[:, j], accepted[:, j] & pause0
            if j == 0:
                self._record(slot_valid, chunk_ids[:, j], slot_pause, decision, forced & slot_valid, None,
                             countdown=slot_pause.long())
            else:
                self.hidden, self.top_prob = hidden[:, j - 1], top_prob[:, j - 1]
                step_decision = Decision(again[:, j - 1].long(), inner_lp[:, j - 1], inner_v[:, j - 1])
                self._record(slot_valid, chunk_ids[:, j], slot_pause, step_decision, torch.zeros_like(slot_valid),
                             None, countdown=slot_pause.long())
            self.positions = advance(self.positions, slot_pause, slot_valid)
            self._after_append(chunk_ids[:, j], slot_pause, slot_valid & ~pause0, slot_valid)
        self._refresh_done()
        row = torch.arange(self.batch, device=self.device)
        self.hidden = hidden[row, last]
        self.logits = logits[row, last]
        self.top_prob = top_prob[row, last]
        return active

    @torch.no_grad()
    def step_pauses(self, pauses: torch.Tensor, decision: Decision | None = None,
                    deciding: torch.Tensor | None = None) -> torch.Tensor:
        """One forward pass appending `pauses[r]` known pauses to each active row, or an emit where it is 0.

        pauses: (batch,) long >= 0. This is the chunked-pause step: pauses are
        known inputs, so m of them cost one sequential forward pass instead of
        m. Rows are right-aligned in a chunk of width max(pauses, 1); shorter
        rows are left-filled with masked padding, so their positions and
        context are exactly those of appending one by one. Pauses beyond a cap
        are dropped (a row with no room left emits, flagged forced). The
        decision, if given, is recorded at each row's first slot; the further
        pauses of a chunk are flagged `planned`. `deciding` (batch,) bool (default: every active row): rows whose
        decision this is; the others' emits are the end of an earlier plan, flagged `planned` too. A pause's
        countdown input is the pauses of its chunk from it on (k, ..., 1). Returns the active mask.
        """
        if self.done:
            raise ValueError("step_pauses: every row has finished; check `done` before stepping")
        active = self.active
        forced = self.forced()
        pauses = torch.minimum(pauses.to(self.device).long().clamp(min=0), self.pause_room()) * active.long()  # (batch,)
        emit = active & (pauses == 0)  # (batch,): these rows emit one token, in the chunk's last slot
        deciding = active if deciding is None else deciding.to(self.device) & active
        counts = torch.where(emit, torch.ones_like(pauses), pauses)  # (batch,) tokens each row appends
        self.pending = self.pending & ~active
        width = max(int(counts.max()), 1)
        emit_tokens = self._choose_emits()  # (batch,): from the current logits, which emit rows still have
        self._grow(width)
        chunk_ids = torch.full((self.batch, width), self.pad_id, dtype=torch.long, device=self.device)
        chunk_mask = torch.zeros((self.batch, width), dtype=torch.long, device=self.device)
        chunk_pos = torch.zeros((self.batch, width), dtype=torch.long, device=self.device)
        chunk_countdown = torch.zeros((self.batch, width), dtype=torch.long, device=self.device)
        first = width - counts  # (batch,): each row's first slot
        for j in range(width):  # over chunk slots, never over rows
            valid = active & (j >= first)
            slot_emit = emit & (j == width - 1)
            slot_pause = valid & ~slot_emit
            tokens = torch.where(slot_pause, torch.full_like(emit_tokens, self.pause_id), emit_tokens)
            tokens = torch.where(valid, tokens, torch.full_like(tokens, self.pad_id))
            chunk_countdown[:, j] = slot_pause.long() * (width - j)  # pauses of the chunk from this one on
            self._record(valid, tokens, slot_pause, decision, forced & slot_emit,
                         (slot_pause & (j > first)) | (slot_emit & ~deciding & ~forced),
                         decided=valid & (j == first) & deciding, countdown=chunk_countdown[:, j])
            chunk_pos[:, j] = next_position_ids(self.positions, slot_pause, self.numbering, self.pause_slots)
            self.positions = advance(self.positions, slot_pause, valid)
            chunk_ids[:, j] = tokens
            chunk_mask[:, j] = valid.long()
            self._after_append(tokens, slot_pause, slot_emit, valid)
        self._mask[:, self.length:self.length + width] = chunk_mask
        self._bias[:, 0, 0, self.length:self.length + width].masked_fill_(chunk_mask == 0, self._masked)
        if self._every_column_attended:  # rows that write fewer slots than the widest leave masked ones
            self._every_column_attended = bool(chunk_mask.all())
        self._ids[:, self.length:self.length + width] = chunk_ids
        self.length += width
        if not self._refresh_done():
            self._forward(chunk_ids, self._mask[:, :self.length], chunk_pos, chunk_countdown)
            self.forward_passes += 1
        return active
