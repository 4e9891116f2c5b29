"""Untrained baseline controllers: fixed k pauses, a confidence threshold, random pauses.

Owns: the three comparison policies of DESIGN.md ("Baselines we compare
against"). Each implements `PausePolicy.action_logits` with a +/- `DECISIVE`
logit (so `decide`/`evaluate` stay well defined), has zero value, and is never
trained.

Must not: import `adaptive_pause`, or loop over rows in Python.
"""

from __future__ import annotations

import math

import torch

from .base import ControllerInputs, Decision, PausePolicy

# A logit whose sigmoid is 1 - 1e-13: "certainly" without infinities in log-probs.
DECISIVE = 30.0


def _decisive(pause: torch.Tensor) -> torch.Tensor:  # (batch,) bool -> (batch,) float logits
    return torch.where(pause, torch.full(pause.shape, DECISIVE, device=pause.device),
                       torch.full(pause.shape, -DECISIVE, device=pause.device))


class FixedPauses(PausePolicy):
    """k pauses before the first answer token (Goyal et al.), or before every answer token.

    `every_token=False`: pause while fewer than k pauses were spent on the
    answer (so exactly k, all before the first token: the same sequence as HF
    `generate` on prompt + k pauses). `every_token=True`: pause while fewer
    than k pauses precede the current answer token.
    """

    def __init__(self, k: int, every_token: bool = False):
        super().__init__()
        if not (isinstance(k, int) and k >= 0):
            raise ValueError(f"k: must be an integer >= 0, got {k!r}")
        self.k = k
        self.every_token = bool(every_token)

    def _remaining(self, inputs: ControllerInputs) -> torch.Tensor:  # (batch,) long
        spent = inputs.pauses_before_token if self.every_token else inputs.pauses_total
        return (self.k - spent).clamp(min=0)

    def action_logits(self, inputs: ControllerInputs) -> torch.Tensor:
        return _decisive(self._remaining(inputs) > 0)

    def plan_pauses(self, inputs: ControllerInputs) -> torch.Tensor:
        return self._remaining(inputs)

    def config(self) -> dict:
        return {"k": self.k, "every_token": self.every_token}


class ConfidenceThreshold(PausePolicy):
    """Pause while the top answer-token probability is below a threshold that falls with urgency.

    threshold(u) = high * (1 - u) + low * u: at u = 0 the model must be at
    least `high` sure before it speaks; at u = 1 only `low` (0 by default:
    never pause). Reads `ControllerInputs.top_prob`.
    """

    def __init__(self, high: float = 0.9, low: float = 0.0):
        super().__init__()
        for name, value in (("high", high), ("low", low)):
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name}: must be in [0, 1], got {value}")
        if low > high:
            raise ValueError(f"low: must be <= high={high}, got {low}")
        self.high = float(high)
        self.low = float(low)

    def threshold(self, urgency: torch.Tensor) -> torch.Tensor:  # (batch,)
        return self.high * (1 - urgency) + self.low * urgency

    def action_logits(self, inputs: ControllerInputs) -> torch.Tensor:
        if inputs.top_prob is None:
            raise ValueError("top_prob: ConfidenceThreshold needs ControllerInputs.top_prob, got None")
        return _decisive(inputs.top_prob < self.threshold(inputs.urgency.float()))

    def config(self) -> dict:
        return {"high": self.high, "low": self.low}


class RandomPauses(PausePolicy):
    """Pause with probability p at every step, whatever the state.

    Its randomness is the point, so `decide` samples even when asked for a
    greedy decision.
    """

    def __init__(self, p: float):
        super().__init__()
        if not (math.isfinite(p) and 0.0 <= p <= 1.0):
            raise ValueError(f"p: must be in [0, 1], got {p}")
        self.p = float(p)

    def action_logits(self, inputs: ControllerInputs) -> torch.Tensor:
        p = min(max(self.p, 1e-13), 1 - 1e-13)
        logit = max(min(math.log(p / (1 - p)), DECISIVE), -DECISIVE)
        return torch.full(inputs.urgency.shape, logit, dtype=torch.float32, device=inputs.urgency.device)

    def decide(self, inputs: ControllerInputs, greedy: bool = False,
               generator: torch.Generator | None = None) -> Decision:
        return super().decide(inputs, greedy=False, generator=generator)

    def config(self) -> dict:
        return {"p": self.p}
