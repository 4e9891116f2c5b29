"""`PPOConfig`: every setting of controller PPO, with its help and its checks.

Must not: run anything.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional

from ..config import check, help_field
from ..decoding import pause_budget
from ..envs.analytic import AnalyticEnvConfig

URGENCY_DISTRIBUTIONS = ("uniform", "discrete")
REWARD_NAMES = ("meta", "deadline", "discounted")
ADVANTAGES = ("gae", "rloo")
CONTROLLERS = ("step", "plan", "outcome")



@dataclass
class PPOConfig:
    """Controller PPO (CleanRL-style): rollouts of whole episodes, GAE over decision steps, clipped updates.

    env lm reads the lm fields; env analytic reads `analytic` (an AnalyticEnvConfig, its defaults unless
    given), whose max_pauses is then the pause cap.
    """

    output_dir: str = help_field("run directory: config.yaml, controller/, state/, logs/", default="runs/controller")
    env: str = help_field("rollout source: 'analytic' (the exact test bench) or 'lm' (the decode loop on tasks)",
                          default="analytic")
    analytic: Optional[AnalyticEnvConfig] = help_field("env analytic: the environment (defaults when empty)",
                                                       default=None)
    model_run_dir: Optional[str] = help_field("env lm: a run directory with model/ (and adapter/), e.g. a finetune run",
                                         default=None)
    tasks: list[str] = help_field("env lm: task specs to draw episodes from, e.g. addition:1-4",
                             default_factory=lambda: ["addition"])
    max_new_tokens: int = help_field("env lm: answer tokens per episode (EOS included)", default=8)
    max_pauses: int = help_field("env lm: cap on pauses before one answer token", default=12)
    max_pauses_total: Optional[int] = help_field("env lm: pause cap per answer, also the reward's normaliser "
                                                 "(empty: max_pauses x max_new_tokens)", default=None)
    first_token_pauses_only: bool = help_field("env lm: the controller decides only before the first answer token "
                                          "(for a model finetuned with pauses before the answer only)",
                                          default=False)
    prompt_summary: bool = help_field("env lm: the head also reads the mean of the LM's last hidden states over the "
                                 "prompt (the last position alone says little about how hard the input is)",
                                 default=False)
    advantage: str = help_field("'gae' (a learned value baseline, CleanRL) or 'rloo' (env lm: group_size episodes per "
                           "prompt at one urgency; each episode's advantage is its reward minus the mean of the "
                           "others', as in RLOO: the prompt's own difficulty cancels out; gamma and gae_lambda "
                           "then shape only the value head's targets)", default="gae")
    group_size: int = help_field("advantage rloo: episodes per prompt (>= 2; divides the episodes per process)",
                            default=1)
    seed: int = help_field("seed for the head's initialisation, rollouts and minibatch order", default=0)
    iterations: int = help_field("PPO iterations (one rollout batch + its update epochs each)", default=300)
    episodes_per_iteration: int = help_field("episodes per rollout batch, over all processes", default=1024)
    update_epochs: int = help_field("passes over each rollout batch", default=4)
    num_minibatches: int = help_field("minibatches per epoch on each process", default=4)
    learning_rate: float = help_field("Adam learning rate", default=3e-3)
    anneal_lr: bool = help_field("decay the learning rate linearly to 0 over `iterations`", default=True)
    gamma: float = help_field("discount between consecutive decision steps", default=1.0)
    gae_lambda: float = help_field("GAE lambda", default=0.95)
    clip_coef: float = help_field("PPO ratio clip", default=0.2)
    clip_vloss: bool = help_field("clip the value loss around the rollout's values (CleanRL)", default=True)
    norm_adv: bool = help_field("normalise advantages per minibatch", default=True)
    ent_coef: float = help_field("entropy bonus coefficient", default=0.003)
    vf_coef: float = help_field("value loss coefficient", default=0.5)
    max_grad_norm: float = help_field("gradient clipping norm (0 disables)", default=0.5)
    target_kl: float = help_field("stop the epochs of an update once approx KL exceeds this (0 disables)", default=0.03)
    urgency_distribution: str = help_field("per-episode urgency: 'uniform' on [urgency_low, urgency_high] or "
                                      "'discrete' over urgency_values", default="uniform")
    urgency_low: float = help_field("uniform urgency: lower end", default=0.0)
    urgency_high: float = help_field("uniform urgency: upper end", default=1.0)
    urgency_values: list[float] = help_field("discrete urgency: the values, drawn uniformly",
                                        default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    urgency_from_phrases: bool = help_field(
        "env lm: each episode's urgency becomes a phrase of the nearest level in the prompt (the phrase bank's "
        "train phrasings); the controller reads the run's urgency estimate (model_run_dir/urgency/, from "
        "`adaptive-pause train-urgency`), the reward the phrase's level", default=False)
    phrase_seed: int = help_field("urgency_from_phrases: the phrase bank's split seed (as in train-urgency)",
                                  default=0)
    reward: str = help_field("episode reward: 'meta', 'deadline' or 'discounted' (rewards/)", default="meta")
    deadline_min_budget: float = help_field("deadline reward: pause budget at u = 1", default=0.0)
    discount_rate: float = help_field("discounted reward: log-discount over max_pauses pauses at u = 1",
                                 default=math.log(10.0))
    controller: str = help_field(
        "'step': before each answer token pause again or emit, one pass per pause (PauseControllerHead); 'plan' "
        "(env lm): choose a count k in 0..max_pauses before an answer token, its k pauses prefilled in one pass "
        "(PausePlanningHead; GAE then runs on the planning clock); 'outcome' (env lm, first_token_pauses_only, "
        "reward meta): a planner that predicts P(correct | k) for every k from observed outcomes and takes the "
        "count with the best expected meta reward, each pause required to buy at least outcome_min_gain "
        "(OutcomePlanner, fitted by supervision, no PPO: ppo/outcome.py); saved with the controller", default="step")
    outcome_prompts: int = help_field("controller outcome: dev prompts, each answered after every k in "
                                      "0..max_pauses", default=4000)
    outcome_fit_steps: int = help_field("controller outcome: fitting steps (batches of 256; early stopping on a "
                                        "held-out tenth of the prompts)", default=3000)
    outcome_min_gain: float = help_field("controller outcome: the least expected meta reward a pause must buy (a "
                                         "floor price per pause; at u = 0 pauses are otherwise free)", default=0.01)
    head_width: int = help_field("controller head: MLP width", default=64)
    initial_pause_prob: float = help_field("controller head: pause probability before training", default=0.5)
    eval_urgencies: list[float] = help_field("urgencies of the exact evaluation (analytic env)",
                                        default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    eval_every: int = help_field("iterations between evaluations (also at the end)", default=25)
    checkpoint_every: int = help_field("iterations between checkpoints (also at the end)", default=50)
    resume: bool = help_field("continue from output_dir/state (exactly: weights, optimizer, RNG, iteration)",
                         default=False)
    overwrite: bool = help_field("replace a run of another kind or config in output_dir (only once this one "
                                 "completes)", default=False)
    progress: bool = help_field("show a progress bar", default=True)
    torch_threads: int = help_field("CPU threads per process for torch (0 = torch's default); the head's small matmuls "
                               "run fastest on one, and extra threads only contend on a shared machine", default=1)
    train_adapter: bool = help_field(
        "env lm: also train the run's LoRA adapter (and its <pause> row) with the same PPO objective: answer "
        "tokens are sampled at temperature 1 and become actions too, with a per-token KL penalty to the "
        "adapter-off model", default=False)
    kl_coef: float = help_field("train_adapter: coefficient of the per-emitted-token KL penalty to the adapter-off "
                           "model (k3 estimator, as TRL's GRPO)", default=0.05)
    adapter_learning_rate: float = help_field("train_adapter: Adam learning rate of the LoRA parameters and the "
                                         "<pause> row (annealed with learning_rate when anneal_lr)", default=1e-4)

    def __post_init__(self):
        if self.env == "analytic" and self.analytic is None:
            self.analytic = AnalyticEnvConfig()
        check(self.env == "analytic" or self.analytic is None, "analytic", "is read only with env 'analytic'")
        check(self.torch_threads >= 0, "torch_threads", f"must be >= 0, got {self.torch_threads}")
        check(self.env in ("analytic", "lm"), "env", f"must be 'analytic' or 'lm', got {self.env!r}")
        check(self.env != "lm" or bool(self.model_run_dir), "model_run_dir", "env lm needs a run directory")
        check(self.env != "lm" or os.path.realpath(self.model_run_dir) != os.path.realpath(self.output_dir),
              "output_dir", f"must differ from model_run_dir ({self.model_run_dir}): the controller run would "
              "overwrite the run it trains on")
        check(len(self.tasks) > 0, "tasks", "needs at least one task")
        check(self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        check(self.max_pauses >= 0, "max_pauses", f"must be >= 0, got {self.max_pauses}")
        check(self.max_pauses_total is None or self.max_pauses_total >= 0, "max_pauses_total",
              f"must be >= 0 or empty, got {self.max_pauses_total}")
        for name in ("iterations", "episodes_per_iteration", "update_epochs", "num_minibatches", "head_width",
                     "eval_every", "checkpoint_every"):
            check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        check(math.isfinite(self.learning_rate) and self.learning_rate > 0, "learning_rate",
               f"must be a positive number, got {self.learning_rate}")
        check(0 <= self.gamma <= 1, "gamma", f"must be in [0, 1], got {self.gamma}")
        check(0 <= self.gae_lambda <= 1, "gae_lambda", f"must be in [0, 1], got {self.gae_lambda}")
        check(self.clip_coef > 0, "clip_coef", f"must be > 0, got {self.clip_coef}")
        for name in ("ent_coef", "vf_coef", "max_grad_norm", "target_kl", "deadline_min_budget", "discount_rate"):
            value = getattr(self, name)
            check(math.isfinite(value) and value >= 0, name, f"must be a finite number >= 0, got {value}")
        check(self.urgency_distribution in URGENCY_DISTRIBUTIONS, "urgency_distribution",
               f"must be one of {URGENCY_DISTRIBUTIONS}, got {self.urgency_distribution!r}")
        check(0 <= self.urgency_low <= self.urgency_high <= 1, "urgency_low",
               f"need 0 <= urgency_low <= urgency_high <= 1, got {self.urgency_low}, {self.urgency_high}")
        check(len(self.urgency_values) > 0 and all(0 <= u <= 1 for u in self.urgency_values), "urgency_values",
               f"must be non-empty and in [0, 1], got {self.urgency_values}")
        check(len(self.eval_urgencies) > 0 and all(0 <= u <= 1 for u in self.eval_urgencies), "eval_urgencies",
               f"must be non-empty and in [0, 1], got {self.eval_urgencies}")
        check(self.reward in REWARD_NAMES, "reward", f"must be one of {REWARD_NAMES}, got {self.reward!r}")
        check(self.deadline_min_budget <= self.reward_pause_normaliser(), "deadline_min_budget",
               f"must be <= the episode's pause cap {self.reward_pause_normaliser()}, got {self.deadline_min_budget}")
        check(0 < self.initial_pause_prob < 1, "initial_pause_prob",
               f"must be in (0, 1), got {self.initial_pause_prob}")
        check(not self.train_adapter or self.env == "lm", "train_adapter",
               f"needs env 'lm' (an LM with a LoRA adapter), got env {self.env!r}")
        check(self.advantage in ADVANTAGES, "advantage", f"must be one of {ADVANTAGES}, got {self.advantage!r}")
        check(self.group_size >= 1, "group_size", f"must be >= 1, got {self.group_size}")
        check(self.controller in CONTROLLERS, "controller", f"must be one of {CONTROLLERS}, got {self.controller!r}")
        check(self.controller == "step" or (self.env == "lm" and self.max_pauses >= 1), "controller",
              "plan and outcome need env 'lm' and max_pauses >= 1 (the analytic env steps pause by pause)")
        if self.controller == "outcome":
            check(self.first_token_pauses_only, "first_token_pauses_only", "controller outcome plans the pauses "
                  "before the first answer token only: set first_token_pauses_only true")
            check(self.reward == "meta", "reward", f"controller outcome computes the meta reward's expectation; got "
                  f"{self.reward!r}")
            check(not self.train_adapter and not self.urgency_from_phrases, "controller",
                  "outcome is fitted on the frozen LM's outcomes for bare prompts: set train_adapter and "
                  "urgency_from_phrases false")
        check(self.outcome_prompts >= 20, "outcome_prompts", f"must be >= 20, got {self.outcome_prompts}")
        check(self.outcome_fit_steps >= 1, "outcome_fit_steps", f"must be >= 1, got {self.outcome_fit_steps}")
        check(0 <= self.outcome_min_gain < 1, "outcome_min_gain", f"must be in [0, 1), got {self.outcome_min_gain}")
        check(not self.urgency_from_phrases or self.env == "lm", "urgency_from_phrases",
              f"needs env 'lm' (prompts to phrase), got env {self.env!r}")
        check(not self.urgency_from_phrases or not any(spec.startswith("phrased") for spec in self.tasks),
              "urgency_from_phrases", f"phrases the tasks' prompts itself; name the bare tasks, not {self.tasks}")
        check(not self.prompt_summary or self.env == "lm", "prompt_summary",
               f"needs env 'lm' (a prompt to summarise), got env {self.env!r}")
        if self.advantage == "rloo":
            check(self.env == "lm", "advantage", "rloo needs env 'lm' (groups of episodes on one prompt)")
            check(self.group_size >= 2, "group_size", f"rloo needs at least 2 episodes per prompt, got {self.group_size}")
        else:
            check(self.group_size == 1, "group_size", f"groups are for advantage rloo; got {self.group_size} with gae")
        check(math.isfinite(self.kl_coef) and self.kl_coef >= 0, "kl_coef",
               f"must be a finite number >= 0, got {self.kl_coef}")
        check(math.isfinite(self.adapter_learning_rate) and self.adapter_learning_rate > 0, "adapter_learning_rate",
               f"must be a positive number, got {self.adapter_learning_rate}")

    def pause_cap(self) -> int:
        """Most pauses before one answer token: the head's count scale."""
        return self.analytic.max_pauses if self.env == "analytic" else self.max_pauses

    def reward_pause_normaliser(self) -> int:
        """The pause count the reward divides by: the episode's pause budget (`decoding.pause_budget`)."""
        if self.env == "analytic":
            return self.analytic.max_pauses
        return pause_budget(self.max_pauses, self.max_new_tokens, self.max_pauses_total, self.first_token_pauses_only)
