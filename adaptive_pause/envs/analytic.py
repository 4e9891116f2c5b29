"""An analytic pause environment whose optimal policy is known exactly: the test bench for the RL.

Owns: the known dynamics (`AnalyticModel`: P(correct | pauses, difficulty), the noisy difficulty channel, the
exact posterior), a vectorised batch environment (`AnalyticBatchEnv`), a gymnasium view
(`AnalyticPauseEnv`), `AnalyticEnvConfig`, and the exact evaluation of any controller and of the optimum at
every urgency (`evaluate_analytic`). One episode = one answer; the model is described on `AnalyticModel`.

Must not: run a language model, or know about PPO (`ppo/sources.py` adapts this env to PPO's storage).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from policies import ControllerInputs, PausePolicy
from rewards import MetaReward, Reward

from ..config import check, help_field


@dataclass
class AnalyticEnvConfig:
    """The analytic pause environment: P(correct | pauses, difficulty) is known, so the optimum is exact.

    An instance has a hidden difficulty level d in 0..levels-1 (uniform). Its answer is correct after k
    pauses with probability p_floor + (p_ceiling - p_floor) * sigmoid(slope * (k - needed(d))), where
    needed(d) = needed_per_level * d + needed_offset. The controller sees d through a noisy channel:
    with probability observation_noise the observed level is d - 1 or d + 1 (half each, clipped).
    """

    levels: int = help_field("difficulty levels", default=7)
    max_pauses: int = help_field("pause cap per episode (at the cap the answer is forced)", default=12)
    slope: float = help_field("how sharply accuracy rises once the needed pauses are reached", default=1.5)
    needed_per_level: float = help_field("pauses an instance needs, per difficulty level", default=1.2)
    needed_offset: float = help_field("pauses the easiest instance needs (may be negative)", default=-0.5)
    p_floor: float = help_field("accuracy far below the needed pauses", default=0.02)
    p_ceiling: float = help_field("accuracy far above the needed pauses", default=0.98)
    observation_noise: float = help_field("probability that the observed difficulty is off by one level", default=0.4)

    def __post_init__(self):
        check(self.levels >= 2, "levels", f"must be >= 2, got {self.levels}")
        check(self.max_pauses >= 1, "max_pauses", f"must be >= 1, got {self.max_pauses}")
        for name in ("slope", "needed_per_level", "needed_offset"):
            check(math.isfinite(getattr(self, name)), name, f"must be finite, got {getattr(self, name)}")
        check(self.slope > 0, "slope", f"must be > 0, got {self.slope}")
        check(0 <= self.p_floor < self.p_ceiling <= 1, "p_floor",
               f"need 0 <= p_floor < p_ceiling <= 1, got p_floor={self.p_floor}, p_ceiling={self.p_ceiling}")
        check(0 <= self.observation_noise <= 1, "observation_noise",
               f"must be in [0, 1], got {self.observation_noise}")


class AnalyticModel:
    """The known dynamics and their exact consequences (small tables; all exact).

    One episode = one answer. A hidden difficulty level d (uniform over
    `levels`) decides how many pauses the instance needs: after k pauses the
    answer is correct with probability
        p(k, d) = p_floor + (p_ceiling - p_floor) * sigmoid(slope * (k - needed(d)))
    with needed(d) = needed_per_level * d + needed_offset. The controller sees an
    observed level o, off by one with probability `observation_noise`, as
    features (one-hot of o, plus o / (levels - 1)), with the urgency and the pauses
    spent. Before each step it pauses (action 1) or answers (0); at `max_pauses`
    the step is a forced answer (any action answers; the step is flagged forced,
    exactly as the LM decode loop flags it). Rewards are paid per step by a
    `rewards.Reward` (meta-reward by default): `step_cost` at each pause,
    `final_step` with the answer, so an episode's rewards sum to
    reward(score, pauses, urgency).

    Because nothing new is observed while pausing, the optimal controller is a
    stopping time fixed by (o, u): answer after k*(o, u) = argmax_k
    E[reward(score_k, k, u) | o] pauses, with the expectation exact over the
    posterior P(d | o). The optimal k depends on both: at moderate urgency harder
    observed levels get more pauses, at higher urgency the hardest are given up
    (0 pauses) while middling ones still get some. Any controller's expected
    reward is computed exactly too, by running it on every (o, pauses spent) input
    and summing over its stopping distribution: no Monte Carlo noise in the
    "fraction of optimum".
    """

    def __init__(self, config: AnalyticEnvConfig | None = None):
        self.config = config = config or AnalyticEnvConfig()
        levels, cap = config.levels, config.max_pauses
        level = torch.arange(levels, dtype=torch.float64)
        pauses = torch.arange(cap + 1, dtype=torch.float64)
        needed = config.needed_per_level * level + config.needed_offset  # (levels,)
        rise = torch.sigmoid(config.slope * (pauses[None, :] - needed[:, None]))
        self.p_correct = config.p_floor + (config.p_ceiling - config.p_floor) * rise  # (levels d, cap + 1)

        # P(o | d): off by one level with probability observation_noise, half each way, clipped at the ends.
        noise = config.observation_noise
        channel = torch.zeros(levels, levels, dtype=torch.float64)  # (d, o)
        for shift, prob in ((-1, noise / 2), (0, 1 - noise), (1, noise / 2)):
            observed = (level.long() + shift).clamp(0, levels - 1)
            channel[level.long(), observed] += prob
        self.channel = channel  # (d, o)
        joint = channel / levels  # (d, o): P(d) uniform
        self.p_observed = joint.sum(0)  # (o,)
        self.posterior = (joint / self.p_observed[None, :]).T  # (o, d): P(d | o)
        self.p_correct_given_observed = self.posterior @ self.p_correct  # (o, cap + 1)
        # Cumulative channel rows for sampling o given d.
        self._channel_cdf = channel.cumsum(1).float()  # (d, o)

    @property
    def levels(self) -> int:
        return self.config.levels

    @property
    def max_pauses(self) -> int:
        return self.config.max_pauses

    @property
    def feature_dim(self) -> int:
        return self.config.levels + 1

    def features(self, observed: torch.Tensor) -> torch.Tensor:
        """(n,) long observed levels -> (n, levels + 1) float: one-hot, then the level scaled to [0, 1]."""
        one_hot = torch.nn.functional.one_hot(observed, self.levels).float()
        return torch.cat([one_hot, observed[:, None].float() / (self.levels - 1)], dim=1)

    def sample(self, n: int, generator: torch.Generator | None = None):
        """Draw n instances: (difficulty (n,) long, observed (n,) long, outcome uniform (n,) float)."""
        difficulty = torch.randint(self.levels, (n,), generator=generator)
        channel_draw = torch.rand(n, generator=generator)
        observed = (channel_draw[:, None] >= self._channel_cdf[difficulty]).sum(1).clamp(max=self.levels - 1)
        # One uniform per episode decides correctness for every k (correct iff outcome < p(k, d)):
        # distributionally the same as drawing at the answer, and independent of how many steps ran.
        outcome = torch.rand(n, generator=generator)
        return difficulty, observed, outcome

    def answer_values(self, urgency: float, reward: Reward) -> torch.Tensor:
        """(levels o, cap + 1) float64: exact E[reward | observed o, answer after k pauses] at urgency u."""
        cap = self.max_pauses
        pauses = torch.arange(cap + 1, dtype=torch.float64)[None, :].expand(self.levels, cap + 1)
        u = torch.full_like(pauses, float(urgency))
        correct = reward.formula(torch.ones_like(pauses), pauses, u)
        wrong = reward.formula(torch.zeros_like(pauses), pauses, u)
        p = self.p_correct_given_observed
        return p * correct + (1 - p) * wrong

    def optimum(self, urgency: float, reward: Reward | None = None):
        """(best pauses per observed level (levels,) long, optimal expected reward float) at urgency u."""
        values = self.answer_values(urgency, reward or self.default_reward())
        best = values.max(1)
        return best.indices, float((self.p_observed * best.values).sum())

    def stop_distribution(self, pause_probs: torch.Tensor) -> torch.Tensor:
        """(levels o, cap) pause probabilities -> (levels o, cap + 1) P(answer after exactly k pauses)."""
        pause_probs = pause_probs.double()
        survive = torch.cumprod(torch.cat([torch.ones_like(pause_probs[:, :1]), pause_probs], 1), 1)  # (o, cap+1)
        stop_now = torch.cat([1 - pause_probs, torch.ones_like(pause_probs[:, :1])], 1)  # forced at the cap
        return survive * stop_now

    def expected_reward(self, pause_probs: torch.Tensor, urgency: float, reward: Reward | None = None) -> float:
        """Exact expected episode reward of a controller given as (levels o, cap) pause probabilities."""
        values = self.answer_values(urgency, reward or self.default_reward())
        stops = self.stop_distribution(pause_probs)
        return float((self.p_observed * (stops * values).sum(1)).sum())

    def expected_pauses(self, pause_probs: torch.Tensor) -> torch.Tensor:
        """(levels o,) expected pauses per observed level."""
        stops = self.stop_distribution(pause_probs)
        return stops @ torch.arange(self.max_pauses + 1, dtype=torch.float64)

    def default_reward(self) -> Reward:
        return MetaReward(self.max_pauses)


@torch.no_grad()
def policy_pause_probs(policy: PausePolicy, model: AnalyticModel, urgency: float, greedy: bool = False) -> torch.Tensor:
    """(levels o, cap) probability that `policy` pauses at observed level o with j pauses spent."""
    levels, cap = model.levels, model.max_pauses
    observed = torch.arange(levels).repeat_interleave(cap)  # (levels * cap,)
    spent = torch.arange(cap).repeat(levels)  # (levels * cap,)
    device = next(iter(policy.parameters()), torch.empty(0)).device
    inputs = ControllerInputs(
        features=model.features(observed).to(device),
        urgency=torch.full((levels * cap,), float(urgency), device=device),
        pauses_before_token=spent.to(device),
        pauses_total=spent.to(device),
    )
    logits = policy.action_logits(inputs).float().cpu()
    probs = (logits > 0).double() if greedy else torch.sigmoid(logits.double())
    return probs.view(levels, cap)


@dataclass
class StepResult:
    reward: torch.Tensor  # (n,) float: reward paid at this step (0 for rows already done)
    answered: torch.Tensor  # (n,) bool: the row answered at this step (its episode ended)
    forced: torch.Tensor  # (n,) bool: the step was a forced answer (pause cap reached)
    active: torch.Tensor  # (n,) bool: the row took this step (was not done before it)


class AnalyticBatchEnv:
    """n analytic episodes stepped together (torch, vectorised; rows finish independently)."""

    def __init__(self, model: AnalyticModel, reward: Reward | None = None):
        self.model = model
        self.reward = reward or model.default_reward()
        if self.reward.max_pauses_total != model.max_pauses:
            raise ValueError(f"reward.max_pauses_total: must equal the env's max_pauses={model.max_pauses}, "
                             f"got {self.reward.max_pauses_total}")

    def reset(self, urgency: torch.Tensor, generator: torch.Generator | None = None) -> ControllerInputs:
        """Start len(urgency) episodes; urgency (n,) float in [0, 1]. Returns the first observation."""
        if urgency.dim() != 1 or (urgency.numel() and (urgency.min() < 0 or urgency.max() > 1)):
            raise ValueError(f"urgency: expected shape (n,) with values in [0, 1], got shape {tuple(urgency.shape)}")
        n = urgency.shape[0]
        self.difficulty, self.observed, self.outcome = self.model.sample(n, generator)  # (n,) each
        self.urgency = urgency.float()  # (n,)
        self.pauses = torch.zeros(n, dtype=torch.long)  # (n,)
        self.done = torch.zeros(n, dtype=torch.bool)  # (n,)
        self.score = torch.zeros(n)  # (n,): set when the row answers
        self._features = self.model.features(self.observed)  # (n, levels + 1): fixed for the episode
        return self.observe()

    def observe(self) -> ControllerInputs:
        return ControllerInputs(self._features, self.urgency, self.pauses.clone(), self.pauses.clone())

    @property
    def forced_next(self) -> torch.Tensor:  # (n,) bool: the next step of the row is a forced answer
        return self.pauses >= self.model.max_pauses

    def step(self, action: torch.Tensor) -> StepResult:
        """Apply action (n,) long (1 = pause, 0 = answer); rows already done are left alone."""
        active = ~self.done
        forced = active & self.forced_next
        pause = active & ~forced & action.bool()
        answered = active & ~pause
        self.pauses = self.pauses + pause.long()
        p = self.model.p_correct.float()[self.difficulty, self.pauses]  # (n,)
        score = (self.outcome < p).float()
        self.score = torch.where(answered, score, self.score)
        reward = torch.where(pause, self.reward.step_cost(self.pauses, self.urgency), torch.zeros_like(self.urgency))
        reward = torch.where(answered, self.reward.final_step(score, self.pauses, self.urgency), reward)
        self.done = self.done | answered
        return StepResult(reward, answered, forced, active)


class AnalyticPauseEnv(gym.Env):
    """Gymnasium view of the analytic dynamics, one episode at a time (wraps `AnalyticBatchEnv` with n = 1).

    reset(seed=..., options={"urgency": u}) fixes the urgency; without it u is drawn uniformly.
    Observation: {"features": (levels + 1,), "urgency": (1,), "pauses_spent": int}.
    """

    metadata = {"render_modes": []}

    def __init__(self, config: AnalyticEnvConfig | None = None, reward: Reward | None = None):
        self.model = AnalyticModel(config)
        self.batch = AnalyticBatchEnv(self.model, reward)
        cap = self.model.max_pauses
        self.observation_space = gym.spaces.Dict({
            "features": gym.spaces.Box(0.0, 1.0, (self.model.feature_dim,), np.float32),
            "urgency": gym.spaces.Box(0.0, 1.0, (1,), np.float32),
            "pauses_spent": gym.spaces.Discrete(cap + 1),
        })
        self.action_space = gym.spaces.Discrete(2)

    def _obs(self, inputs: ControllerInputs) -> dict:
        return {
            "features": inputs.features[0].numpy().astype(np.float32),
            "urgency": inputs.urgency[:1].numpy().astype(np.float32),
            "pauses_spent": int(inputs.pauses_total[0]),
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        urgency = float(options["urgency"]) if "urgency" in options else float(self.np_random.uniform())
        if not 0 <= urgency <= 1:
            raise ValueError(f"urgency: must be in [0, 1], got {urgency}")
        generator = torch.Generator().manual_seed(int(self.np_random.integers(2**62)))
        inputs = self.batch.reset(torch.tensor([urgency]), generator)
        return self._obs(inputs), {"difficulty": int(self.batch.difficulty[0]), "urgency": urgency}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action: must be 0 (answer) or 1 (pause), got {action!r}")
        if bool(self.batch.done[0]):
            raise RuntimeError("step() called after the episode ended; call reset() first")
        result = self.batch.step(torch.tensor([int(action)]))
        terminated = bool(result.answered[0])
        info = {"forced": bool(result.forced[0]), "pauses": int(self.batch.pauses[0])}
        if terminated:
            info["score"] = float(self.batch.score[0])
        return self._obs(self.batch.observe()), float(result.reward[0]), terminated, False, info


def evaluate_analytic(policy: PausePolicy, model: AnalyticModel, reward: Reward,
                      urgencies: list[float]) -> list[dict[str, float]]:
    """Exact evaluation per urgency: achieved (greedy and sampled) vs optimal expected reward.

    fraction_of_optimum = (achieved - worst) / (optimal - worst), with `worst` the expected
    reward of the worst stopping rule (per observed level, the worst k). It equals the plain
    ratio achieved / optimal when the worst controller scores 0, and stays defined where the
    optimum is 0 (u = 1 with the meta-reward, where "answer at once" scores 0). `ratio` is the
    plain achieved / optimal (greedy), reported where optimal > 0.
    """
    rows = []
    was_training = policy.training
    policy.eval()
    for u in urgencies:
        best_k, optimal = model.optimum(u, reward)
        values = model.answer_values(u, reward)
        worst = float((model.p_observed * values.min(1).values).sum())
        greedy_probs = policy_pause_probs(policy, model, u, greedy=True)
        sampled_probs = policy_pause_probs(policy, model, u, greedy=False)
        greedy = model.expected_reward(greedy_probs, u, reward)
        sampled = model.expected_reward(sampled_probs, u, reward)
        span = optimal - worst
        rows.append({
            "urgency": u, "optimal": optimal, "worst": worst, "greedy": greedy, "sampled": sampled,
            "fraction_of_optimum": (greedy - worst) / span if span > 0 else 1.0,
            "fraction_sampled": (sampled - worst) / span if span > 0 else 1.0,
            "ratio": greedy / optimal if optimal > 1e-9 else float("nan"),
            "optimal_pauses": [int(k) for k in best_k],
            "greedy_pauses": [round(float(k), 2) for k in model.expected_pauses(greedy_probs)],
        })
    policy.train(was_training)
    return rows


def format_analytic(rows: list[dict]) -> str:
    lines = ["| u | optimal | greedy | sampled | fraction (greedy) | fraction (sampled) | ratio | optimal k by "
             "observed level | greedy k |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        ratio = "n/a" if math.isnan(r["ratio"]) else f"{r['ratio']:.4f}"
        lines.append(f"| {r['urgency']:.2f} | {r['optimal']:.4f} | {r['greedy']:.4f} | {r['sampled']:.4f} | "
                     f"{r['fraction_of_optimum']:.4f} | {r['fraction_sampled']:.4f} | {ratio} | "
                     f"{r['optimal_pauses']} | {[round(k) for k in r['greedy_pauses']]} |")
    return "\n".join(lines)
