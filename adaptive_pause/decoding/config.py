"""Decode settings and the one pause-budget rule.

Owns: `DecodeConfig` (limits and sampling of one decode run, validated at
construction), `pause_budget` (the only definition of how many pauses one
answer may hold: every config that carries `max_pauses_total` calls it), and
the urgency argument types with their check.

Must not: run a model or know about tasks, rewards or training.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence, Union

import torch

UrgencyLike = Union[float, Sequence[float], torch.Tensor]
# A per-step urgency schedule: {step: urgency} or a callback (session) -> urgency or None (no change).
UrgencySchedule = Union[Mapping[int, UrgencyLike], Callable[["DecodeSession"], Union[UrgencyLike, None]]]  # noqa: F821


def pause_budget(max_pauses: int, max_new_tokens: int, max_pauses_total: int | None,
                 first_token_pauses_only: bool = False) -> int:
    """Most pauses one answer can contain: `max_pauses` before each answer token that may be paused for (all
    `max_new_tokens`, or only the first), capped by `max_pauses_total` (None = no cap beyond that). The one
    rule: the decode loop's caps, PPO's and the sweep's reward normaliser all call it."""
    per_answer = max_pauses * (1 if first_token_pauses_only else max_new_tokens)
    return per_answer if max_pauses_total is None else min(per_answer, max_pauses_total)


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # True is an int to Python, not a count


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ValueError(f"{name}: {message}")


@dataclass
class DecodeConfig:
    """Limits and sampling of one decode run. Validated at construction (ValueError naming the field)."""

    max_new_tokens: int = field(default=32, metadata={"help": "answer tokens per row (EOS included); pauses do not count"})
    max_pauses: int = field(default=8, metadata={"help": "cap on pauses before one answer token; at the cap the step "
                                                          "is a forced emit"})
    max_pauses_total: int | None = field(default=None, metadata={"help": "cap on pauses in one answer (None: "
                                                                          "max_pauses x max_new_tokens)"})
    first_token_pauses_only: bool = field(default=False, metadata={
        "help": "pauses only before the first answer token (a model finetuned with pauses before the answer only): "
                "later tokens are forced emits"})
    do_sample: bool = field(default=False, metadata={"help": "sample answer tokens (else argmax); <pause> is masked "
                                                              "out either way"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature (do_sample)"})
    top_k: int = field(default=0, metadata={"help": "top-k sampling (0: off)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling (1: off)"})
    controller_greedy: bool = field(default=True, metadata={"help": "the controller's own action: argmax (true) or "
                                                                     "sampled (rollouts)"})
    chunk_pauses: bool = field(default=False, metadata={"help": "prefill pauses a policy plans ahead (plan_pauses) "
                                                                 "in one forward pass"})
    speculate_pauses: int = field(default=0, metadata={
        "help": ">= 2: when a row pauses, prefill up to this many pauses at once and keep those the controller "
                "confirms; 0: one pause per pass"})
    stop_strings: tuple[str, ...] = field(default=(), metadata={"help": "strings that end an answer"})
    record_features: bool = field(default=True, metadata={"help": "keep controller features per step (what a "
                                                                   "frozen-LM PPO update re-reads)"})
    prompt_summary: bool = field(default=False, metadata={
        "help": "controller features = [last hidden state, mean hidden state over the prompt] (heads built with "
                "prompt_summary)"})

    def __post_init__(self):
        _check(_integer(self.max_new_tokens) and self.max_new_tokens >= 1, "max_new_tokens",
               f"must be an integer >= 1, got {self.max_new_tokens!r}")
        _check(_integer(self.max_pauses) and self.max_pauses >= 0, "max_pauses",
               f"must be an integer >= 0, got {self.max_pauses!r}")
        if self.max_pauses_total is not None:
            _check(_integer(self.max_pauses_total) and self.max_pauses_total >= 0, "max_pauses_total",
                   f"must be an integer >= 0 or None, got {self.max_pauses_total!r}")
        _check(_number(self.temperature) and math.isfinite(self.temperature)
               and self.temperature > 0, "temperature", f"must be > 0, got {self.temperature!r}")
        _check(_integer(self.top_k) and self.top_k >= 0, "top_k", f"must be an integer >= 0, got {self.top_k!r}")
        _check(_number(self.top_p) and 0 < self.top_p <= 1, "top_p", f"must be in (0, 1], got {self.top_p!r}")
        _check(_integer(self.speculate_pauses) and (self.speculate_pauses == 0 or self.speculate_pauses >= 2),
               "speculate_pauses", f"must be 0 (off) or an integer >= 2, got {self.speculate_pauses!r}")
        for f in dataclasses.fields(self):  # a string "false" is truthy: flags must be real booleans
            if f.type in (bool, "bool"):
                _check(isinstance(getattr(self, f.name), bool), f.name,
                       f"must be true or false, got {getattr(self, f.name)!r}")
        if isinstance(self.stop_strings, str):
            self.stop_strings = (self.stop_strings,)
        _check(isinstance(self.stop_strings, (list, tuple)), "stop_strings",
               f"must be a string or a list of strings, got {self.stop_strings!r}")
        self.stop_strings = tuple(self.stop_strings)
        _check(all(isinstance(s, str) and s for s in self.stop_strings), "stop_strings",
               f"must be non-empty strings, got {self.stop_strings!r}")

    @property
    def pause_budget(self) -> int:
        """Most pauses one answer can contain (`pause_budget` above)."""
        return pause_budget(self.max_pauses, self.max_new_tokens, self.max_pauses_total, self.first_token_pauses_only)


def as_urgency(value: UrgencyLike, batch: int, device, name: str = "urgency") -> torch.Tensor:  # (batch,)
    """Validate an urgency argument (a number, one per row, or a tensor) into a (batch,) float tensor in [0, 1]."""
    if hasattr(value, "__array__") and not isinstance(value, torch.Tensor):  # numpy, 0-d included: as a tensor
        import numpy as np

        array = np.asarray(value)
        if array.dtype.kind not in "iuf":
            raise ValueError(f"{name}: expected a number or a list of numbers, got {value!r}")
        value = torch.as_tensor(array.astype(np.float32))
    if isinstance(value, torch.Tensor):
        u = value.detach().to(device=device, dtype=torch.float32).flatten()
        if value.dim() == 0:
            u = u.expand(batch)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        u = torch.full((batch,), float(value), device=device)
    else:
        try:
            values = list(value)
        except TypeError:
            raise ValueError(f"{name}: expected a number or a list of numbers, got {value!r}") from None
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ValueError(f"{name}: expected a number or a list of numbers, got {value!r}")
        u = torch.tensor(values, dtype=torch.float32, device=device)
    if u.numel() != batch:
        raise ValueError(f"{name}: got {u.numel()} values for a batch of {batch} prompts")
    if bool(torch.isnan(u).any()):
        raise ValueError(f"{name}: must not be NaN, got {u.tolist()}")
    if bool(((u < 0) | (u > 1)).any()):
        raise ValueError(f"{name}: must lie in [0, 1], got {u.tolist()}")
    return u.contiguous()
