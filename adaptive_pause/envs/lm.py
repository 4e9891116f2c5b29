"""Gymnasium views of the decode loop: one prompt's answer per episode, pause (1) or emit (0) per step.

Owns: `PauseEnv` (a `gymnasium.Env`, passes `check_env`) and `PauseVectorEnv` (a `gymnasium.vector.VectorEnv`
over one batched `DecodeSession`). Both step the very same `DecodeSession` that `generate` and PPO use; they
add episode sampling (a task example and an urgency), observations, and rewards from `rewards/` (`step_cost`
at each pause, `final_step` with the scored answer). Observation: {"features": (hidden,) float32 (2 x hidden
with `prompt_summary`), "urgency": (1,), "pauses_before_token": int, "pauses_total": int, "top_prob": (1,)}.
At a cap the step is a forced emit whatever the action (info["forced"]), as in the decode loop.

Must not: implement decoding, policies, or PPO.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from rewards import Reward, make_reward

from ..decoding import DecodeConfig, DecodeSession
from ..decoding.trace import FINISHED_LENGTH
from ..modeling import AdaptivePauseModel
from ..tasks import Task, get_task


@dataclass
class PauseEnvConfig:
    """Episode settings of the LM pause environment (validated: ValueError naming the field)."""

    task: str = "addition:1-3"  # task spec (tasks.get_task)
    urgency: float | None = None  # fixed urgency for every episode; None = uniform in [0, 1] per episode
    max_new_tokens: int = 8  # answer tokens per episode (EOS included)
    max_pauses: int = 8  # cap on pauses before one answer token
    max_pauses_total: int | None = None  # cap on pauses per answer; None = decoding.pause_budget's rule
    first_token_pauses_only: bool = False  # pauses only before the first answer token
    reward: str = "meta"  # rewards.make_reward name
    do_sample: bool = False  # sample answer tokens (else greedy)
    prompt_summary: bool = False  # observation features = [hidden state, prompt summary] (2 x hidden)

    def __post_init__(self):
        if self.urgency is not None and not (0.0 <= self.urgency <= 1.0):
            raise ValueError(f"urgency: must be in [0, 1] or None, got {self.urgency}")
        self.decode_config()  # validates the decode limits

    def decode_config(self) -> DecodeConfig:
        return DecodeConfig(max_new_tokens=self.max_new_tokens, max_pauses=self.max_pauses,
                            max_pauses_total=self.max_pauses_total,
                            first_token_pauses_only=self.first_token_pauses_only, do_sample=self.do_sample,
                            record_features=False, prompt_summary=self.prompt_summary)


def _observation_space(hidden: int, config: PauseEnvConfig) -> gym.spaces.Dict:
    budget = config.decode_config().pause_budget
    return gym.spaces.Dict({
        "features": gym.spaces.Box(-np.inf, np.inf, (hidden * (2 if config.prompt_summary else 1),), np.float32),
        "urgency": gym.spaces.Box(0.0, 1.0, (1,), np.float32),
        "pauses_before_token": gym.spaces.Discrete(config.max_pauses + 1),
        "pauses_total": gym.spaces.Discrete(budget + 1),
        "top_prob": gym.spaces.Box(0.0, 1.0, (1,), np.float32),
    })


class _Episodes:
    """Shared core of both views: a batch of episodes on one DecodeSession, stepped with actions."""

    def __init__(self, model: AdaptivePauseModel, task: Task, config: PauseEnvConfig, reward: Reward):
        self.model, self.task, self.config, self.reward = model, task, config, reward
        self.session: DecodeSession | None = None

    def start(self, rng: random.Random, urgency: list[float], seed: int) -> None:
        self.examples = [self.task.sample(rng) for _ in urgency]
        self.session = self.model.session([e.prompt for e in self.examples], urgency, self.config.decode_config(),
                                          seed=seed)
        self.reported = torch.zeros(len(urgency), dtype=torch.bool)  # finish already returned once

    def observe(self) -> dict[str, np.ndarray]:  # batched: (n, ...) arrays
        s = self.session
        return {
            "features": s.controller_inputs().features.detach().float().cpu().numpy().astype(np.float32),
            "urgency": s.urgency.detach().cpu().numpy().astype(np.float32)[:, None],
            "pauses_before_token": s.pauses_before_token.cpu().numpy().astype(np.int64),
            "pauses_total": s.pauses_total.cpu().numpy().astype(np.int64),
            "top_prob": s.top_prob.detach().float().clamp(0, 1).cpu().numpy().astype(np.float32)[:, None],
        }

    def step(self, actions: np.ndarray):
        s = self.session
        urgency = s.urgency.cpu().clone()
        forced = s.forced().cpu()
        before_total = s.pauses_total.cpu().clone()
        was_active = s.active.cpu().clone()
        s.step(torch.as_tensor(actions, dtype=torch.long).reshape(-1))
        paused = (s.pauses_total.cpu() > before_total) & was_active
        rewards = torch.where(paused, self.reward.step_cost(s.pauses_total.cpu(), urgency), torch.zeros_like(urgency))
        finished = was_active & ~s.active.cpu()
        scores = torch.zeros_like(urgency)
        if bool(finished.any()):
            result = s.result()
            texts = self.model.tokenizer.batch_decode(result.answer_ids, skip_special_tokens=True)
            for row in finished.nonzero().flatten().tolist():  # scoring is per-text Python, only at episode ends
                scores[row] = float(self.task.score(texts[row], self.examples[row].answer))
            final = self.reward.final_step(scores, s.pauses_total.cpu(), urgency)
            rewards = rewards + torch.where(finished, final, torch.zeros_like(final))
        truncated = finished & (s.finish_reason.cpu() == FINISHED_LENGTH)
        terminated = finished & ~truncated
        return rewards, terminated, truncated, finished, forced & was_active, scores


def _episodes(model: AdaptivePauseModel, config: PauseEnvConfig | None, reward: Reward | None):
    """(config, model, episode core) of an env: the config's task and, unless given, its reward. Without a
    config the env takes the pause settings the model's controller was trained under (decode.yaml) and the
    prompt summary its controller reads."""
    if config is None:
        summary = bool(model.policy is not None and model.policy.prompt_summary)
        config = PauseEnvConfig(prompt_summary=summary, **model.trained_decode)
    budget = max(1, config.decode_config().pause_budget)
    reward = reward or make_reward(config.reward, budget)
    return config, model, _Episodes(model, get_task(config.task), config, reward)


class PauseEnv(gym.Env):
    """One episode = one task example answered under one urgency; actions: 0 emit, 1 pause.

    reset(seed=..., options={"urgency": u}) fixes the urgency for that episode.
    Reaching `max_new_tokens` ends the episode as truncated (still scored);
    EOS ends it as terminated.
    """

    metadata = {"render_modes": []}

    def __init__(self, model: AdaptivePauseModel, config: PauseEnvConfig | None = None, reward: Reward | None = None):
        self.config, self.model, self.core = _episodes(model, config, reward)
        self.observation_space = _observation_space(model.hidden_size, self.config)
        self.action_space = gym.spaces.Discrete(2)
        self._done = True

    def _obs(self) -> dict:
        batch = self.core.observe()
        return {"features": batch["features"][0], "urgency": batch["urgency"][0],
                "pauses_before_token": int(batch["pauses_before_token"][0]),
                "pauses_total": int(batch["pauses_total"][0]), "top_prob": batch["top_prob"][0]}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        if "urgency" in options:
            urgency = float(options["urgency"])
        elif self.config.urgency is not None:
            urgency = self.config.urgency
        else:
            urgency = float(self.np_random.uniform())
        if not 0.0 <= urgency <= 1.0:
            raise ValueError(f"urgency: must be in [0, 1], got {urgency}")
        episode_seed = int(self.np_random.integers(2**31 - 1))
        self.core.start(random.Random(episode_seed), [urgency], seed=episode_seed)
        self._done = False
        example = self.core.examples[0]
        return self._obs(), {"urgency": urgency, "difficulty": example.difficulty, "prompt": example.prompt}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action: must be 0 (emit) or 1 (pause), got {action!r}")
        if self._done:
            raise RuntimeError("step() called after the episode ended; call reset() first")
        rewards, terminated, truncated, finished, forced, scores = self.core.step(np.array([int(action)]))
        info = {"forced": bool(forced[0]), "pauses": int(self.core.session.pauses_total[0])}
        if bool(finished[0]):
            self._done = True
            info["score"] = float(scores[0])
            info["answer"] = self.model.tokenizer.decode(self.core.session.result().answer_ids[0],
                                                         skip_special_tokens=True)
        return self._obs(), float(rewards[0]), bool(terminated[0]), bool(truncated[0]), info


class PauseVectorEnv(gym.vector.VectorEnv):
    """`num_envs` episodes decoded as one batch (one DecodeSession), stepped together.

    Episodes run in cohorts: a row that finishes reports terminated/truncated
    once, then returns its last observation with reward 0 and
    info["active"] False until every row has finished; then call `reset()` for
    the next cohort (autoreset is disabled: the batch shares one KV cache, so
    a single row cannot restart alone).
    """

    metadata = {"autoreset_mode": AutoresetMode.DISABLED, "render_modes": []}

    def __init__(self, model: AdaptivePauseModel, num_envs: int, config: PauseEnvConfig | None = None,
                 reward: Reward | None = None):
        if not (isinstance(num_envs, int) and num_envs >= 1):
            raise ValueError(f"num_envs: must be an integer >= 1, got {num_envs!r}")
        self.config, self.model, self.core = _episodes(model, config, reward)
        self.num_envs = num_envs
        self.single_observation_space = _observation_space(model.hidden_size, self.config)
        self.single_action_space = gym.spaces.Discrete(2)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self._rng = np.random.default_rng()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        options = options or {}
        if "urgency" in options:
            urgency = np.broadcast_to(np.asarray(options["urgency"], dtype=np.float64), (self.num_envs,)).tolist()
        elif self.config.urgency is not None:
            urgency = [self.config.urgency] * self.num_envs
        else:
            urgency = self._rng.uniform(size=self.num_envs).tolist()
        episode_seed = int(self._rng.integers(2**31 - 1))
        self.core.start(random.Random(episode_seed), urgency, seed=episode_seed)
        info = {"urgency": np.asarray(urgency, dtype=np.float32),
                "difficulty": np.asarray([e.difficulty for e in self.core.examples])}
        return self.core.observe(), info

    def step(self, actions):
        actions = np.asarray(actions).reshape(-1)
        if actions.shape != (self.num_envs,) or not np.isin(actions, (0, 1)).all():
            raise ValueError(f"actions: expected {self.num_envs} values in {{0, 1}}, got {actions.tolist()}")
        if self.core.session is None or self.core.session.done:
            raise RuntimeError("step() called after every episode ended; call reset() first")
        active = self.core.session.active.cpu().numpy().copy()
        rewards, terminated, truncated, finished, forced, scores = self.core.step(actions)
        info = {"active": active, "forced": forced.numpy(), "score": scores.numpy(), "finished": finished.numpy(),
                "pauses": self.core.session.pauses_total.cpu().numpy()}
        return (self.core.observe(), rewards.numpy().astype(np.float64), terminated.numpy(), truncated.numpy(),
                info)
