"""`DecodeSession`: a left-padded batch being decoded, one appended token per unfinished row per step.

Owns: the prompt pass (prefill), the single-token step, per-row state (urgency, changeable mid-run; pauses
before the current answer token and in total; the position-numbering state; why and when a row finished:
EOS, stop string, `max_new_tokens`, cancelled), the caps (at `max_pauses` before one token or the answer's
pause budget, a step is a *forced emit*: flagged, not a decision), emit sampling with `<pause>` masked, and
the per-step records PPO needs. Multi-token steps (chunked, speculative) are in `multi_token.py`,
interruptions in `interrupt.py`.
The countdown input (a model with `pause_countdown`) carries at each pause the pauses its controller has
committed to from there on: exact for a plan (fixed k, a planning controller: k, ..., 1), and 1 for a per-step
decision, which commits to one pause only (so the last pause before a token always reads 1, as in training; a
run of several per-step pauses reads 1, ..., 1, which a countdown-trained LM never saw, and on such an LM it
gave no gain over one pause: docs/results.md, issue 15, session 12).

Must not: know about tasks, rewards, PPO or files; loop over rows in Python on the per-step path.
"""

from __future__ import annotations

import math
import operator
import time
import weakref
from typing import Sequence

import torch
from transformers import StopStringCriteria

from policies.base import PAUSE, ControllerInputs, Decision

from ..countdown import countdown_values, lm_inputs
from ..positions import PositionState, advance, check_numbering, initial_state, next_position_ids, position_ids
from .cache import cache_argument, context_length, decode_cache, full_attention_only
from .config import DecodeConfig, UrgencyLike, as_urgency
from .forward import forward_last_hidden
from .interrupt import InterruptSteps
from .multi_token import MultiTokenSteps
from .trace import (CANCELLED, FINISH_NAMES, FINISHED_EOS, FINISHED_LENGTH, FINISHED_STOP, DecodeResult,
                    DecodeTrace, StepRecord, answers_from_trace, controller_features, mask_pause, masked_mean)


def check_prompts(model, prompt_ids: Sequence[Sequence[int]], config: DecodeConfig, numbering: str,
                  pause_slots: int) -> None:
    """Prompts must be non-empty and, with the longest answer and pause budget, fit the model's context."""
    if len(prompt_ids) == 0:
        raise ValueError("prompts: need at least one prompt")
    for i, ids in enumerate(prompt_ids):
        if len(ids) == 0:
            raise ValueError(f"prompts[{i}]: empty prompt")
    if numbering == "slotted" and config.max_pauses > pause_slots:
        raise ValueError(f"max_pauses: {config.max_pauses} exceeds the model's pause_slots={pause_slots} "
                         "(slotted numbering reserves that many positions per token)")
    context = context_length(model)
    if context is None:
        return
    longest = max(len(ids) for ids in prompt_ids)
    block = pause_slots + 1 if numbering == "slotted" else 1
    if longest * block > context:
        raise ValueError(f"prompts: a prompt of {longest} tokens takes {longest * block} positions "
                         f"({numbering} numbering), more than the model's context of {context}")
    needed = (longest + config.max_new_tokens) * block if numbering == "slotted" else \
        longest + config.max_new_tokens + config.pause_budget
    if needed > context:
        raise ValueError(f"max_new_tokens: prompt ({longest} tokens) + {config.max_new_tokens} answer tokens "
                         f"+ up to {config.pause_budget} pauses need positions up to {needed}, more than "
                         f"the model's context of {context}; lower max_new_tokens or max_pauses")


def eos_ids(model, tokenizer, pause_id: int) -> list[int]:
    """Every token that ends an answer: the tokenizer's EOS and the generation config's (never `<pause>`)."""
    eos = set()
    if tokenizer.eos_token_id is not None:
        eos.add(int(tokenizer.eos_token_id))
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if gen_eos is not None:
        eos.update([int(gen_eos)] if isinstance(gen_eos, int) else [int(e) for e in gen_eos])
    eos.discard(pause_id)
    return sorted(eos)


def left_pad(prompt_ids: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (batch, longest prompt), left-padded."""
    width = max(len(ids) for ids in prompt_ids)
    input_ids = torch.full((len(prompt_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    for row, ids in enumerate(prompt_ids):  # building the prompt batch, once: not the per-step path
        input_ids[row, width - len(ids):] = torch.as_tensor(list(ids), dtype=torch.long)
        mask[row, width - len(ids):] = 1
    return input_ids, mask



# base model -> whether its logits are exactly head(last hidden state); structural, so checked once per model.
_WHOLE_OUTPUT: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _head_is_whole_output(base, decoder, head) -> bool:
    """Whether `base`'s logits are head(decoder's last hidden state) with nothing after it (a final-logit
    softcap, a logit scale). Why a probe: on a random or lightly trained model the real logits may stay small
    enough that a softcap (c * tanh(x / c)) bends them less than any tolerance. Here the decoder's output is
    replaced (forward hook) by a probe whose logits reach +-50, where any such post-processing shows."""
    known = _WHOLE_OUTPUT.get(base)
    if known is not None:
        return known
    param = head.weight
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(1, 1, param.shape[1], generator=generator).to(param.device, param.dtype)
    with torch.no_grad():
        probe = probe * (50.0 / head(probe).float().abs().max().clamp(min=1e-6)).to(param.dtype)
        expected = head(probe).float()

        def replace_output(module, args, output):
            if isinstance(output, tuple):
                return (probe,) + tuple(output[1:])
            output.last_hidden_state = probe
            return output

        handle = decoder.register_forward_hook(replace_output)
        try:
            token = torch.zeros((1, 1), dtype=torch.long, device=param.device)
            logits = base(input_ids=token, use_cache=False).logits[:, -1:].float()
        finally:
            handle.remove()
    exact = logits.shape == expected.shape and torch.allclose(logits, expected, rtol=1e-4, atol=5e-3)
    _WHOLE_OUTPUT[base] = exact
    return exact

class DecodeSession(MultiTokenSteps, InterruptSteps):
    """A batch being decoded. Construct (prefills), then call `step` until `done`.

    Between steps the caller may read `controller_inputs()` / `forced()`, `set_urgency`, `cancel` rows, or
    append several tokens in one pass (`step_pauses`, `step_speculative`, `interrupt`). `loop.decode` is the
    policy-driven loop over this; the gymnasium env and PPO rollouts drive it the same way.
    """

    def __init__(self, model, tokenizer, prompt_ids: Sequence[Sequence[int]], urgency: UrgencyLike,
                 config: DecodeConfig, pause_id: int, numbering: str, pause_slots: int,
                 seed: int | None = None):
        check_numbering(numbering, pause_slots)
        check_prompts(model, prompt_ids, config, numbering, pause_slots)
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self._pause_budget = config.pause_budget
        self.pause_id, self.numbering, self.pause_slots = int(pause_id), numbering, pause_slots
        param = next(model.parameters())
        self.device = param.device
        self.batch = batch = len(prompt_ids)
        self.urgency = as_urgency(urgency, batch, self.device)  # (batch,)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        input_ids, mask = (t.to(self.device) for t in left_pad(prompt_ids, self.pad_id))
        self.prompt_len = prompt_len = input_ids.shape[1]
        prompt_positions = position_ids(input_ids, mask, self.pause_id, numbering, pause_slots)
        self.prompt_countdown = countdown_values(input_ids, mask, self.pause_id, max(pause_slots, 1))
        self.positions: PositionState = initial_state(input_ids, mask, self.pause_id)
        self.eos_ids = torch.tensor(eos_ids(model, tokenizer, self.pause_id), dtype=torch.long, device=self.device)
        self.stop_criteria = StopStringCriteria(tokenizer, list(config.stop_strings)) if config.stop_strings else None
        if self.stop_criteria is not None:
            width = max(len(s) for s in config.stop_strings) + 1  # every token covers >= 1 character
            self.answer_tail = torch.full((batch, width), self.pad_id, dtype=torch.long, device=self.device)
        self.generator = None
        if seed is not None:
            try:
                value = None if isinstance(seed, bool) else operator.index(seed)  # ints, numpy and torch integers
            except TypeError:
                value = None
            if value is None or not -(2**63) <= value < 2**64:
                raise ValueError(f"seed: an integer in [-2**63, 2**64), got {seed!r}")
            self.generator = torch.Generator(device=self.device).manual_seed(value)

        # Growing buffers (capacity doubles) over the whole sequence: token ids, the 2D attention mask, and
        # the same mask as an additive (batch, 1, 1, length) bias for the single-token fast path.
        capacity = prompt_len + config.max_new_tokens + config.pause_budget
        self._dtype = param.dtype
        self._masked = torch.finfo(param.dtype).min if param.dtype.is_floating_point else -1e9
        self._mask = torch.ones((batch, capacity), dtype=torch.long, device=self.device)
        self._mask[:, :prompt_len] = mask
        self._bias = torch.zeros((batch, 1, 1, capacity), dtype=self._dtype, device=self.device)
        self._bias[:, 0, 0, :prompt_len] = (1 - mask).to(self._dtype) * self._masked
        self._bias_columns = self._bias[:, 0, 0]  # (batch, capacity) view for per-column writes
        self._ids = torch.full((batch, capacity), self.pad_id, dtype=torch.long, device=self.device)
        self._ids[:, :prompt_len] = input_ids
        self.length = prompt_len  # columns used in _mask/_ids/_bias
        # Whether no column of any row is masked yet (no left padding, no finished row, no rejected chunk slot):
        # the fast path then passes no mask at all, as HF does, and transformers' sdpa keeps grouped-query
        # attention native instead of copying keys/values per head group (`use_gqa_in_sdpa` needs mask None).
        # Sticky: once a column is masked it stays in the sequence. Writers that may mask set it False.
        self._every_column_attended = bool(mask.all())
        self.records: list[StepRecord] = []  # one per trace column; stacked by result()

        zeros = torch.zeros(batch, dtype=torch.long, device=self.device)
        self.active = torch.ones(batch, dtype=torch.bool, device=self.device)  # (batch,)
        self._done, self._stale = False, False
        self.finish_reason = zeros.clone()  # (batch,) long, trace.FINISH_* codes
        self.pauses_before_token = zeros.clone()  # (batch,)
        self.pauses_total = zeros.clone()  # (batch,)
        self.answer_tokens = zeros.clone()  # (batch,) tokens emitted so far (EOS included)
        # Finish codes as ready tensors: torch.where with Python numbers would build them at every step.
        self._codes = {code: torch.tensor(code, device=self.device)
                       for code in (FINISHED_EOS, FINISHED_LENGTH, FINISHED_STOP)}
        self.forward_passes = 0
        self.init_pending()
        self.init_interruptions()

        self.cache = decode_cache(model, capacity)
        self.start_time = time.perf_counter()
        self._column_times: list[float] = []  # seconds since start at which each trace column was decided
        self._fast = None  # (decoder, output head) when the single-token fast path is verified; see _prefill
        self.prompt_summary = None  # (batch, hidden): set by the prompt pass when config.prompt_summary
        self._features_of = None  # (hidden, its features): one concatenation per step, not one per reader
        with torch.no_grad():
            self._prefill(input_ids, mask, prompt_positions, self.prompt_countdown)

    # ---- internals -------------------------------------------------------------------------------------------
    def _grow(self, extra_columns: int) -> None:
        need = self.length + extra_columns
        if need <= self._mask.shape[1]:
            return
        grow = max(need, 2 * self._mask.shape[1]) - self._mask.shape[1]
        b, d = self.batch, self.device
        self._mask = torch.cat([self._mask, torch.ones((b, grow), dtype=torch.long, device=d)], 1)
        self._bias = torch.cat([self._bias, torch.zeros((b, 1, 1, grow), dtype=self._dtype, device=d)], 3)
        self._bias_columns = self._bias[:, 0, 0]
        self._ids = torch.cat([self._ids, torch.full((b, grow), self.pad_id, dtype=torch.long, device=d)], 1)

    def _prefill(self, input_ids, attention_mask, positions, countdown) -> None:
        """The prompt pass, through the model's own forward; also decides whether the fast path is exact.

        The fast path (single-token steps) calls the decoder with a ready 4D additive mask over the whole
        sequence and applies the output head to the last hidden state: it skips the per-step mask building and
        output wrappers. It is used only where that is exact: sdpa/eager attention, a cache of full-attention
        layers only (a sliding-window layer keeps only its window, which one whole-sequence mask cannot match),
        logits that are the output head of the last hidden state (`_head_is_whole_output`: no softcap or
        scaling), and, on this very prompt, head(last hidden) reproducing the model's own logits.
        """
        self._cache_key = cache_argument(self.model)
        self._forward(input_ids, attention_mask, positions, countdown)
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        impl = getattr(getattr(base, "config", None), "_attn_implementation", None)
        get_decoder = getattr(base, "get_decoder", None)
        head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
        if impl in ("sdpa", "eager") and get_decoder is not None and head is not None \
                and full_attention_only(self.cache):
            check = mask_pause(head(self.hidden[:, None])[:, -1].float(), self.pause_id)
            if torch.allclose(check, self.logits, rtol=1e-4, atol=1e-4 * float(self.logits.abs().max())) \
                    and _head_is_whole_output(base, get_decoder(), head):
                self._fast = (get_decoder(), head)
                self._decoder_cache_key = cache_argument(self._fast[0])

    def _forward(self, input_ids, attention_mask, positions, countdown) -> None:
        """Run the LM on new tokens (batch, n) with their countdown inputs (batch, n) over the cache; keep the
        last position's hidden state and its logits with `<pause>` masked out."""
        if self._fast is not None and input_ids.shape[1] == 1:
            decoder, head = self._fast
            # (batch, 1, 1, length): 0 attend, min masked; None when nothing is masked (see __init__)
            bias = self._bias[:, :, :, : self.length] if not self._every_column_attended else None
            hidden = decoder(**lm_inputs(self.model, input_ids, countdown), attention_mask=bias, position_ids=positions,
                             use_cache=True, **{self._decoder_cache_key: self.cache}).last_hidden_state[:, -1]
            logits = head(hidden).float()
        else:
            out, last = forward_last_hidden(
                self.model, **lm_inputs(self.model, input_ids, countdown), attention_mask=attention_mask,
                position_ids=positions, use_cache=True, logits_to_keep=1, **{self._cache_key: self.cache})
            hidden = last[:, -1]
            logits = out.logits[:, -1].float()
            if self.config.prompt_summary and self.prompt_summary is None:  # the prompt pass
                self.prompt_summary = masked_mean(last, attention_mask)
        self.hidden = hidden  # (batch, hidden)
        self.logits = mask_pause(logits, self.pause_id)  # (batch, vocab)
        self.top_prob = self.logits.softmax(-1).amax(-1)  # (batch,) top answer-token probability

    def _choose_emits(self) -> torch.Tensor:  # (batch,) long
        if not self.config.do_sample:
            return self.logits.argmax(-1)
        logits = self.logits / self.config.temperature
        if self.config.top_k > 0:
            kth = torch.topk(logits, min(self.config.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, -math.inf)
        if self.config.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
            cumulative = sorted_logits.softmax(-1).cumsum(-1)
            drop_sorted = cumulative - sorted_logits.softmax(-1) > self.config.top_p  # keep the first token always
            drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
            logits = logits.masked_fill(drop, -math.inf)
        return torch.multinomial(logits.softmax(-1), 1, generator=self.generator).squeeze(-1)

    def _record(self, valid, tokens, is_pause, decision: Decision | None, forced, planned, decided=None,
                countdown=None) -> None:
        """Keep one trace column (references only: the session never mutates these tensors in place).
        `decided` (default: valid) marks the rows where `decision` was taken in this column."""
        self.records.append(StepRecord(
            valid=valid, tokens=tokens, is_pause=is_pause,
            log_prob=None if decision is None else decision.log_prob.detach(),
            value=None if decision is None else decision.value.detach(), forced=forced, planned=planned,
            decided=decided, urgency=self.urgency, pauses_before_token=self.pauses_before_token,
            pauses_total=self.pauses_total, top_prob=self.top_prob,
            features=self._features(self.hidden) if self.config.record_features else None, countdown=countdown,
            choice=None if decision is None else decision.action))
        self._column_times.append(time.perf_counter() - self.start_time)

    def _features(self, hidden: torch.Tensor) -> torch.Tensor:  # (batch, [n,] feature width)
        """The controller's features from hidden states (batch, hidden) or (batch, n, hidden)."""
        cached = self._features_of
        if cached is not None and cached[0] is hidden:  # asked again for this step's state (controller, then trace)
            return cached[1]
        features = controller_features(hidden, self.prompt_summary if self.config.prompt_summary else None)
        self._features_of = (hidden, features)  # the session never writes into a state tensor in place
        return features

    def _after_append(self, tokens, is_pause, emit, valid) -> None:
        """Bookkeeping after one token slot: counters and finishing rows (answers are read back from the trace).

        `is_pause` and `emit` must already be restricted to `valid` rows (all callers build them so).
        Counters are replaced, never updated in place, so `ControllerInputs` handed out earlier stay valid.
        """
        self.pauses_total = self.pauses_total + is_pause
        self.pauses_before_token = (self.pauses_before_token + is_pause).masked_fill_(emit, 0)
        self.answer_tokens = self.answer_tokens + emit
        eos = torch.isin(tokens, self.eos_ids)  # (batch,)
        ended = eos | (self.answer_tokens >= self.config.max_new_tokens)
        reason = torch.where(eos, self._codes[FINISHED_EOS], self._codes[FINISHED_LENGTH])
        if self.stop_criteria is not None:
            self.answer_tail = torch.where(emit[:, None], torch.cat([self.answer_tail[:, 1:], tokens[:, None]], 1),
                                           self.answer_tail)
            hit = self.stop_criteria(self.answer_tail, None).to(self.device) & ~eos
            ended = ended | hit
            reason = torch.where(hit, self._codes[FINISHED_STOP], reason)
        self._finish_with(emit & ended, reason)

    def _finish_with(self, rows: torch.Tensor, reason) -> torch.Tensor:
        """Finish `rows` (batch,) bool that are still active, with `reason` (an int or a (batch,) tensor)."""
        newly = rows & self.active
        self.finish_reason = torch.where(newly, reason, self.finish_reason)
        self.active = self.active & ~newly
        self._stale = True  # `done` is refreshed once per step, not once per slot
        return newly

    def _refresh_done(self) -> bool:
        if self._stale:
            self._done = not bool(self.active.any())
            self._stale = False
        return self._done

    def _row_mask(self, rows, name: str) -> torch.Tensor:  # (batch,) bool
        if isinstance(rows, torch.Tensor) and rows.dtype == torch.bool:
            if rows.shape != (self.batch,):
                raise ValueError(f"{name}: a bool mask must have shape ({self.batch},), got {tuple(rows.shape)}")
            return rows.to(self.device)
        try:
            index = torch.as_tensor(rows).flatten()
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"{name}: expected row indices (integers) or a bool mask, got {rows!r}") from None
        if index.numel() and (index.is_floating_point() or index.is_complex() or index.dtype == torch.bool):
            raise ValueError(f"{name}: row indices must be integers, got {index.tolist()}")  # 1.5 is no row
        index = index.long()
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.batch):
            raise ValueError(f"{name}: row indices must lie in [0, {self.batch}), got {index.tolist()}")
        mask = torch.zeros(self.batch, dtype=torch.bool)
        mask[index] = True
        return mask.to(self.device)

    # ---- public ----------------------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """True once every row has finished. Cached: refreshed (one device sync) when rows finish."""
        return self._done

    def forced(self) -> torch.Tensor:  # (batch,) bool
        """Rows whose next step must be an emit (a pause cap is reached)."""
        capped = (self.pauses_before_token >= self.config.max_pauses) | (self.pauses_total >= self._pause_budget)
        if self.config.first_token_pauses_only:
            capped = capped | (self.answer_tokens > 0)
        return self.active & capped

    def pause_room(self) -> torch.Tensor:  # (batch,) long
        """Pauses each row may still write before its next answer token under both caps."""
        return torch.minimum(self.config.max_pauses - self.pauses_before_token,
                             self._pause_budget - self.pauses_total).clamp(min=0)

    def controller_inputs(self) -> ControllerInputs:
        """What the controller sees before the next step, for every row (inactive rows included; ignore them)."""
        return ControllerInputs(self._features(self.hidden), self.urgency, self.pauses_before_token,
                                self.pauses_total, self.top_prob)

    def set_urgency(self, urgency: UrgencyLike, rows: torch.Tensor | Sequence[int] | None = None) -> None:
        """Change urgency from the next step on: for all rows, or only `rows` (indices or a (batch,) bool mask)."""
        if rows is None:
            self.urgency = as_urgency(urgency, self.batch, self.device)
            return
        mask = self._row_mask(rows, "rows")
        if isinstance(urgency, (int, float)) or (isinstance(urgency, torch.Tensor) and urgency.dim() == 0):
            new = as_urgency(urgency, self.batch, self.device)
        else:
            new = self.urgency.clone()
            new[mask] = as_urgency(urgency, int(mask.sum()), self.device)
        self.urgency = torch.where(mask, new, self.urgency)

    def cancel(self, rows: torch.Tensor | Sequence[int]) -> None:
        """Stop `rows` now ("forget that"): they append nothing more and finish as 'cancelled'."""
        self._finish_with(self._row_mask(rows, "rows"), CANCELLED)
        self._refresh_done()

    @torch.no_grad()
    def step(self, actions: torch.Tensor, decision: Decision | None = None,
             committed: torch.Tensor | None = None) -> torch.Tensor:
        """Append one token to every active row: `<pause>` where actions == 1 (unless forced), else an answer token.

        actions: (batch,) long (inactive rows ignored). `decision` (optional) is recorded (log-probs, values).
        committed: (batch,) long, the pauses a row's policy has committed to from here on (`plan_pauses`);
        None: 1 (a per-step decision). A pause's countdown input is that, within the caps (at least 1).
        Returns the (batch,) bool mask of rows that were active for this step.
        """
        if self.done:
            raise ValueError("step: every row has finished; check `done` before stepping")
        active = self.active
        forced = self.forced()
        is_pause = (actions.to(self.device) == PAUSE) & active & ~forced
        emit = active & ~is_pause
        tokens = self._choose_emits().masked_fill_(is_pause, self.pause_id).masked_fill_(~active, self.pad_id)

        self._grow(1)
        countdown = is_pause.long()  # (batch,): a per-step decision commits to this one pause
        if committed is not None:
            left = torch.minimum(committed.to(self.device).long(), self.pause_room()).clamp(min=1)
            countdown = torch.where(is_pause, left, 0)
        self._record(active, tokens, is_pause, decision, forced, None, countdown=countdown)
        if self.config.speculate_pauses:
            self.pending = self.pending & ~active
        pos = next_position_ids(self.positions, is_pause, self.numbering, self.pause_slots)
        self.positions = advance(self.positions, is_pause, active)
        self._mask[:, self.length] = active
        self._bias_columns[:, self.length].masked_fill_(~active, self._masked)  # new columns start at 0
        if self._every_column_attended and self.batch > 1:  # one row: it is active, or step refused above
            self._every_column_attended = bool(active.all())
        self._ids[:, self.length] = tokens
        self.length += 1
        self._after_append(tokens, is_pause, emit, active)
        if not self._refresh_done():
            self._forward(tokens[:, None], self._mask[:, :self.length], pos[:, None], countdown[:, None])
            self.forward_passes += 1
        return active

    def trace(self) -> DecodeTrace:
        width = None
        if self.config.record_features:
            hidden = int(getattr(getattr(self.model, "config", None), "hidden_size", 1))
            width = hidden * (2 if self.config.prompt_summary else 1)
        trace = DecodeTrace.stack(self.records, self.batch, self.device, width)
        trace.interruptions = list(self.interruptions)
        return trace

    def result(self) -> DecodeResult:
        """Collect per-row outputs (call when `done`, or any time for a partial view)."""
        trace = self.trace()
        answer_ids, pauses_per_token = answers_from_trace(trace, self.finish_reason, set(self.eos_ids.tolist()))
        finish_reasons = [FINISH_NAMES[int(r)] for r in self.finish_reason.cpu()]
        self.answers_after_interruptions(answer_ids, pauses_per_token, finish_reasons)
        # A row's time: until its last token was decided (still-running rows: until now).
        now = time.perf_counter() - self.start_time
        column_times = torch.tensor(self._column_times + [now], dtype=torch.float64)
        valid = trace.valid.cpu()
        steps = torch.arange(valid.shape[1])
        last = torch.where(valid, steps, -1).max(1).values if valid.shape[1] else torch.full((self.batch,), -1)
        last = torch.where(self.active.cpu() | (last < 0), len(self._column_times), last)
        return DecodeResult(
            answer_ids=answer_ids, pauses_per_token=pauses_per_token, pauses_total=self.pauses_total.cpu(),
            answer_tokens=self.answer_tokens.cpu(), steps=valid.sum(1), forward_passes=self.forward_passes,
            finish_reasons=finish_reasons,
            time_s=column_times[last].float(), trace=trace,
            sequences=self._ids[:, : self.length].clone(), attention_mask=self._mask[:, : self.length].clone(),
            countdown=torch.cat([self.prompt_countdown, trace.countdown], 1)
            if self.prompt_countdown.shape[0] == self.batch else None,  # rows admitted later: no whole-run record
        )
