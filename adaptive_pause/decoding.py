"""The one batched, KV-cached decode loop: at every step each unfinished row appends `<pause>` or an answer token.

Owns: `DecodeSession`, a steppable state machine over a left-padded batch (a
prefill, then `step(actions)` appends exactly one token per unfinished row;
`step_pauses` prefills a chunk of known pauses in one pass; `step_speculative`
prefills a run of pauses and keeps those the controller confirms), and
`decode`/`run_policy`, the policy-driven run of it that
`AdaptivePauseModel.generate`, PPO rollouts, the
gymnasium env and sweeps all use. Per row it keeps urgency (changeable
mid-run), pauses spent before the current answer token and in total, the
position-numbering state (`positions.py`: slotted and contiguous run through
the same loop), and why/when the row finished (EOS, stop string,
`max_new_tokens`, cancelled). It records what PPO needs in a `DecodeTrace`:
actions, log-probs, values, controller inputs, forced flags.

Rules it enforces: at `max_pauses` pauses before one answer token, or
`max_pauses_total` in one answer, the step is a *forced emit* (flagged, not a
decision); an emit samples or argmaxes the LM's logits with `<pause>` masked
out; what the LM predicts after a pause is never shown.

Must not: know about tasks, rewards, PPO updates or files; loop over rows in
Python on the per-step path (masks, not branches).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence, Union

import torch
from transformers import DynamicCache, StopStringCriteria
from transformers.cache_utils import DynamicLayer

from policies.base import ControllerInputs, Decision, PausePolicy

from .positions import PositionState, advance, check_numbering, initial_state, next_position_ids, position_ids

EMIT, PAUSE = 0, 1
# Finish reasons, stored per row as small ints so the hot path stays on tensors.
RUNNING, FINISHED_EOS, FINISHED_STOP, FINISHED_LENGTH, CANCELLED = 0, 1, 2, 3, 4
FINISH_NAMES = {RUNNING: "running", FINISHED_EOS: "eos", FINISHED_STOP: "stop_string",
                FINISHED_LENGTH: "max_new_tokens", CANCELLED: "cancelled"}

UrgencyLike = Union[float, Sequence[float], torch.Tensor]
# A per-step urgency schedule: {step: urgency} or a callback (session) -> urgency or None (no change).
UrgencySchedule = Union[Mapping[int, UrgencyLike], Callable[["DecodeSession"], Union[UrgencyLike, None]]]


@dataclass
class DecodeConfig:
    """Limits and sampling of one decode run. Validated at construction (ValueError naming the field)."""

    max_new_tokens: int = 32  # answer tokens per row (EOS included); pauses do not count
    max_pauses: int = 8  # cap on pauses before one answer token; at the cap the step is a forced emit
    max_pauses_total: int | None = None  # cap on pauses in one answer; None = max_pauses * max_new_tokens
    # Pauses only before the first answer token (the layout of a model finetuned with
    # `pauses_before_each_answer_token: false`): later tokens are forced emits, not decisions.
    first_token_pauses_only: bool = False
    do_sample: bool = False  # sample emits (else argmax); <pause> is masked out either way
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    controller_greedy: bool = True  # the controller's own action: argmax (True) or sampled (rollouts)
    chunk_pauses: bool = False  # prefill pauses a policy plans ahead (`plan_pauses`) in one forward pass
    speculate_pauses: int = 0  # >= 2: when a row pauses, prefill up to this many pauses at once and keep
    #                            those the controller confirms (`step_speculative`); 0 = one pause per pass
    stop_strings: tuple[str, ...] = ()
    record_features: bool = True  # keep controller features per step (what a frozen-LM PPO update re-reads)
    # Controller features = [last hidden state, mean of the last hidden states over the prompt] (2 x hidden):
    # for heads built with prompt_summary=True; the summary is computed once, in the prompt pass.
    prompt_summary: bool = False

    def __post_init__(self):
        def check(ok: bool, name: str, message: str):
            if not ok:
                raise ValueError(f"{name}: {message}")

        check(isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1, "max_new_tokens",
              f"must be an integer >= 1, got {self.max_new_tokens!r}")
        check(isinstance(self.max_pauses, int) and self.max_pauses >= 0, "max_pauses",
              f"must be an integer >= 0, got {self.max_pauses!r}")
        if self.max_pauses_total is not None:
            check(isinstance(self.max_pauses_total, int) and self.max_pauses_total >= 0, "max_pauses_total",
                  f"must be an integer >= 0 or None, got {self.max_pauses_total!r}")
        check(math.isfinite(self.temperature) and self.temperature > 0, "temperature",
              f"must be > 0, got {self.temperature}")
        check(isinstance(self.top_k, int) and self.top_k >= 0, "top_k", f"must be an integer >= 0, got {self.top_k}")
        check(0 < self.top_p <= 1, "top_p", f"must be in (0, 1], got {self.top_p}")
        check(isinstance(self.speculate_pauses, int) and (self.speculate_pauses == 0 or self.speculate_pauses >= 2),
              "speculate_pauses", f"must be 0 (off) or an integer >= 2, got {self.speculate_pauses!r}")
        if isinstance(self.stop_strings, str):
            self.stop_strings = (self.stop_strings,)
        self.stop_strings = tuple(self.stop_strings)
        check(all(isinstance(s, str) and s for s in self.stop_strings), "stop_strings",
              f"must be non-empty strings, got {self.stop_strings!r}")

    @property
    def pause_budget(self) -> int:
        """Most pauses one answer can contain."""
        per_token = self.max_pauses * self.max_new_tokens
        return per_token if self.max_pauses_total is None else min(per_token, self.max_pauses_total)


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
    features: torch.Tensor | None  # (batch, steps, hidden or 2 x hidden with prompt_summary) float, or None

    def decisions(self) -> torch.Tensor:  # (batch, steps) bool
        """Steps that were genuine controller decisions: what PPO trains on."""
        return self.valid & ~self.forced & ~self.planned

    def controller_inputs(self) -> ControllerInputs:
        """All steps flattened to (batch * steps,) controller inputs (features required)."""
        if self.features is None:
            raise ValueError("features: this trace was recorded with record_features=False")
        return ControllerInputs(self.features.flatten(0, 1), self.urgency.flatten(), self.pauses_before_token.flatten(),
                                self.pauses_total.flatten(), self.top_prob.flatten())


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

    @property
    def cancelled(self) -> list[bool]:
        return [r == FINISH_NAMES[CANCELLED] for r in self.finish_reasons]


def _as_urgency(value: UrgencyLike, batch: int, device, name: str = "urgency") -> torch.Tensor:  # (batch,)
    if isinstance(value, torch.Tensor):
        u = value.detach().to(device=device, dtype=torch.float32).flatten()
        if value.dim() == 0:
            u = u.expand(batch)
    elif isinstance(value, (int, float)):
        u = torch.full((batch,), float(value), device=device)
    else:
        values = list(value)
        if not all(isinstance(v, (int, float)) for v in values):
            raise ValueError(f"{name}: expected a number or a list of numbers, got {value!r}")
        u = torch.tensor(values, dtype=torch.float32, device=device)
    if u.numel() != batch:
        raise ValueError(f"{name}: got {u.numel()} values for a batch of {batch} prompts")
    if bool(torch.isnan(u).any()):
        raise ValueError(f"{name}: must not be NaN, got {u.tolist()}")
    if bool(((u < 0) | (u > 1)).any()):
        raise ValueError(f"{name}: must lie in [0, 1], got {u.tolist()}")
    return u.contiguous()


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # (batch, hidden)
    """Mean of hidden (batch, length, hidden) over the columns where mask (batch, length) is 1."""
    keep = mask.bool()[..., None]
    # masked_fill, not a product: a padded column's state may be NaN/inf (fully masked queries in half precision)
    return hidden.masked_fill(~keep, 0).sum(1) / keep.sum(1).clamp(min=1).to(hidden.dtype)


def check_prompt_summary(policy: PausePolicy, config: DecodeConfig) -> None:
    """The loop's features must be the ones the policy reads: with or without the prompt summary.
    (Policies that read no features, the baselines, take either.)"""
    reads = getattr(policy, "prompt_summary", False)
    if reads and not config.prompt_summary:
        raise ValueError(f"policy {type(policy).__name__} reads the prompt summary (prompt_summary=True); decode "
                         "with prompt_summary=True (DecodeConfig, PauseEnvConfig)")
    if config.prompt_summary and not reads and getattr(policy, "feature_dim", None) is not None:
        raise ValueError(f"prompt_summary: the decode loop appends the prompt summary to the features, but policy "
                         f"{type(policy).__name__} was built without it; decode with prompt_summary=False")


def context_length(model) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "max_position_embeddings", None)


class _PreallocatedLayer(DynamicLayer):
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


def _decode_cache(model, capacity: int) -> DynamicCache:
    """A DynamicCache whose full-attention layers are preallocated for `capacity` positions."""
    cache = DynamicCache(config=getattr(model, "config", None))
    if cache.layers:
        cache.layers = [_PreallocatedLayer(capacity) if type(layer) is DynamicLayer else layer
                        for layer in cache.layers]
    elif getattr(cache, "layer_class_to_replicate", None) is DynamicLayer:
        cache.layer_class_to_replicate = lambda: _PreallocatedLayer(capacity)
    return cache


class DecodeSession:
    """A batch being decoded. Construct (prefills), then call `step` until `done`.

    Between steps the caller may read `controller_inputs()` / `forced()`,
    `set_urgency`, `cancel` rows, or append a chunk of tokens with
    `step_pauses`. `decode()` is the policy-driven loop over this; the
    gymnasium env and PPO rollouts drive it the same way.
    """

    def __init__(self, model, tokenizer, prompt_ids: Sequence[Sequence[int]], urgency: UrgencyLike,
                 config: DecodeConfig, pause_id: int, numbering: str, pause_slots: int,
                 seed: int | None = None):
        check_numbering(numbering, pause_slots)
        if len(prompt_ids) == 0:
            raise ValueError("prompts: need at least one prompt")
        for i, ids in enumerate(prompt_ids):
            if len(ids) == 0:
                raise ValueError(f"prompts[{i}]: empty prompt")
        if numbering == "slotted" and config.max_pauses > pause_slots:
            raise ValueError(f"max_pauses: {config.max_pauses} exceeds the model's pause_slots={pause_slots} "
                             "(slotted numbering reserves that many positions per token)")
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self._pause_budget = config.pause_budget
        self.pause_id = int(pause_id)
        self.numbering = numbering
        self.pause_slots = pause_slots
        param = next(model.parameters())
        self.device = param.device
        batch = len(prompt_ids)
        self.batch = batch
        self.urgency = _as_urgency(urgency, batch, self.device)  # (batch,)

        prompt_len = max(len(ids) for ids in prompt_ids)
        context = context_length(model)
        if context is not None:
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
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.pad_id = int(pad_id)
        input_ids = torch.full((batch, prompt_len), self.pad_id, dtype=torch.long)
        mask = torch.zeros((batch, prompt_len), dtype=torch.long)
        for row, ids in enumerate(prompt_ids):  # building the prompt batch, once: not the per-step path
            input_ids[row, prompt_len - len(ids):] = torch.as_tensor(list(ids), dtype=torch.long)
            mask[row, prompt_len - len(ids):] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        self.prompt_len = prompt_len
        prompt_positions = position_ids(input_ids, mask, self.pause_id, numbering, pause_slots)
        self.positions: PositionState = initial_state(input_ids, mask, self.pause_id)

        eos = set()
        if tokenizer.eos_token_id is not None:
            eos.add(int(tokenizer.eos_token_id))
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        if gen_eos is not None:
            eos.update([int(gen_eos)] if isinstance(gen_eos, int) else [int(e) for e in gen_eos])
        eos.discard(self.pause_id)
        self.eos_ids = torch.tensor(sorted(eos), dtype=torch.long, device=self.device)
        self.stop_criteria = StopStringCriteria(tokenizer, list(config.stop_strings)) if config.stop_strings else None
        if self.stop_criteria is not None:
            width = max(len(s) for s in config.stop_strings) + 1  # every token covers >= 1 character
            self.answer_tail = torch.full((batch, width), self.pad_id, dtype=torch.long, device=self.device)

        self.generator = None
        if seed is not None:
            self.generator = torch.Generator(device=self.device)
            self.generator.manual_seed(int(seed))

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
        self.columns = 0  # trace columns recorded
        self._columns: list[tuple] = []  # one tuple of (batch,) tensors per trace column; stacked by result()

        zeros = torch.zeros(batch, dtype=torch.long, device=self.device)
        self.active = torch.ones(batch, dtype=torch.bool, device=self.device)  # (batch,)
        self._done, self._stale = False, False
        self.finish_reason = zeros.clone()  # (batch,) long, FINISH_* codes
        self.pauses_before_token = zeros.clone()  # (batch,)
        self.pauses_total = zeros.clone()  # (batch,)
        self.answer_tokens = zeros.clone()  # (batch,) tokens emitted so far (EOS included)
        # Finish codes as ready tensors: torch.where with Python numbers would build them at every step.
        self._eos_code = torch.tensor(FINISHED_EOS, device=self.device)
        self._length_code = torch.tensor(FINISHED_LENGTH, device=self.device)
        self._stop_code = torch.tensor(FINISHED_STOP, device=self.device)
        self.forward_passes = 0
        # A controller decision already taken for the next step (speculation stopped at an emit there).
        self.pending = torch.zeros(batch, dtype=torch.bool, device=self.device)  # (batch,)
        self.pending_log_prob = torch.zeros(batch, device=self.device)  # (batch,)
        self.pending_value = torch.zeros(batch, device=self.device)  # (batch,)

        self.cache = _decode_cache(model, capacity)
        self.start_time = time.perf_counter()
        self._column_times: list[float] = []  # seconds since start at which each trace column was decided
        self._fast = None  # (decoder, output head) when the single-token fast path is verified; see _prefill
        self.prompt_summary = None  # (batch, hidden): set by the prompt pass when config.prompt_summary
        self._features_of = None  # (hidden, its features): one concatenation per step, not one per reader
        with torch.no_grad():
            self._prefill(input_ids, mask, prompt_positions)

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

    def _prefill(self, input_ids, attention_mask, positions) -> None:
        """The prompt pass, through the model's own forward; also decides whether the fast path is exact.

        The fast path (single-token steps) calls the decoder with a ready 4D additive mask and applies the
        output head to the last hidden state: it skips the per-step mask building and output wrappers. It is
        used only for sdpa/eager attention and only if, on this very prompt, head(last hidden) reproduces the
        model's own logits (so models that post-process logits, e.g. soft-capping, keep the generic path).
        """
        self._forward(input_ids, attention_mask, positions)
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        impl = getattr(getattr(base, "config", None), "_attn_implementation", None)
        get_decoder = getattr(base, "get_decoder", None)
        head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
        if impl in ("sdpa", "eager") and get_decoder is not None and head is not None:
            check = head(self.hidden[:, None])[:, -1].float()
            check[:, self.pause_id] = -math.inf
            if torch.allclose(check, self.logits, rtol=1e-4, atol=1e-4 * float(self.logits.abs().max())):
                self._fast = (get_decoder(), head)

    def _forward(self, input_ids, attention_mask, positions) -> None:
        """Run the LM on new tokens (batch, n) over the cache; keep the last position's hidden state and
        its logits with `<pause>` masked out."""
        if self._fast is not None and input_ids.shape[1] == 1:
            decoder, head = self._fast
            bias = self._bias[:, :, :, : self.length]  # (batch, 1, 1, length): 0 attend, min masked
            hidden = decoder(input_ids=input_ids, attention_mask=bias, position_ids=positions,
                             past_key_values=self.cache, use_cache=True).last_hidden_state[:, -1]
            logits = head(hidden).float()
        else:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                             past_key_values=self.cache, use_cache=True, output_hidden_states=True,
                             logits_to_keep=1)
            hidden = out.hidden_states[-1][:, -1]
            logits = out.logits[:, -1].float()
            if self.config.prompt_summary and self.prompt_summary is None:  # the prompt pass
                self.prompt_summary = masked_mean(out.hidden_states[-1], attention_mask)
        self.hidden = hidden  # (batch, hidden)
        logits[:, self.pause_id] = -math.inf  # an emit never produces <pause>
        self.logits = logits  # (batch, vocab)
        self.top_prob = logits.softmax(-1).amax(-1)  # (batch,) top answer-token probability

    def _forward_all(self, input_ids, attention_mask, positions):
        """Run the LM on a chunk (batch, n); return every position's (hidden (batch, n, hidden), masked float
        logits (batch, n, vocab), top_prob (batch, n)) without changing the session's current state."""
        n = input_ids.shape[1]
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                         past_key_values=self.cache, use_cache=True, output_hidden_states=True, logits_to_keep=n)
        logits = out.logits.float()
        logits[..., self.pause_id] = -math.inf
        return out.hidden_states[-1][:, -n:], logits, logits.softmax(-1).amax(-1)

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
        probs = logits.softmax(-1)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)

    def _record(self, valid, tokens, is_pause, decision: Decision | None, forced, planned, decided=None) -> None:
        """Keep one trace column (references only: the session never mutates these tensors in place).

        `decided` (default: valid) marks the rows where `decision` was taken in this column.
        """
        log_prob = value = None
        if decision is not None:
            log_prob, value = decision.log_prob.detach(), decision.value.detach()
        self._columns.append((valid, tokens, is_pause, log_prob, value, forced, planned, decided, self.urgency,
                              self.pauses_before_token, self.pauses_total, self.top_prob,
                              self._features(self.hidden) if self.config.record_features else None))
        self.columns += 1
        self._column_times.append(time.perf_counter() - self.start_time)

    def _stack_trace(self) -> DecodeTrace:
        b, d = self.batch, self.device
        if not self._columns:
            z = torch.zeros((b, 0), device=d)
            hidden = getattr(getattr(self.model, "config", None), "hidden_size", 1)
            hidden *= 2 if self.config.prompt_summary else 1
            return DecodeTrace(z.bool(), z.long(), z.long(), z, z, z.bool(), z.bool(), z, z.long(), z.long(), z,
                               torch.zeros((b, 0, hidden), device=d) if self.config.record_features else None)
        cols = list(zip(*self._columns))
        zeros = torch.zeros(b, device=d)

        def stack(items, fill=None):
            return torch.stack([fill if x is None else x for x in items], 1)

        valid = stack(cols[0])  # (batch, steps) bool
        forced = stack(cols[5]) & valid
        planned = stack([torch.zeros_like(v) if p is None else p for v, p in zip(cols[0], cols[6])]) & valid
        decided = stack([v if x is None else x for v, x in zip(cols[0], cols[7])])
        keep = decided & ~forced & ~planned
        log_probs = torch.where(keep, stack(cols[3], zeros).float(), 0.0)
        values = torch.where(decided, stack(cols[4], zeros).float(), 0.0)
        features = None
        if self.config.record_features:
            features = torch.stack(cols[12], 1).float() * valid[..., None]  # (batch, steps, hidden)
        return DecodeTrace(valid=valid, tokens=torch.where(valid, stack(cols[1]), 0),
                           actions=torch.where(valid, stack(cols[2]).long(), 0), log_probs=log_probs,
                           values=values, forced=forced, planned=planned, urgency=stack(cols[8]).float(),
                           pauses_before_token=stack(cols[9]), pauses_total=stack(cols[10]),
                           top_prob=stack(cols[11]).float(), features=features)

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

    def controller_inputs(self) -> ControllerInputs:
        """What the controller sees before the next step, for every row (inactive rows included; ignore them)."""
        return ControllerInputs(self._features(self.hidden), self.urgency, self.pauses_before_token,
                                self.pauses_total, self.top_prob)

    def _features(self, hidden: torch.Tensor) -> torch.Tensor:  # (batch, [n,] hidden or 2 x hidden)
        """The controller's features from hidden states (batch, hidden) or (batch, n, hidden)."""
        if not self.config.prompt_summary:
            return hidden
        cached = self._features_of
        if cached is not None and cached[0] is hidden:  # asked again for this step's state (controller, then trace)
            return cached[1]
        summary = self.prompt_summary if hidden.dim() == 2 else self.prompt_summary[:, None].expand_as(hidden)
        features = torch.cat([hidden, summary.to(hidden.dtype)], -1)
        self._features_of = (hidden, features)  # the session never writes into a state tensor in place
        return features

    def set_urgency(self, urgency: UrgencyLike, rows: torch.Tensor | Sequence[int] | None = None) -> None:
        """Change urgency from the next step on: for all rows, or only `rows` (indices or a (batch,) bool mask)."""
        if rows is None:
            self.urgency = _as_urgency(urgency, self.batch, self.device)
            return
        mask = self._row_mask(rows, "rows")
        count = int(mask.sum())
        if isinstance(urgency, (int, float)) or (isinstance(urgency, torch.Tensor) and urgency.dim() == 0):
            new = _as_urgency(urgency, self.batch, self.device)
        else:
            values = _as_urgency(urgency, count, self.device)
            new = self.urgency.clone()
            new[mask] = values
        self.urgency = torch.where(mask, new, self.urgency)

    def cancel(self, rows: torch.Tensor | Sequence[int]) -> None:
        """Stop `rows` now ("forget that"): they append nothing more and finish as 'cancelled'."""
        self._finish_with(self._row_mask(rows, "rows"), CANCELLED)
        self._refresh_done()

    def _row_mask(self, rows, name: str) -> torch.Tensor:  # (batch,) bool
        if isinstance(rows, torch.Tensor) and rows.dtype == torch.bool:
            if rows.shape != (self.batch,):
                raise ValueError(f"{name}: a bool mask must have shape ({self.batch},), got {tuple(rows.shape)}")
            return rows.to(self.device)
        index = torch.as_tensor(rows, dtype=torch.long).flatten()
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.batch):
            raise ValueError(f"{name}: row indices must lie in [0, {self.batch}), got {index.tolist()}")
        mask = torch.zeros(self.batch, dtype=torch.bool)
        mask[index] = True
        return mask.to(self.device)

    @torch.no_grad()
    def step(self, actions: torch.Tensor, decision: Decision | None = None) -> torch.Tensor:
        """Append one token to every active row: `<pause>` where actions == 1 (unless forced), else an answer token.

        actions: (batch,) long (inactive rows ignored). `decision` (optional) is
        recorded (log-probs, values). Returns the (batch,) bool mask of rows
        that were active for this step.
        """
        if self.done:
            raise ValueError("step: every row has finished; check `done` before stepping")
        active = self.active
        forced = self.forced()
        is_pause = (actions.to(self.device) == PAUSE) & active & ~forced
        emit = active & ~is_pause
        tokens = self._choose_emits().masked_fill_(is_pause, self.pause_id).masked_fill_(~active, self.pad_id)

        self._grow(1)
        self._record(active, tokens, is_pause, decision, forced, None)

        if self.config.speculate_pauses:
            self.pending = self.pending & ~active
        pos = next_position_ids(self.positions, is_pause, self.numbering, self.pause_slots)
        self.positions = advance(self.positions, is_pause, active)
        self._mask[:, self.length] = active
        self._bias_columns[:, self.length].masked_fill_(~active, self._masked)  # new columns start at 0
        self._ids[:, self.length] = tokens
        self.length += 1
        self._after_append(tokens, is_pause, emit, active)
        if not self._refresh_done():
            self._forward(tokens[:, None], self._mask[:, :self.length], pos[:, None])
            self.forward_passes += 1
        return active

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
        room = torch.minimum(self.config.max_pauses - self.pauses_before_token,
                             self.config.pause_budget - self.pauses_total)
        spec = torch.where(pause0, room.clamp(max=width), 0)  # (batch,) speculative pauses per row
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
        hidden, logits, top_prob = self._forward_all(chunk_ids, self._mask[:, :self.length + w], chunk_pos)
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
        self._mask[:, self.length:self.length + w] = accepted
        self._ids[:, self.length:self.length + w] = torch.where(accepted, chunk_ids, self.pad_id)
        self.length += w
        for j in range(w):
            slot_valid, slot_pause = accepted[:, j], accepted[:, j] & pause0
            if j == 0:
                self._record(slot_valid, chunk_ids[:, j], slot_pause, decision, forced & slot_valid, None)
            else:
                self.hidden, self.top_prob = hidden[:, j - 1], top_prob[:, j - 1]
                step_decision = Decision(again[:, j - 1].long(), inner_lp[:, j - 1], inner_v[:, j - 1])
                self._record(slot_valid, chunk_ids[:, j], slot_pause, step_decision, torch.zeros_like(slot_valid),
                             None)
            self.positions = advance(self.positions, slot_pause, slot_valid)
            self._after_append(chunk_ids[:, j], slot_pause, slot_valid & ~pause0, slot_valid)
        self._refresh_done()
        row = torch.arange(self.batch, device=self.device)
        self.hidden = hidden[row, last]
        self.logits = logits[row, last]
        self.top_prob = top_prob[row, last]
        return active

    @torch.no_grad()
    def step_pauses(self, pauses: torch.Tensor, decision: Decision | None = None) -> torch.Tensor:
        """One forward pass appending `pauses[r]` known pauses to each active row, or an emit where it is 0.

        pauses: (batch,) long >= 0. This is the chunked-pause step: pauses are
        known inputs, so m of them cost one sequential forward pass instead of
        m. Rows are right-aligned in a chunk of width max(pauses, 1); shorter
        rows are left-filled with masked padding, so their positions and
        context are exactly those of appending one by one. Pauses beyond a cap
        are dropped (a row with no room left emits, flagged forced). The
        decision, if given, is recorded at each row's first slot; the further
        pauses of a chunk are flagged `planned`. Returns the active mask.
        """
        if self.done:
            raise ValueError("step_pauses: every row has finished; check `done` before stepping")
        active = self.active
        forced = self.forced()
        room = torch.minimum(self.config.max_pauses - self.pauses_before_token,
                             self.config.pause_budget - self.pauses_total).clamp(min=0)
        pauses = torch.minimum(pauses.to(self.device).long().clamp(min=0), room) * active.long()  # (batch,)
        emit = active & (pauses == 0)  # (batch,): these rows emit one token, in the chunk's last slot
        counts = torch.where(emit, torch.ones_like(pauses), pauses)  # (batch,) tokens each row appends
        self.pending = self.pending & ~active
        width = max(int(counts.max()), 1)
        emit_tokens = self._choose_emits()  # (batch,): from the current logits, which emit rows still have
        self._grow(width)
        chunk_ids = torch.full((self.batch, width), self.pad_id, dtype=torch.long, device=self.device)
        chunk_mask = torch.zeros((self.batch, width), dtype=torch.long, device=self.device)
        chunk_pos = torch.zeros((self.batch, width), dtype=torch.long, device=self.device)
        first = width - counts  # (batch,): each row's first slot
        for j in range(width):  # over chunk slots, never over rows
            valid = active & (j >= first)
            slot_emit = emit & (j == width - 1)
            slot_pause = valid & ~slot_emit
            tokens = torch.where(slot_pause, torch.full_like(emit_tokens, self.pause_id), emit_tokens)
            tokens = torch.where(valid, tokens, torch.full_like(tokens, self.pad_id))
            self._record(valid, tokens, slot_pause, decision, forced & slot_emit, slot_pause & (j > first),
                         decided=valid & (j == first))
            chunk_pos[:, j] = next_position_ids(self.positions, slot_pause, self.numbering, self.pause_slots)
            self.positions = advance(self.positions, slot_pause, valid)
            chunk_ids[:, j] = tokens
            chunk_mask[:, j] = valid.long()
            self._after_append(tokens, slot_pause, slot_emit, valid)
        self._mask[:, self.length:self.length + width] = chunk_mask
        self._bias[:, 0, 0, self.length:self.length + width].masked_fill_(chunk_mask == 0, self._masked)
        self._ids[:, self.length:self.length + width] = chunk_ids
        self.length += width
        if not self._refresh_done():
            self._forward(chunk_ids, self._mask[:, :self.length], chunk_pos)
            self.forward_passes += 1
        return active

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
        reason = torch.where(eos, self._eos_code, self._length_code)
        if self.stop_criteria is not None:
            self.answer_tail = torch.where(emit[:, None], torch.cat([self.answer_tail[:, 1:], tokens[:, None]], 1),
                                           self.answer_tail)
            hit = self.stop_criteria(self.answer_tail, None).to(self.device) & ~eos
            ended = ended | hit
            reason = torch.where(hit, self._stop_code, reason)
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

    def result(self) -> DecodeResult:
        """Collect per-row outputs (call when `done`, or any time for a partial view)."""
        trace = self._stack_trace()
        emitted = (trace.valid & (trace.actions == EMIT)).cpu()  # (batch, steps)
        tokens, before = trace.tokens.cpu(), trace.pauses_before_token.cpu()
        reasons = self.finish_reason.cpu()
        eos = set(self.eos_ids.tolist())
        answer_ids, pauses_per_token = [], []
        for row in range(self.batch):  # once per run, to build Python lists: not the per-step path
            ids = tokens[row][emitted[row]].tolist()
            per_token = before[row][emitted[row]].tolist()
            if int(reasons[row]) == FINISHED_EOS and ids and ids[-1] in eos:
                ids = ids[:-1]
            answer_ids.append(ids)
            pauses_per_token.append(per_token)
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
            finish_reasons=[FINISH_NAMES[int(r)] for r in reasons], time_s=column_times[last].float(), trace=trace,
            sequences=self._ids[:, : self.length].clone(), attention_mask=self._mask[:, : self.length].clone(),
        )


def _schedule_value(schedule: UrgencySchedule | None, session: DecodeSession, step: int):
    if schedule is None:
        return None
    if callable(schedule):
        return schedule(session)
    return schedule.get(step)


@torch.no_grad()
def run_policy(session: DecodeSession, policy: PausePolicy, urgency_schedule: UrgencySchedule | None = None,
               generator: torch.Generator | None = None,
               on_step: Callable[[DecodeSession], None] | None = None) -> DecodeResult:
    """Drive `session` with `policy` until every row finishes. The only policy-driven loop."""
    check_prompt_summary(policy, session.config)
    step = 0
    cfg = session.config
    while not session.done:
        if urgency_schedule is not None:
            new_urgency = _schedule_value(urgency_schedule, session, step)
            if new_urgency is not None:
                session.set_urgency(new_urgency)
            if session.done:  # a callback may cancel every row
                break
        inputs = session.controller_inputs()
        decision = policy.decide(inputs, greedy=cfg.controller_greedy, generator=generator)
        if cfg.speculate_pauses:
            decision = session.take_pending(decision)
        plan = policy.plan_pauses(inputs) if cfg.chunk_pauses else None
        if plan is not None and int((plan.to(session.device) * session.active).max()) >= 2:
            # Rows with a plan prefill it in one pass; the others take their one-token decision alongside.
            plan = plan.to(session.device).long()
            session.step_pauses(torch.where(plan >= 1, plan, decision.action.long()), decision)
        elif cfg.speculate_pauses >= 2 and bool((decision.action.bool() & session.active & ~session.forced()).any()):
            session.step_speculative(decision, policy, cfg.speculate_pauses, cfg.controller_greedy, generator)
        else:
            session.step(decision.action, decision)
        if on_step is not None:
            on_step(session)
        step += 1
    return session.result()


def decode(model, tokenizer, prompt_ids: Sequence[Sequence[int]], policy: PausePolicy, urgency: UrgencyLike,
           config: DecodeConfig, pause_id: int, numbering: str, pause_slots: int, seed: int | None = None,
           urgency_schedule: UrgencySchedule | None = None,
           on_step: Callable[[DecodeSession], None] | None = None) -> DecodeResult:
    """Prefill `prompt_ids` (token id lists, left-padded here) and run `policy` to the end.

    `urgency`: a number or one per prompt, in [0, 1]. `urgency_schedule`:
    {step: urgency} or a callback (session) -> urgency | None, applied before
    each step. `on_step(session)` runs after each step (e.g. to `cancel` rows).
    """
    if urgency_schedule is not None and not callable(urgency_schedule):
        if not isinstance(urgency_schedule, Mapping) or not all(
                isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in urgency_schedule):
            raise ValueError("urgency_schedule: expected a callable (session) -> urgency | None or a mapping "
                             f"{{step (int >= 0): urgency}}, got {urgency_schedule!r}")
    hidden = getattr(getattr(model, "config", None), "hidden_size", None)
    if hidden is not None:
        policy.check_feature_dim(hidden)
    check_prompt_summary(policy, config)  # before the prompt pass, not after it
    session = DecodeSession(model, tokenizer, prompt_ids, urgency, config, pause_id, numbering, pause_slots, seed)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=session.device)
        generator.manual_seed(int(seed) + 1)
    return run_policy(session, policy, urgency_schedule, generator, on_step)
