"""Urgency-conditioned episode rewards and their exact per-step decomposition.

Owns: the `Reward` interface (`reward(score, pauses, urgency)` for whole episodes, `per_step(...)` spreading
it over decision steps) and three shapes: `MetaReward` (the default, `(1 - u) * score - u * pauses /
max_pauses_total`), `DeadlineReward` (the score counts only if `pauses <= budget(u)`, a budget shrinking
linearly from `max_pauses_total` at u = 0 to `min_budget` at u = 1) and `DiscountedReward` (`score *
exp(-rate * u * pauses / max_pauses_total)`). The score comes from a task scorer the caller runs.

Must not: import `adaptive_pause` (a small torch-only library the core plugs in), or loop over rows in
Python.
"""

from __future__ import annotations

import math

import torch


def _check_episode(score: torch.Tensor, pauses: torch.Tensor, urgency: torch.Tensor) -> None:
    for name, value in (("score", score), ("pauses", pauses), ("urgency", urgency)):
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if not (score.shape == pauses.shape == urgency.shape):
        raise ValueError(
            f"score, pauses, urgency: shapes must match, got {tuple(score.shape)}, {tuple(pauses.shape)}, "
            f"{tuple(urgency.shape)}"
        )
    if urgency.numel() and bool(torch.isnan(urgency).any()):
        raise ValueError("urgency: must not be NaN")
    if score.numel() and not bool(torch.isfinite(score).all()):
        raise ValueError("score: must be finite (a scorer returned NaN or inf)")
    if urgency.numel() and (urgency.min() < 0 or urgency.max() > 1):
        raise ValueError(f"urgency: must lie in [0, 1], got range [{urgency.min():.4g}, {urgency.max():.4g}]")
    if pauses.numel() and pauses.min() < 0:
        raise ValueError(f"pauses: must be >= 0, got minimum {pauses.min():.4g}")


class Reward:
    """An urgency-conditioned episode reward. Subclasses implement `formula` (no validation)."""

    name: str = "reward"

    def __init__(self, max_pauses_total: int):
        if not (isinstance(max_pauses_total, int) and max_pauses_total >= 1):
            raise ValueError(f"max_pauses_total: must be an integer >= 1, got {max_pauses_total!r}")
        self.max_pauses_total = max_pauses_total

    def formula(self, score: torch.Tensor, pauses: torch.Tensor, urgency: torch.Tensor) -> torch.Tensor:
        """The reward's formula, elementwise and unvalidated, in any float dtype (exact tables use float64);
        `reward` is the checked entry point."""
        raise NotImplementedError

    def reward(self, score: torch.Tensor, pauses: torch.Tensor, urgency: torch.Tensor) -> torch.Tensor:
        """Episode reward, elementwise over any common shape (usually (batch,))."""
        _check_episode(score, pauses, urgency)
        return self.formula(score.float(), pauses.float(), urgency.float())

    def step_cost(self, pauses_after: torch.Tensor, urgency: torch.Tensor) -> torch.Tensor:
        """Reward paid at the pause that brings the count to `pauses_after` (elementwise; no validation)."""
        pauses_after = pauses_after.float()
        zero = torch.zeros_like(pauses_after)
        return self.formula(zero, pauses_after, urgency.float()) - self.formula(zero, pauses_after - 1, urgency.float())

    def final_step(self, score: torch.Tensor, pauses: torch.Tensor, urgency: torch.Tensor) -> torch.Tensor:
        """Reward paid with the answer after `pauses` pauses, so that the steps sum to `reward` (no validation)."""
        score, pauses, urgency = score.float(), pauses.float(), urgency.float()
        zero = torch.zeros_like(score)
        return (self.formula(score, pauses, urgency) - self.formula(zero, pauses, urgency)
                + self.formula(zero, torch.zeros_like(pauses), urgency))

    def per_step(self, score: torch.Tensor, paused: torch.Tensor, urgency: torch.Tensor,
                 valid: torch.Tensor | None = None) -> torch.Tensor:
        """Spread the episode reward over steps: `step_cost` at each pause, `final_step` at the last valid step.

        score: (batch,) float; paused: (batch, steps) bool/long, 1 where the step was a pause;
        urgency: (batch,) float; valid: (batch, steps) bool, the steps the row actually took
        (default: all). Returns (batch, steps) float whose sum over steps equals
        `reward(score, pauses, urgency)` with `pauses = (paused & valid).sum(1)`. A row with
        no valid step gets no reward at all.

        One causal rule for every shape: the pause that brings the count from j-1 to j is charged
        `step_cost(j) = reward(0, j) - reward(0, j-1)` (what the pause costs whatever the outcome), and the
        last valid step receives `final_step = reward(score, k) - reward(0, k) + reward(0, 0)`. The sum
        telescopes to the episode reward, and a pause's cost never depends on the final score, so
        returns-to-go stay an unbiased signal and an online env can pay the same rewards step by step.
        """
        if paused.dim() != 2:
            raise ValueError(f"paused: expected shape (batch, steps), got {tuple(paused.shape)}")
        if valid is None:
            valid = torch.ones_like(paused, dtype=torch.bool)
        if valid.shape != paused.shape:
            raise ValueError(f"valid: shape {tuple(valid.shape)} must match paused {tuple(paused.shape)}")
        batch, steps = paused.shape
        pause = paused.bool() & valid.bool()  # (batch, steps)
        pauses = pause.sum(1)  # (batch,)
        _check_episode(score, pauses, urgency)

        after = pause.float().cumsum(1)  # (batch, steps): pauses spent including this step
        costs = self.step_cost(after, urgency.float()[:, None].expand(batch, steps))
        rewards = torch.where(pause, costs, torch.zeros_like(costs))  # (batch, steps)

        # The outcome-dependent part lands on each row's last valid step.
        step_index = torch.arange(steps, device=paused.device).expand(batch, steps)
        last = torch.where(valid.bool(), step_index, torch.full_like(step_index, -1)).max(1).values  # (batch,)
        is_last = (step_index == last[:, None]) & (last >= 0)[:, None]  # (batch, steps)
        final = self.final_step(score, pauses, urgency)  # (batch,)
        return rewards + torch.where(is_last, final[:, None].expand(batch, steps), torch.zeros_like(rewards))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class MetaReward(Reward):
    """`(1 - u) * score - u * pauses / max_pauses_total`: the default urgency trade-off."""

    name = "meta"

    def formula(self, score, pauses, urgency):
        return (1 - urgency) * score - urgency * pauses / self.max_pauses_total


class DeadlineReward(Reward):
    """`score * [pauses <= budget(u)]` with `budget(u) = min_budget + (1 - u) * (max_pauses_total - min_budget)`.

    Pauses cost nothing at score 0, so `per_step` pays the whole reward with the answer.
    """

    name = "deadline"

    def __init__(self, max_pauses_total: int, min_budget: float = 0.0):
        super().__init__(max_pauses_total)
        if not (math.isfinite(min_budget) and 0 <= min_budget <= max_pauses_total):
            raise ValueError(f"min_budget: must be in [0, max_pauses_total={max_pauses_total}], got {min_budget}")
        self.min_budget = float(min_budget)

    def budget(self, urgency: torch.Tensor) -> torch.Tensor:
        return self.min_budget + (1 - urgency) * (self.max_pauses_total - self.min_budget)

    def formula(self, score, pauses, urgency):
        # A small tolerance so that a budget of exactly k pauses (up to float rounding of u) admits k.
        within = pauses <= self.budget(urgency) + 1e-6
        return torch.where(within, score, torch.zeros_like(score))


class DiscountedReward(Reward):
    """`score * exp(-rate * u * pauses / max_pauses_total)`: each pause discounts the answer's worth."""

    name = "discounted"

    def __init__(self, max_pauses_total: int, rate: float = math.log(10.0)):
        super().__init__(max_pauses_total)
        if not (math.isfinite(rate) and rate >= 0):
            raise ValueError(f"rate: must be a finite number >= 0, got {rate}")
        self.rate = float(rate)

    def formula(self, score, pauses, urgency):
        return score * torch.exp(-self.rate * urgency * pauses / self.max_pauses_total)


REWARDS: dict[str, type[Reward]] = {cls.name: cls for cls in (MetaReward, DeadlineReward, DiscountedReward)}


def make_reward(name: str, max_pauses_total: int, **kwargs) -> Reward:
    """Build a reward by name ('meta', 'deadline', 'discounted')."""
    if name not in REWARDS:
        raise ValueError(f"reward: unknown name {name!r}; known: {sorted(REWARDS)}")
    return REWARDS[name](max_pauses_total, **kwargs)
