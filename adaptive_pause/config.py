"""Configuration: one dataclass per stage, YAML in and out, CLI overrides, validation.

Owns: the fields every stage reads, their one-line help (shown by `--help`),
their validation (a `ValueError` naming the field and the allowed range), and
the YAML round trip used to save the resolved config beside every run.

CLI parsing is transformers' `HfArgumentParser` (the convention TRL users know:
`--learning_rate 1e-3`), with `--config run.yaml` supplying defaults that flags
then override.

Must not: import torch models, tasks or training code.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TypeVar

import yaml

from .positions import NUMBERINGS

ALL_TASKS = ["addition", "parity", "sum_mod10", "multihop", "threesum", "primes"]


def _help(text: str, **kwargs) -> Any:
    return field(metadata={"help": text}, **kwargs)


def _check(condition: bool, name: str, message: str) -> None:
    if not condition:
        raise ValueError(f"{name}: {message}")


PAUSE_PLACEMENTS = ("random", "answer")


def _check_k_weights(k_weights: Optional[list[float]], max_pauses: int) -> None:
    if k_weights is None:
        return
    _check(len(k_weights) == max_pauses + 1, "k_weights",
           f"needs max_pauses + 1 = {max_pauses + 1} numbers, got {len(k_weights)}")
    _check(all(w >= 0 and math.isfinite(w) for w in k_weights) and sum(k_weights) > 0,
           "k_weights", "must be non-negative and not all zero")


@dataclass
class ModelConfig:
    """Which LM to start from, and how pauses are numbered."""

    model_name_or_path: Optional[str] = _help(
        "HF model id or local directory; empty builds the embedded tiny Llama from the fields below", default=None
    )
    hidden_size: int = _help("tiny model: hidden size (d_model)", default=128)
    num_layers: int = _help("tiny model: transformer layers", default=2)
    num_heads: int = _help("tiny model: attention heads", default=4)
    intermediate_size: int = _help("tiny model: MLP width", default=512)
    max_position_embeddings: int = _help("tiny model: longest position id the model is built for", default=4096)
    position_numbering: str = _help(
        "how pauses take position ids: 'slotted' (from-scratch default), 'contiguous' (required for a "
        "pretrained HF base), or 'auto' (slotted for the tiny model, contiguous otherwise)",
        default="auto",
    )
    pause_slots: int = _help("slotted numbering: position slots reserved for pauses before each token", default=16)

    def __post_init__(self):
        _check(self.position_numbering in NUMBERINGS + ("auto",), "position_numbering",
               f"must be one of {NUMBERINGS + ('auto',)}, got {self.position_numbering!r}")
        for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_position_embeddings"):
            _check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        _check(self.hidden_size % self.num_heads == 0, "hidden_size",
               f"must be divisible by num_heads={self.num_heads}, got {self.hidden_size}")
        _check(self.pause_slots >= 0, "pause_slots", f"must be >= 0, got {self.pause_slots}")

    def resolved_numbering(self) -> str:
        if self.position_numbering != "auto":
            return self.position_numbering
        return "slotted" if not self.model_name_or_path else "contiguous"


@dataclass
class TrainConfig:
    """Fields shared by every training stage."""

    output_dir: str = _help("run directory (created; a new run replaces what it holds)", default="runs/default")
    tasks: list[str] = _help("task specs, e.g. addition addition:1-4 jsonl:data.jsonl:numeric",
                             default_factory=lambda: list(ALL_TASKS))
    seed: int = _help("seed for data, pause placement and initialisation", default=0)
    max_steps: int = _help("optimizer steps", default=1500)
    batch_size: int = _help("global batch size (split across processes)", default=128)
    learning_rate: float = _help("peak AdamW learning rate", default=2e-3)
    warmup_steps: int = _help("linear warm-up steps before cosine decay", default=100)
    weight_decay: float = _help("AdamW weight decay", default=0.0)
    max_grad_norm: float = _help("gradient clipping norm (0 disables)", default=1.0)
    log_every: int = _help("steps between logged scalars", default=50)
    progress: bool = _help("show a progress bar", default=True)

    def __post_init__(self):
        _check(len(self.tasks) > 0, "tasks", "needs at least one task")
        _check(self.max_steps >= 1, "max_steps", f"must be >= 1, got {self.max_steps}")
        _check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _check(math.isfinite(self.learning_rate) and self.learning_rate > 0, "learning_rate",
               f"must be a positive number, got {self.learning_rate}")
        _check(self.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        _check(self.max_grad_norm >= 0, "max_grad_norm", f"must be >= 0, got {self.max_grad_norm}")
        _check(self.log_every >= 1, "log_every", f"must be >= 1, got {self.log_every}")


@dataclass
class PretrainConfig(ModelConfig, TrainConfig):
    """Pause-pretraining: random <pause> insertion, no loss on pause targets."""

    pause_rate: float = _help("expected pauses inserted per token of the sequence (Goyal et al.: ~0.1); 0 = control",
                              default=0.1)
    pause_placement: str = _help(
        "'random': pause_rate pauses per token anywhere, loss on every real token (Goyal et al.); 'answer': "
        "k pauses before the answer, k ~ k_weights over [0, max_pauses], loss on answer tokens only "
        "(the finetuning layout, from scratch; max_pauses 0 = control)",
        default="random",
    )
    max_pauses: int = _help("pause_placement 'answer': K, the most pauses before the answer", default=16)
    k_weights: Optional[list[float]] = _help(
        "pause_placement 'answer': relative weight of each k in 0..K (K+1 numbers); empty = uniform", default=None
    )
    pauses_before_each_answer_token: bool = _help(
        "pause_placement 'answer': also put the k pauses before every answer token", default=False
    )

    def __post_init__(self):
        ModelConfig.__post_init__(self)
        TrainConfig.__post_init__(self)
        _check(0 <= self.pause_rate <= 10, "pause_rate", f"must be in [0, 10], got {self.pause_rate}")
        _check(self.pause_placement in PAUSE_PLACEMENTS, "pause_placement",
               f"must be one of {PAUSE_PLACEMENTS}, got {self.pause_placement!r}")
        _check(self.max_pauses >= 0, "max_pauses", f"K must be >= 0, got {self.max_pauses}")
        if self.pause_placement == "answer" and self.resolved_numbering() == "slotted":
            _check(self.max_pauses <= self.pause_slots, "max_pauses",
                   f"must be <= pause_slots={self.pause_slots} with slotted numbering, got {self.max_pauses}")
        _check_k_weights(self.k_weights, self.max_pauses)


@dataclass
class FinetuneConfig(TrainConfig):
    """LoRA pause-finetuning: k pauses before the answer, loss on answer tokens only."""

    base_model: str = _help("a pretrain run directory, an HF model id or a local model directory",
                            default="runs/default/pretrain")
    max_pauses: int = _help("K: pauses per example are drawn from [0, K]; 0 trains a no-pause control", default=8)
    k_weights: Optional[list[float]] = _help(
        "relative weight of each k in 0..K (K+1 numbers); empty = uniform", default=None
    )
    pauses_before_each_answer_token: bool = _help("also put the k pauses before every answer token", default=False)
    lora_r: int = _help("LoRA rank", default=16)
    lora_alpha: float = _help("LoRA alpha", default=32.0)
    lora_dropout: float = _help("LoRA dropout", default=0.0)
    lora_target_modules: list[str] = _help("modules LoRA adapts ('all-linear' for every linear layer)",
                                           default_factory=lambda: ["all-linear"])
    learning_rate: float = _help("peak AdamW learning rate", default=2e-3)

    def __post_init__(self):
        TrainConfig.__post_init__(self)
        _check(self.max_pauses >= 0, "max_pauses", f"K must be >= 0, got {self.max_pauses}")
        _check_k_weights(self.k_weights, self.max_pauses)
        _check(self.lora_r >= 1, "lora_r", f"must be >= 1, got {self.lora_r}")
        _check(0 <= self.lora_dropout < 1, "lora_dropout", f"must be in [0, 1), got {self.lora_dropout}")


@dataclass
class EvalPausesConfig:
    """Exact-match accuracy at fixed numbers of pauses before the answer."""

    run_dir: str = _help("a finetune (or pretrain) run directory")
    tasks: Optional[list[str]] = _help("task specs to evaluate; empty = the run's own tasks", default=None)
    ks: list[int] = _help("numbers of pauses to evaluate", default_factory=lambda: [0, 1, 2, 4, 8, 16])
    num_examples: int = _help("held-out examples per task", default=1000)
    batch_size: int = _help("examples per forward pass", default=256)
    seed: int = _help("seed of the held-out examples (training streams use other seeds)", default=1_000_003)
    output: Optional[str] = _help("JSON output path; empty = RUN_DIR/eval_pauses.json", default=None)
    control_dir: Optional[str] = _help("a no-pause control run to evaluate at k=0 beside this run", default=None)

    def __post_init__(self):
        _check(len(self.ks) > 0 and all(k >= 0 for k in self.ks), "ks", f"must be non-empty and >= 0, got {self.ks}")
        _check(self.num_examples >= 1, "num_examples", f"must be >= 1, got {self.num_examples}")
        _check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")


C = TypeVar("C")


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def save_yaml(config, path: str | os.PathLike) -> None:
    """Write the resolved config atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    os.replace(tmp, path)


def from_dict(cls: type[C], data: dict) -> C:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; known fields: {sorted(names)}")
    return cls(**data)


def load_yaml(cls: type[C], path: str | os.PathLike) -> C:
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YAML mapping of field: value")
    return from_dict(cls, data)


def parse_cli(cls: type[C], argv: list[str] | None = None, positional: tuple[str, ...] = ()) -> C:
    """Parse `argv` into `cls`: `--config FILE.yaml` gives defaults, `--field value` overrides them.

    Fields named in `positional` may also be given as leading positional
    arguments (e.g. `eval-pauses RUN_DIR`).
    """
    from transformers import HfArgumentParser

    argv = list(argv or [])
    for name in positional:
        if argv and not argv[0].startswith("-"):
            argv = [f"--{name}", argv[0]] + argv[1:]
    parser = HfArgumentParser(cls)
    parser.add_argument("--config", default=None, help="YAML file with field: value defaults")
    import argparse

    # A separate pre-parser, so a YAML file may supply fields that are required on the command line.
    pre_parser = argparse.ArgumentParser(add_help=False)
    pre_parser.add_argument("--config", default=None)
    pre, _ = pre_parser.parse_known_args(argv)  # any spelling: --config F, --config=F
    if pre.config:
        data = yaml.safe_load(Path(pre.config).read_text()) or {}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{pre.config}: unknown field(s) {unknown} for {cls.__name__}")
        parser.set_defaults(**data)
        for action in parser._actions:  # a YAML value satisfies a required flag
            if action.dest in data:
                action.required = False
    namespace = parser.parse_args(argv)
    values = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls)}
    return cls(**values)


# ---------------------------------------------------------------------------
# Controller PPO (issue 5). Appended; the classes above are the lead's.
# ---------------------------------------------------------------------------

URGENCY_DISTRIBUTIONS = ("uniform", "discrete")
REWARD_NAMES = ("meta", "deadline", "discounted")
ADVANTAGES = ("gae", "rloo")


@dataclass
class AnalyticEnvConfig:
    """The analytic pause environment: P(correct | pauses, difficulty) is known, so the optimum is exact.

    An instance has a hidden difficulty level d in 0..levels-1 (uniform). Its answer is correct after k
    pauses with probability p_floor + (p_ceiling - p_floor) * sigmoid(slope * (k - needed(d))), where
    needed(d) = needed_per_level * d + needed_offset. The controller sees d through a noisy channel:
    with probability observation_noise the observed level is d - 1 or d + 1 (half each, clipped).
    """

    levels: int = _help("difficulty levels", default=7)
    max_pauses: int = _help("pause cap per episode (at the cap the answer is forced)", default=12)
    slope: float = _help("how sharply accuracy rises once the needed pauses are reached", default=1.5)
    needed_per_level: float = _help("pauses an instance needs, per difficulty level", default=1.2)
    needed_offset: float = _help("pauses the easiest instance needs (may be negative)", default=-0.5)
    p_floor: float = _help("accuracy far below the needed pauses", default=0.02)
    p_ceiling: float = _help("accuracy far above the needed pauses", default=0.98)
    observation_noise: float = _help("probability that the observed difficulty is off by one level", default=0.4)

    def __post_init__(self):
        _check(self.levels >= 2, "levels", f"must be >= 2, got {self.levels}")
        _check(self.max_pauses >= 1, "max_pauses", f"must be >= 1, got {self.max_pauses}")
        for name in ("slope", "needed_per_level", "needed_offset"):
            _check(math.isfinite(getattr(self, name)), name, f"must be finite, got {getattr(self, name)}")
        _check(self.slope > 0, "slope", f"must be > 0, got {self.slope}")
        _check(0 <= self.p_floor < self.p_ceiling <= 1, "p_floor",
               f"need 0 <= p_floor < p_ceiling <= 1, got p_floor={self.p_floor}, p_ceiling={self.p_ceiling}")
        _check(0 <= self.observation_noise <= 1, "observation_noise",
               f"must be in [0, 1], got {self.observation_noise}")


@dataclass
class PPOConfig(AnalyticEnvConfig):
    """Controller PPO (CleanRL-style): rollouts of whole episodes, GAE over decision steps, clipped updates.

    The analytic-environment fields (levels ... observation_noise) are inherited from AnalyticEnvConfig
    and read only when env = analytic; max_pauses is the pause cap either way.
    """

    output_dir: str = _help("run directory: config.yaml, controller/, state/, logs/", default="runs/controller")
    env: str = _help("rollout source: 'analytic' (the exact test bench) or 'lm' (the decode loop on tasks)",
                     default="analytic")
    model_run_dir: Optional[str] = _help("env lm: a run directory with model/ (and adapter/), e.g. a finetune run",
                                         default=None)
    tasks: list[str] = _help("env lm: task specs to draw episodes from, e.g. addition:1-4",
                             default_factory=lambda: ["addition"])
    max_new_tokens: int = _help("env lm: answer tokens per episode (EOS included)", default=8)
    max_pauses_total: int = _help("env lm: pause cap per answer, also the reward's normaliser (0 = max_pauses * "
                                  "max_new_tokens)", default=0)
    first_token_pauses_only: bool = _help("env lm: the controller decides only before the first answer token "
                                          "(for a model finetuned with pauses before the answer only)",
                                          default=False)
    prompt_summary: bool = _help("env lm: the head also reads the mean of the LM's last hidden states over the "
                                 "prompt (the last position alone says little about how hard the input is)",
                                 default=False)
    advantage: str = _help("'gae' (a learned value baseline, CleanRL) or 'rloo' (env lm: group_size episodes per "
                           "prompt at one urgency; each episode's advantage is its reward minus the mean of the "
                           "others', as in RLOO: the prompt's own difficulty cancels out; gamma and gae_lambda "
                           "then shape only the value head's targets)", default="gae")
    group_size: int = _help("advantage rloo: episodes per prompt (>= 2; divides the episodes per process)",
                            default=1)
    seed: int = _help("seed for the head's initialisation, rollouts and minibatch order", default=0)
    iterations: int = _help("PPO iterations (one rollout batch + its update epochs each)", default=300)
    episodes_per_iteration: int = _help("episodes per rollout batch, over all processes", default=1024)
    update_epochs: int = _help("passes over each rollout batch", default=4)
    num_minibatches: int = _help("minibatches per epoch on each process", default=4)
    learning_rate: float = _help("Adam learning rate", default=3e-3)
    anneal_lr: bool = _help("decay the learning rate linearly to 0 over `iterations`", default=True)
    gamma: float = _help("discount between consecutive decision steps", default=1.0)
    gae_lambda: float = _help("GAE lambda", default=0.95)
    clip_coef: float = _help("PPO ratio clip", default=0.2)
    clip_vloss: bool = _help("clip the value loss around the rollout's values (CleanRL)", default=True)
    norm_adv: bool = _help("normalise advantages per minibatch", default=True)
    ent_coef: float = _help("entropy bonus coefficient", default=0.003)
    vf_coef: float = _help("value loss coefficient", default=0.5)
    max_grad_norm: float = _help("gradient clipping norm (0 disables)", default=0.5)
    target_kl: float = _help("stop the epochs of an update once approx KL exceeds this (0 disables)", default=0.03)
    urgency_distribution: str = _help("per-episode urgency: 'uniform' on [urgency_low, urgency_high] or "
                                      "'discrete' over urgency_values", default="uniform")
    urgency_low: float = _help("uniform urgency: lower end", default=0.0)
    urgency_high: float = _help("uniform urgency: upper end", default=1.0)
    urgency_values: list[float] = _help("discrete urgency: the values, drawn uniformly",
                                        default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    reward: str = _help("episode reward: 'meta', 'deadline' or 'discounted' (rewards/)", default="meta")
    deadline_min_budget: float = _help("deadline reward: pause budget at u = 1", default=0.0)
    discount_rate: float = _help("discounted reward: log-discount over max_pauses pauses at u = 1",
                                 default=math.log(10.0))
    head_width: int = _help("controller head: MLP width", default=64)
    initial_pause_prob: float = _help("controller head: pause probability before training", default=0.5)
    eval_urgencies: list[float] = _help("urgencies of the exact evaluation (analytic env)",
                                        default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    eval_every: int = _help("iterations between evaluations (also at the end)", default=25)
    checkpoint_every: int = _help("iterations between checkpoints (also at the end)", default=50)
    resume: bool = _help("continue from output_dir/state (exactly: weights, optimizer, RNG, iteration)",
                         default=False)
    progress: bool = _help("show a progress bar", default=True)
    torch_threads: int = _help("CPU threads per process for torch (0 = torch's default); the head's small matmuls "
                               "run fastest on one, and extra threads only contend on a shared machine", default=1)
    train_adapter: bool = _help(
        "env lm: also train the run's LoRA adapter (and its <pause> row) with the same PPO objective: answer "
        "tokens are sampled at temperature 1 and become actions too, with a per-token KL penalty to the "
        "adapter-off model", default=False)
    kl_coef: float = _help("train_adapter: coefficient of the per-emitted-token KL penalty to the adapter-off "
                           "model (k3 estimator, as TRL's GRPO)", default=0.05)
    adapter_learning_rate: float = _help("train_adapter: Adam learning rate of the LoRA parameters and the "
                                         "<pause> row (annealed with learning_rate when anneal_lr)", default=1e-4)

    def __post_init__(self):
        AnalyticEnvConfig.__post_init__(self)
        _check(self.torch_threads >= 0, "torch_threads", f"must be >= 0, got {self.torch_threads}")
        _check(self.env in ("analytic", "lm"), "env", f"must be 'analytic' or 'lm', got {self.env!r}")
        _check(self.env != "lm" or bool(self.model_run_dir), "model_run_dir", "env lm needs a run directory")
        _check(len(self.tasks) > 0, "tasks", "needs at least one task")
        _check(self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        _check(self.max_pauses_total >= 0, "max_pauses_total", f"must be >= 0, got {self.max_pauses_total}")
        for name in ("iterations", "episodes_per_iteration", "update_epochs", "num_minibatches", "head_width",
                     "eval_every", "checkpoint_every"):
            _check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        _check(math.isfinite(self.learning_rate) and self.learning_rate > 0, "learning_rate",
               f"must be a positive number, got {self.learning_rate}")
        _check(0 <= self.gamma <= 1, "gamma", f"must be in [0, 1], got {self.gamma}")
        _check(0 <= self.gae_lambda <= 1, "gae_lambda", f"must be in [0, 1], got {self.gae_lambda}")
        _check(self.clip_coef > 0, "clip_coef", f"must be > 0, got {self.clip_coef}")
        for name in ("ent_coef", "vf_coef", "max_grad_norm", "target_kl", "deadline_min_budget", "discount_rate"):
            value = getattr(self, name)
            _check(math.isfinite(value) and value >= 0, name, f"must be a finite number >= 0, got {value}")
        _check(self.urgency_distribution in URGENCY_DISTRIBUTIONS, "urgency_distribution",
               f"must be one of {URGENCY_DISTRIBUTIONS}, got {self.urgency_distribution!r}")
        _check(0 <= self.urgency_low <= self.urgency_high <= 1, "urgency_low",
               f"need 0 <= urgency_low <= urgency_high <= 1, got {self.urgency_low}, {self.urgency_high}")
        _check(len(self.urgency_values) > 0 and all(0 <= u <= 1 for u in self.urgency_values), "urgency_values",
               f"must be non-empty and in [0, 1], got {self.urgency_values}")
        _check(len(self.eval_urgencies) > 0 and all(0 <= u <= 1 for u in self.eval_urgencies), "eval_urgencies",
               f"must be non-empty and in [0, 1], got {self.eval_urgencies}")
        _check(self.reward in REWARD_NAMES, "reward", f"must be one of {REWARD_NAMES}, got {self.reward!r}")
        _check(self.deadline_min_budget <= self.reward_pause_normaliser(), "deadline_min_budget",
               f"must be <= the episode's pause cap {self.reward_pause_normaliser()}, got {self.deadline_min_budget}")
        _check(0 < self.initial_pause_prob < 1, "initial_pause_prob",
               f"must be in (0, 1), got {self.initial_pause_prob}")
        _check(not self.train_adapter or self.env == "lm", "train_adapter",
               f"needs env 'lm' (an LM with a LoRA adapter), got env {self.env!r}")
        _check(self.advantage in ADVANTAGES, "advantage", f"must be one of {ADVANTAGES}, got {self.advantage!r}")
        _check(self.group_size >= 1, "group_size", f"must be >= 1, got {self.group_size}")
        _check(not self.prompt_summary or self.env == "lm", "prompt_summary",
               f"needs env 'lm' (a prompt to summarise), got env {self.env!r}")
        if self.advantage == "rloo":
            _check(self.env == "lm", "advantage", "rloo needs env 'lm' (groups of episodes on one prompt)")
            _check(self.group_size >= 2, "group_size", f"rloo needs at least 2 episodes per prompt, got {self.group_size}")
        else:
            _check(self.group_size == 1, "group_size", f"groups are for advantage rloo; got {self.group_size} with gae")
        _check(math.isfinite(self.kl_coef) and self.kl_coef >= 0, "kl_coef",
               f"must be a finite number >= 0, got {self.kl_coef}")
        _check(math.isfinite(self.adapter_learning_rate) and self.adapter_learning_rate > 0, "adapter_learning_rate",
               f"must be a positive number, got {self.adapter_learning_rate}")

    def reward_pause_normaliser(self) -> int:
        """The pause count the reward divides by: the episode's pause cap."""
        if self.env == "analytic":
            return self.max_pauses
        return self.max_pauses_total or self.max_pauses * self.max_new_tokens

    def analytic_env(self) -> AnalyticEnvConfig:
        return AnalyticEnvConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(AnalyticEnvConfig)})
