"""A planning controller from a per-count accuracy model: k = the count with the best expected meta reward.

Owns: `OutcomePlanner`, an MLP over the LM's features at the first answer decision (last hidden state and,
optionally, the prompt summary) -> K + 1 logits of P(correct | prompt, k pauses), for k = 0..K, and its choice.
With first-token pauses a plan is a one-step bandit: choose k, prefill k pauses, answer. The meta reward
`(1 - u) * score - u * pauses / price_pauses` is affine in the score, so its expectation for each k follows
exactly from p(k) and urgency enters only through the price:

    k*(u) = argmax_k (1 - u) * p(k) - u * k / price_pauses - min_gain * k     (ties: the fewest pauses)

`min_gain` is the least expected reward a pause must buy. At u = 0 pauses cost nothing, and the argmax alone
spends eleven of them for a predicted gain of 0.001; a floor per pause (rather than one margin on the whole
count) keeps the pauses that buy a real gain and drops the long tail (docs/results.md, issue 15, session 13). It
is trained by supervision on observed outcomes (`fit_outcome_head`), not by PPO: every k is observed for every
prompt, so counts PPO rarely samples are learned like any other (docs/results.md, issue 15, sessions 12 and 13).

Must not: import `adaptive_pause`, know about decoding, or save files (that is `policies/io.py`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import ControllerInputs, Decision, PausePolicy


class OutcomePlanner(PausePolicy):
    """features (hidden [+ prompt summary]) -> LayerNorm -> Linear -> GELU -> Linear -> K + 1 logits of
    P(correct | k pauses before the first answer token).

    max_count: K. price_pauses: the meta reward's pause normaliser (max_pauses_total). min_gain: the floor
    above, in units of the meta reward per pause (an attribute: a caller may change it after loading).
    """

    plans = True
    first_token_only = True  # its outcomes were observed for pauses before the first answer token

    def __init__(self, hidden_size: int, max_count: int, price_pauses: int, width: int = 128,
                 prompt_summary: bool = True, min_gain: float = 0.01):
        super().__init__()
        for name, value, low in (("hidden_size", hidden_size, 1), ("max_count", max_count, 1),
                                 ("price_pauses", price_pauses, 1), ("width", width, 1)):
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
                raise ValueError(f"{name}: must be an integer >= {low}, got {value!r}")
        self.hidden_size = hidden_size
        self.max_count = max_count
        self.price_pauses = price_pauses
        self.width = width
        self.prompt_summary = bool(prompt_summary)
        self.min_gain = min_gain  # checked by the setter
        inputs = hidden_size * (2 if self.prompt_summary else 1)
        self.norm = nn.LayerNorm(inputs)
        self.net = nn.Sequential(nn.Linear(inputs, width), nn.GELU(), nn.Linear(width, max_count + 1))

    @property
    def min_gain(self) -> float:
        return self._min_gain

    @min_gain.setter
    def min_gain(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value < 1):
            raise ValueError(f"min_gain: must be a number in [0, 1), got {value!r}")
        self._min_gain = float(value)

    def correct_logits(self, features: torch.Tensor) -> torch.Tensor:  # (batch, K + 1)
        """Logits of P(correct | k) for k = 0..K, from the first decision's features (batch, input width)."""
        width = self.norm.normalized_shape[0]
        if features.shape[-1] != width:
            raise ValueError(f"features: expected width {width} (hidden_size {self.hidden_size}"
                             f"{' x 2 with the prompt summary' if self.prompt_summary else ''}), "
                             f"got {features.shape[-1]}")
        return self.net(self.norm(features.float()))

    def expected_reward(self, inputs: ControllerInputs) -> torch.Tensor:  # (batch, K + 1)
        """E[meta reward | k] = (1 - u) p(k) - u k / price_pauses, for k = 0..K (exact: the reward is affine)."""
        p = torch.sigmoid(self.correct_logits(inputs.features))
        u = inputs.urgency.float().to(p.device)[:, None]
        k = torch.arange(self.max_count + 1, device=p.device, dtype=p.dtype)
        return (1 - u) * p - u * k / self.price_pauses

    def decide(self, inputs: ControllerInputs, greedy: bool = False,
               generator: torch.Generator | None = None) -> Decision:
        """argmax_k E[reward | k] - min_gain * k, the fewest pauses on ties; deterministic (greedy or not). The
        value is the expected meta reward of that count."""
        expected = self.expected_reward(inputs)
        k = torch.arange(self.max_count + 1, device=expected.device, dtype=expected.dtype)
        count = (expected - self.min_gain * k).argmax(-1)  # torch's argmax: the first maximum, the fewest pauses
        return Decision(count.long(), torch.zeros_like(count, dtype=expected.dtype),
                        expected.gather(-1, count[:, None]).squeeze(-1))

    def action_logits(self, inputs: ControllerInputs) -> torch.Tensor:
        raise ValueError("OutcomePlanner chooses a pause count, not pause/emit: use decide (the decode loop runs "
                         "it as a planner)")

    def evaluate(self, inputs: ControllerInputs, actions: torch.Tensor):
        raise ValueError("OutcomePlanner is trained by supervision on observed outcomes (train-controller with "
                         "controller 'outcome'), not by PPO")

    def value(self, inputs: ControllerInputs) -> torch.Tensor:
        return self.expected_reward(inputs).max(-1).values

    def config(self) -> dict:
        return {"hidden_size": self.hidden_size, "max_count": self.max_count, "price_pauses": self.price_pauses,
                "width": self.width, "prompt_summary": self.prompt_summary, "min_gain": self.min_gain}


def fit_outcome_head(head: OutcomePlanner, features: torch.Tensor, correct: torch.Tensor, steps: int,
                     generator: torch.Generator, learning_rate: float = 3e-3, batch_size: int = 256,
                     validation_fraction: float = 0.1, check_every: int = 50) -> dict:
    """Fit `head` to observed outcomes: features (n, width), correct (n, K + 1) in {0, 1} (or a score in [0, 1]).

    Binary cross-entropy on every k at once; early stopping on a held-out `validation_fraction` of the rows
    (checked every `check_every` steps, the best weights kept). Returns {train_loss, validation_loss,
    best_step, validation_rows, history: [(step, train loss, validation loss)] at each check, validation_index:
    the held-out rows (a tensor; callers evaluate on them)}."""
    n = len(features)
    if correct.shape != (n, head.max_count + 1):
        raise ValueError(f"correct: expected shape ({n}, {head.max_count + 1}), got {tuple(correct.shape)}")
    if not bool(torch.isfinite(features).all()) or not bool(((correct >= 0) & (correct <= 1)).all()):
        raise ValueError("features must be finite and outcomes must lie in [0, 1]")
    if n < 2:
        raise ValueError(f"features: need at least 2 rows (train and validation), got {n}")
    order = torch.randperm(n, generator=generator)
    nval = min(n - 1, max(1, int(round(n * validation_fraction))))
    val, train = order[:nval], order[nval:]
    features, correct = features.float(), correct.float()
    optimizer = torch.optim.AdamW(head.parameters(), learning_rate, weight_decay=1e-2)
    bce = nn.functional.binary_cross_entropy_with_logits
    best = (math.inf, {k: v.detach().clone() for k, v in head.state_dict().items()}, 0)
    loss = torch.tensor(math.nan)
    history = []
    for step in range(1, steps + 1):
        idx = train[torch.randint(len(train), (min(batch_size, len(train)),), generator=generator)]
        loss = bce(head.correct_logits(features[idx]), correct[idx])
        if not torch.isfinite(loss):
            raise ValueError(f"outcome head: non-finite loss at step {step}")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % check_every == 0 or step == steps:
            with torch.no_grad():
                v = bce(head.correct_logits(features[val]), correct[val]).item()
            history.append((step, loss.item(), v))
            if v < best[0]:
                best = (v, {k: t.detach().clone() for k, t in head.state_dict().items()}, step)
    head.load_state_dict(best[1])
    return {"train_loss": loss.item(), "validation_loss": best[0], "best_step": best[2], "validation_rows": nval,
            "history": history, "validation_index": val}
