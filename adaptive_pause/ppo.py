"""PPO for the pause controller: rollout storage, GAE over decision steps, the clipped update, the run loop.

Owns: `Rollout` (a batch of complete episodes as named tensors), `decision_gae`
(GAE on the decision-step clock, forced steps excluded), `ppo_loss` (clipped
surrogate, clipped value loss, entropy bonus), `ppo_update` (minibatch epochs
with advantage normalisation, gradient clipping and approx-KL early stop), the
training loop `train` under Accelerate (rollouts and updates split across
processes, metrics gathered), checkpoints (`run_dir/{config.yaml, controller/,
state/, logs/}`, safetensors + JSON only, written atomically; `--resume`
continues exactly) and `adaptive-pause train-controller`.

Must not: implement a decode loop or a controller (the head is
`policies.PauseControllerHead`; LM rollouts come from `decoding.py`), or define
rewards (`rewards/`).

The algorithm reads top to bottom as in CleanRL's ppo.py, with one difference
of shape: storage is episode-major, (episodes, steps), because an LM rollout
is a batch of prompts decoded to completion, not a fixed-length stream of an
auto-resetting vector env. Every step of a row is either a *decision* (the
controller chose pause or emit: trained on) or not (a forced emit at the pause
cap, or padding after the row finished). GAE runs on the decision clock: the
reward of a forced step is credited to the decision step before it, and
"next value" means the value at the row's next decision step (0 after its
last: episodes always end, by answering or by hitting max_new_tokens, which
scores the answer as it stands).

## Rollout sources (how the LM plugs in)

A rollout source is any object with
    feature_dim: int                      # what the controller reads (LM hidden size, or analytic features)
    max_pauses_total: int                 # the reward's pause normaliser
    collect(policy, urgency, generator) -> Rollout
`collect` runs `policy` (sampling, `policy.decide(inputs, greedy=False,
generator=generator)`) on len(urgency) fresh episodes, urgency (episodes,)
drawn here per episode, and returns the trace. `AnalyticSource` is the
analytic one. An LM source is a small adapter over the decode loop's recorded
trace (one row per prompt, one column per decode step, right-padded):

    Rollout field          <- decode-loop trace
    features               <- controller inputs' hidden states      (rows, steps, hidden)
    pauses_before_token    <- pauses spent before the step's token   (rows, steps)
    pauses_total           <- pauses spent on the answer so far      (rows, steps)
    top_prob               <- max answer-token prob, or None         (rows, steps)
    urgency                <- per-row urgency passed to the loop     (rows,)
    actions                <- 1 where the step appended <pause>      (rows, steps)
    log_probs, values      <- the controller's Decision at the step  (rows, steps)
    valid                  <- the row was unfinished at the step     (rows, steps)
    forced                 <- forced emit (cap) or planned pause     (rows, steps)
    score                  <- task scorer on the decoded answer      (rows,)
    pauses                 <- total pauses of the row                (rows,)
    difficulty             <- the task instance's difficulty label   (rows,) (metrics only)

Rewards are not part of the trace: `Rollout.step_rewards(reward)` derives them
with `rewards.Reward.per_step` (pause cost at each pause, the rest with the
last step). `LMSource` is that adapter over `decoding.decode` (controller
sampled, answers greedy, features recorded). With a frozen LM the update
re-runs only the head on the stored features.

## Joint LoRA + controller training (`train_adapter: true`)

Answer tokens are sampled (temperature 1, `<pause>` masked out, as the decode
loop does) and are actions too. The decode loop stays the only token loop;
what PPO needs beyond its trace comes from one *teacher-forced* forward pass
over the finished `DecodeResult.sequences`, with `positions.position_ids` (the
same numbering rule as the loop), which yields for every step the hidden state
the controller read and the masked next-token logits (`teacher_forced`). At
collection that pass runs twice without gradients, adapter on (old token
log-probs) and adapter off (`disable_adapter()`: the reference), and is kept
in `Rollout.tokens` (a `TokenTrace`). In the update it runs with gradients
(`JointEvaluation`, the module DDP wraps, so LoRA gradients are all-reduced
with the head's): the head reads the hidden states it produces (not detached:
the head is built with `joint=True`), so features move with the adapter.

A step's action is (controller choice, token): its log-prob is the
controller's at decision steps plus the token's at emit steps; a forced emit
is an action of its token part only. GAE then runs over `Rollout.trained`
(decision steps and emit steps), storage is kept episode-major
(`EpisodeBatch`: minibatches are sets of whole episodes, because the LM
forward needs whole sequences), and the loss adds `kl_coef` times the mean
per-emitted-token KL to the reference, estimated with k3 = exp(r) - r - 1,
r = log p_ref - log p (>= 0 for every sample; TRL's GRPO uses the same).
Checkpoints add state/adapter.safetensors (the trainable LM tensors; the
optimizer state covers them) and a peft run_dir/adapter.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from policies import ControllerInputs, PauseControllerHead, PausePolicy, save_policy
from rewards import Reward, make_reward

from .analytic_env import AnalyticBatchEnv, AnalyticModel, policy_pause_probs
from .checkpoint import atomic_dir, write_json_atomic
from .config import PPOConfig, load_yaml, parse_cli, save_yaml
from .decoding import masked_mean


# ---------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------


@dataclass
class Rollout:
    """A batch of complete episodes, right-padded to the longest (see the module docstring for the LM mapping)."""

    features: torch.Tensor  # (episodes, steps, feature_dim) float: what the controller read
    pauses_before_token: torch.Tensor  # (episodes, steps) long
    pauses_total: torch.Tensor  # (episodes, steps) long
    top_prob: torch.Tensor | None  # (episodes, steps) float, or None when the source has none
    urgency: torch.Tensor  # (episodes,) float in [0, 1]
    actions: torch.Tensor  # (episodes, steps) long: 1 = pause, 0 = emit (forced steps: 0)
    log_probs: torch.Tensor  # (episodes, steps) float: log-prob of the action when it was taken
    values: torch.Tensor  # (episodes, steps) float: value estimate when the action was taken
    valid: torch.Tensor  # (episodes, steps) bool: the row took this step
    forced: torch.Tensor  # (episodes, steps) bool: not a decision (a forced emit at a cap, or a planned pause)
    score: torch.Tensor  # (episodes,) float in [0, 1]: the final answer's score
    pauses: torch.Tensor  # (episodes,) long: pauses in the episode
    difficulty: torch.Tensor | None = None  # (episodes,) long: instance difficulty, for metrics only
    tokens: "TokenTrace | None" = None  # joint LoRA training: answer tokens as actions; None = controller only

    @property
    def decision(self) -> torch.Tensor:  # (episodes, steps) bool: the controller's decisions
        return self.valid & ~self.forced

    @property
    def trained(self) -> torch.Tensor:  # (episodes, steps) bool: the steps PPO trains on (GAE's clock)
        return self.decision if self.tokens is None else self.decision | self.tokens.emitted

    @property
    def action_log_probs(self) -> torch.Tensor:  # (episodes, steps): log-prob of the whole action when taken
        return self.log_probs if self.tokens is None else self.log_probs + self.tokens.log_probs

    def index(self, idx: torch.Tensor) -> "Rollout":
        """The episodes `idx` (a minibatch of whole episodes)."""
        return _map_tensors(self, lambda x: x[idx])

    def to(self, device: torch.device) -> "Rollout":
        return _map_tensors(self, lambda x: x.to(device))

    def step_rewards(self, reward: Reward) -> torch.Tensor:  # (episodes, steps)
        paused = (self.actions == 1) & self.valid  # every pause costs, decided or planned
        return reward.per_step(self.score, paused, self.urgency, self.valid)

    def episode_rewards(self, reward: Reward) -> torch.Tensor:  # (episodes,)
        return reward.reward(self.score, self.pauses, self.urgency)

    def inputs(self, mask: torch.Tensor) -> ControllerInputs:
        """Controller inputs at the steps selected by mask (episodes, steps) bool, flattened to (samples, ...)."""
        urgency = self.urgency[:, None].expand_as(self.valid)
        return ControllerInputs(
            self.features[mask], urgency[mask], self.pauses_before_token[mask], self.pauses_total[mask],
            None if self.top_prob is None else self.top_prob[mask],
        )

    def validate(self) -> None:
        """Check shapes and invariants of a trace from an outside source (cheap; raises ValueError)."""
        episodes, steps = self.actions.shape
        per_step = ("pauses_before_token", "pauses_total", "log_probs", "values", "valid", "forced")
        for name in per_step + (("top_prob",) if self.top_prob is not None else ()):
            if tuple(getattr(self, name).shape) != (episodes, steps):
                raise ValueError(f"{name}: expected shape {(episodes, steps)}, got {tuple(getattr(self, name).shape)}")
        if self.features.shape[:2] != (episodes, steps):
            raise ValueError(f"features: expected shape ({episodes}, {steps}, dim), got {tuple(self.features.shape)}")
        for name in ("urgency", "score", "pauses"):
            if tuple(getattr(self, name).shape) != (episodes,):
                raise ValueError(f"{name}: expected shape ({episodes},), got {tuple(getattr(self, name).shape)}")
        if (self.forced & ~self.valid).any():
            raise ValueError("forced: a forced step must be a valid step")
        counted = ((self.actions == 1) & self.valid).sum(1)
        if not torch.equal(counted.to(self.pauses.device), self.pauses.long()):
            raise ValueError("pauses: must equal the number of valid steps whose action is 1 (pause)")
        if self.tokens is not None:
            self.tokens.validate(episodes, steps)
            if not torch.equal(self.tokens.emitted, self.valid & (self.actions == 0)):
                raise ValueError("tokens.emitted: must be exactly the valid steps whose action is 0 (emit)")


@dataclass
class TokenTrace:
    """What joint LoRA training adds to a rollout: the sequences and the answer tokens as actions.

    Step t of a row reads the LM's output at column `source_columns[:, t]` of `sequences` (the row's
    last real column before the step's own token; the decode loop may leave masked gaps) and appends
    the token at column prompt + t.
    """

    sequences: torch.Tensor  # (episodes, length) long: left-padded prompt + appended tokens (DecodeResult)
    attention_mask: torch.Tensor  # (episodes, length) long: 1 where `sequences` holds a real token
    position_ids: torch.Tensor  # (episodes, length) long: positions.position_ids, the decode loop's rule
    source_columns: torch.Tensor  # (episodes, steps) long: the column whose output step t reads
    token_ids: torch.Tensor  # (episodes, steps) long: the token appended at step t (<pause> or an answer token)
    emitted: torch.Tensor  # (episodes, steps) bool: an answer token was emitted (forced emits included)
    log_probs: torch.Tensor  # (episodes, steps) float: its log-prob under the adapter when sampled (0 elsewhere)
    ref_log_probs: torch.Tensor  # (episodes, steps) float: its log-prob with the adapter disabled (0 elsewhere)

    def validate(self, episodes: int, steps: int) -> None:
        length = self.sequences.shape[1]
        for name in ("attention_mask", "position_ids"):
            if tuple(getattr(self, name).shape) != (episodes, length):
                raise ValueError(f"tokens.{name}: expected shape {(episodes, length)}, "
                                 f"got {tuple(getattr(self, name).shape)}")
        for name in ("source_columns", "token_ids", "emitted", "log_probs", "ref_log_probs"):
            if tuple(getattr(self, name).shape) != (episodes, steps):
                raise ValueError(f"tokens.{name}: expected shape {(episodes, steps)}, "
                                 f"got {tuple(getattr(self, name).shape)}")
        if self.sequences.shape[0] != episodes or length < steps + 1:
            raise ValueError(f"tokens.sequences: expected ({episodes}, >= {steps + 1}), got "
                             f"{tuple(self.sequences.shape)}")


def _map_tensors(obj, fn):
    """A copy of a (nested) dataclass with `fn` applied to every tensor field."""
    changes = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if torch.is_tensor(value):
            changes[f.name] = fn(value)
        elif dataclasses.is_dataclass(value):
            changes[f.name] = _map_tensors(value, fn)
    return dataclasses.replace(obj, **changes)


class RolloutSource(Protocol):
    feature_dim: int
    max_pauses_total: int

    def collect(self, policy: PausePolicy, urgency: torch.Tensor, generator: torch.Generator) -> Rollout: ...


class AnalyticSource:
    """Rollouts of the analytic environment (adaptive_pause/analytic_env.py), batched over episodes."""

    def __init__(self, model: AnalyticModel, reward: Reward):
        self.model = model
        self.env = AnalyticBatchEnv(model, reward)
        self.feature_dim = model.feature_dim
        self.max_pauses_total = model.max_pauses

    @torch.no_grad()
    def collect(self, policy: PausePolicy, urgency: torch.Tensor, generator: torch.Generator) -> Rollout:
        env, device = self.env, _device_of(policy)
        episodes, steps = urgency.shape[0], self.model.max_pauses + 1  # at most cap pauses, then the answer
        features = torch.zeros(episodes, steps, self.feature_dim)
        before = torch.zeros(episodes, steps, dtype=torch.long)
        actions = torch.zeros(episodes, steps, dtype=torch.long)
        log_probs, values = torch.zeros(episodes, steps), torch.zeros(episodes, steps)
        valid = torch.zeros(episodes, steps, dtype=torch.bool)
        forced = torch.zeros(episodes, steps, dtype=torch.bool)

        inputs = env.reset(urgency.cpu(), generator)
        taken = 0
        for t in range(steps):
            decision = policy.decide(_to(inputs, device), generator=generator if device.type == "cpu" else None)
            is_forced = env.forced_next & ~env.done
            action = torch.where(is_forced, 0, decision.action.cpu())
            features[:, t], before[:, t] = inputs.features, inputs.pauses_before_token
            actions[:, t], log_probs[:, t], values[:, t] = action, decision.log_prob.cpu(), decision.value.cpu()
            result = env.step(action)
            valid[:, t], forced[:, t] = result.active, is_forced
            taken = t + 1
            if env.done.all():
                break
            inputs = env.observe()
        keep = slice(0, taken)
        return Rollout(
            features=features[:, keep], pauses_before_token=before[:, keep], pauses_total=before[:, keep].clone(),
            top_prob=None, urgency=env.urgency.clone(), actions=actions[:, keep], log_probs=log_probs[:, keep],
            values=values[:, keep], valid=valid[:, keep], forced=forced[:, keep], score=env.score.clone(),
            pauses=env.pauses.clone(), difficulty=env.difficulty.clone(),
        )


class LMSource:
    """Rollouts of the decode loop on task prompts: the adapter from `DecodeTrace` to `Rollout`.

    Frozen LM (default): eval mode, no gradients; the controller's action is sampled, answer tokens are
    greedy. With `train_adapter` the LoRA tensors and the `<pause>` row become trainable (peft's
    `from_pretrained` loads them frozen), answer tokens are sampled, and each rollout carries a
    `TokenTrace` (old and reference token log-probs from teacher-forced passes). The LM stays in eval
    mode either way (no dropout), so the update scores actions under the distribution that sampled them.
    Prompts are drawn from `tasks` with a seed taken from the rollout generator, so rollouts replay
    exactly on resume.
    """

    def __init__(self, model, tasks: list, config: PPOConfig):
        from .decoding import DecodeConfig

        self.model = model
        self.tasks = tasks
        self.train_adapter = config.train_adapter
        self.group_size = config.group_size
        model.lm.requires_grad_(False)
        model.lm.eval()
        if self.train_adapter:
            if not hasattr(model.lm, "disable_adapter"):
                raise ValueError(f"train_adapter: {config.model_run_dir} has no adapter/ (a peft LoRA adapter); "
                                 "train one with `adaptive-pause finetune` or set train_adapter false")
            for name, param in model.lm.named_parameters():
                if "lora_" in name or "trainable_tokens_" in name:
                    param.requires_grad_(True)
        self.decode_config = DecodeConfig(
            max_new_tokens=config.max_new_tokens, max_pauses=config.max_pauses,
            max_pauses_total=config.max_pauses_total or None, first_token_pauses_only=config.first_token_pauses_only,
            do_sample=self.train_adapter, temperature=1.0,
            controller_greedy=False, record_features=True, prompt_summary=config.prompt_summary,
        )
        self.feature_dim = model.hidden_size
        self.max_pauses_total = self.decode_config.pause_budget

    def adapter_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """(name, tensor) of the LM's trainable tensors (LoRA A/B, the <pause> row); empty when frozen."""
        return [(name, param) for name, param in self.model.lm.named_parameters() if param.requires_grad]

    @torch.no_grad()
    def collect(self, policy: PausePolicy, urgency: torch.Tensor, generator: torch.Generator) -> Rollout:
        import random

        from .decoding import decode

        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        rng = random.Random(seed)
        group = self.group_size  # consecutive episodes share a prompt (and, from the caller, an urgency)
        if urgency.shape[0] % group:
            raise ValueError(f"group_size: {group} does not divide the {urgency.shape[0]} episodes of a rollout")
        chosen = [self.tasks[rng.randrange(len(self.tasks))] for _ in range(urgency.shape[0] // group)]
        examples = [task.sample(rng) for task in chosen]
        chosen = [task for task in chosen for _ in range(group)]
        examples = [e for e in examples for _ in range(group)]
        settings, device = self.model.settings, self.model.device
        result = decode(self.model.lm, self.model.tokenizer, self.model.encode([e.prompt for e in examples]), policy,
                        urgency.to(device), self.decode_config, settings.pause_id, settings.numbering,
                        settings.pause_slots, seed=seed)
        texts = self.model.tokenizer.batch_decode(result.answer_ids, skip_special_tokens=True)
        score = torch.tensor([task.score(text, e.answer) for task, text, e in zip(chosen, texts, examples)],
                             device=device)
        trace = result.trace
        return Rollout(
            features=trace.features, pauses_before_token=trace.pauses_before_token, pauses_total=trace.pauses_total,
            top_prob=trace.top_prob, urgency=urgency.to(device).float(), actions=trace.actions,
            log_probs=trace.log_probs, values=trace.values, valid=trace.valid, forced=trace.forced | trace.planned,
            score=score.float(), pauses=result.pauses_total.long(),
            difficulty=torch.tensor([e.difficulty for e in examples], device=device),
            tokens=token_trace(self.model.lm, result, settings) if self.train_adapter else None,
        )


def source_columns(attention_mask: torch.Tensor, prompt_len: int, steps: int) -> torch.Tensor:  # (rows, steps)
    """For each step, the last real column before the step's own token (prompt_len + t): its output is the
    hidden state and the logits the decode loop acted on. Left padding keeps the prompt's last column real."""
    columns = torch.arange(attention_mask.shape[1], device=attention_mask.device).expand_as(attention_mask)
    last_real = torch.cummax(torch.where(attention_mask.bool(), columns, -1), dim=1).values  # (rows, length)
    return last_real[:, prompt_len - 1: prompt_len - 1 + steps]


def teacher_forced(lm, sequences: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor,
                   columns: torch.Tensor, pause_id: int, prompt_summary: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass over whole decoded sequences: (hidden (rows, steps, hidden), logits (rows, steps, vocab)).

    sequences, attention_mask, positions: (rows, length); columns: (rows, steps) from `source_columns`.
    The hidden state is the last layer's (what the decode loop gives the controller); logits are float
    with `<pause>` masked out, as an emit sees them. The output head runs on the gathered steps only, not
    on every column (the decode loop's fast path relies on the same identity, checked there per prompt).
    With `prompt_summary` the returned hidden is the controller's features as the decode loop builds them:
    [hidden, mean of the last hidden states over the prompt columns] (rows, steps, 2 x hidden).
    """
    out = lm(input_ids=sequences, attention_mask=attention_mask, position_ids=positions, use_cache=False,
             output_hidden_states=True, logits_to_keep=1)
    full = out.hidden_states[-1]  # (rows, length, hidden)
    hidden = full.gather(1, columns[..., None].expand(-1, -1, full.shape[-1]))  # (rows, steps, hidden)
    logits = lm.get_output_embeddings()(hidden).float()  # (rows, steps, vocab)
    logits = logits.masked_fill(
        torch.arange(logits.shape[-1], device=logits.device) == pause_id, -math.inf)
    if prompt_summary:
        prompt_len = sequences.shape[1] - columns.shape[1]  # left-padded prompt, then one column per step
        summary = masked_mean(full[:, :prompt_len], attention_mask[:, :prompt_len])  # (rows, hidden)
        hidden = torch.cat([hidden, summary[:, None].expand_as(hidden)], -1)
    return hidden, logits


def token_log_probs(logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:  # (rows, steps)
    """log softmax(logits) at token_ids; logits (rows, steps, vocab) with <pause> masked (temperature 1)."""
    return logits.log_softmax(-1).gather(-1, token_ids[..., None]).squeeze(-1)


@torch.no_grad()
def token_trace(lm, result, settings) -> TokenTrace:
    """The `TokenTrace` of a finished decode: teacher-forced token log-probs with the adapter and without."""
    from .positions import position_ids

    trace = result.trace
    rows, steps = trace.valid.shape
    sequences, mask = result.sequences, result.attention_mask  # (rows, prompt + steps)
    prompt_len = sequences.shape[1] - steps
    positions = position_ids(sequences, mask, settings.pause_id, settings.numbering, settings.pause_slots)
    columns = source_columns(mask, prompt_len, steps)
    emitted = trace.valid & (trace.actions == 0)
    token_ids = torch.where(trace.valid, trace.tokens, 0)

    def log_probs() -> torch.Tensor:  # (rows, steps), 0 where no token was emitted
        _, logits = teacher_forced(lm, sequences, mask, positions, columns, settings.pause_id)
        return torch.where(emitted, token_log_probs(logits, token_ids), 0.0)

    old = log_probs()
    with lm.disable_adapter():
        ref = log_probs()
    return TokenTrace(sequences=sequences, attention_mask=mask, position_ids=positions, source_columns=columns,
                      token_ids=token_ids, emitted=emitted, log_probs=old, ref_log_probs=ref)


def _device_of(policy: nn.Module) -> torch.device:
    param = next(iter(policy.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


def _to(inputs: ControllerInputs, device: torch.device) -> ControllerInputs:
    return ControllerInputs(
        inputs.features.to(device), inputs.urgency.to(device), inputs.pauses_before_token.to(device),
        inputs.pauses_total.to(device), None if inputs.top_prob is None else inputs.top_prob.to(device),
    )


def sample_urgency(config: PPOConfig, n: int, generator: torch.Generator) -> torch.Tensor:  # (n,)
    if config.urgency_distribution == "uniform":
        return config.urgency_low + (config.urgency_high - config.urgency_low) * torch.rand(n, generator=generator)
    values = torch.tensor(config.urgency_values, dtype=torch.float32)
    return values[torch.randint(len(values), (n,), generator=generator)]


# ---------------------------------------------------------------------------
# GAE and the PPO loss
# ---------------------------------------------------------------------------


def decision_gae(rewards: torch.Tensor, values: torch.Tensor, decision: torch.Tensor, gamma: float,
                 gae_lambda: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over each row's decision steps; all inputs and both outputs are (episodes, steps).

    Non-decision steps (forced emits, padding) carry no value and no advantage: their rewards are
    added to the nearest decision step before them. A reward before a row's first decision step
    is dropped (no action of the controller caused it). Returns (advantages, returns), zero at
    non-decision steps; returns = advantages + values at decision steps.
    """
    episodes, steps = rewards.shape
    advantages = torch.zeros_like(rewards)
    gae = torch.zeros(episodes, dtype=rewards.dtype, device=rewards.device)  # (episodes,)
    next_value = torch.zeros_like(gae)  # value at the row's next decision step (0 past the last)
    pending = torch.zeros_like(gae)  # rewards of non-decision steps since that decision step
    for t in reversed(range(steps)):
        is_decision = decision[:, t]
        delta = rewards[:, t] + pending + gamma * next_value - values[:, t]
        step_gae = delta + gamma * gae_lambda * gae
        advantages[:, t] = torch.where(is_decision, step_gae, torch.zeros_like(step_gae))
        gae = torch.where(is_decision, step_gae, gae)
        next_value = torch.where(is_decision, values[:, t], next_value)
        pending = torch.where(is_decision, torch.zeros_like(pending), pending + rewards[:, t])
    returns = torch.where(decision, advantages + values, torch.zeros_like(values))
    return advantages, returns


@dataclass
class Batch:
    """Flattened decision samples of one process's rollout: what the update epochs iterate over."""

    inputs: ControllerInputs  # each field (samples, ...)
    actions: torch.Tensor  # (samples,) long
    log_probs: torch.Tensor  # (samples,) float: at collection
    values: torch.Tensor  # (samples,) float: at collection
    advantages: torch.Tensor  # (samples,) float
    returns: torch.Tensor  # (samples,) float

    def __len__(self) -> int:
        return self.actions.shape[0]

    def index(self, idx: torch.Tensor) -> "Batch":
        return Batch(self.inputs.index(idx), self.actions[idx], self.log_probs[idx], self.values[idx],
                     self.advantages[idx], self.returns[idx])

    def to(self, device: torch.device) -> "Batch":
        return Batch(_to(self.inputs, device), self.actions.to(device), self.log_probs.to(device),
                     self.values.to(device), self.advantages.to(device), self.returns.to(device))


@dataclass
class EpisodeBatch:
    """Joint LoRA training: the rollout kept episode-major, with GAE per step; minibatches are whole episodes."""

    rollout: Rollout  # with `tokens`
    step_advantages: torch.Tensor  # (episodes, steps) float, 0 off `rollout.trained`
    step_returns: torch.Tensor  # (episodes, steps) float, 0 off `rollout.trained`

    def __len__(self) -> int:  # what minibatches split: episodes
        return self.step_advantages.shape[0]

    def index(self, idx: torch.Tensor) -> "EpisodeBatch":
        return EpisodeBatch(self.rollout.index(idx), self.step_advantages[idx], self.step_returns[idx])

    def to(self, device: torch.device) -> "EpisodeBatch":
        return EpisodeBatch(self.rollout.to(device), self.step_advantages.to(device), self.step_returns.to(device))

    @property
    def values(self) -> torch.Tensor:  # (samples,): values at the trained steps, at collection
        return self.rollout.values[self.rollout.trained]

    @property
    def returns(self) -> torch.Tensor:  # (samples,)
        return self.step_returns[self.rollout.trained]


def group_advantages(episode_rewards: torch.Tensor, group_size: int) -> torch.Tensor:  # (episodes,)
    """RLOO: each episode's reward minus the mean reward of the other episodes of its group (consecutive
    `group_size` episodes on one prompt at one urgency). Unbiased (the baseline does not depend on the
    episode's own actions), and what the prompt contributes to the reward (is it solvable?) cancels."""
    groups = episode_rewards.view(-1, group_size)  # (groups, group_size)
    others = (groups.sum(1, keepdim=True) - groups) / (group_size - 1)
    return (groups - others).flatten()


def make_batch(rollout: Rollout, reward: Reward, gamma: float, gae_lambda: float,
               group_size: int = 1) -> Batch | EpisodeBatch:
    """Advantages over the trained steps: GAE, or with `group_size` >= 2 the episode's RLOO advantage at each
    of its steps (the value head still learns GAE returns: logged, and there for a later switch back).
    Returns a flat `Batch` of controller decisions, or an `EpisodeBatch` (joint)."""
    trained = rollout.trained
    advantages, returns = decision_gae(rollout.step_rewards(reward), rollout.values, trained, gamma, gae_lambda)
    if group_size > 1:
        per_episode = group_advantages(rollout.episode_rewards(reward).float(), group_size)  # (episodes,)
        advantages = torch.where(trained, per_episode[:, None].to(advantages.dtype), torch.zeros_like(advantages))
    if rollout.tokens is not None:
        return EpisodeBatch(rollout, advantages, returns)
    return Batch(rollout.inputs(trained), rollout.actions[trained], rollout.log_probs[trained],
                 rollout.values[trained], advantages[trained], returns[trained])


def ppo_loss(new_log_prob: torch.Tensor, entropy: torch.Tensor, new_value: torch.Tensor, batch: Batch,
             config: PPOConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """CleanRL's loss on one minibatch (all (samples,)): returns (loss, detached stats)."""
    log_ratio = new_log_prob - batch.log_probs
    ratio = log_ratio.exp()
    with torch.no_grad():
        old_approx_kl = (-log_ratio).mean()
        approx_kl = ((ratio - 1) - log_ratio).mean()  # Schulman's low-variance estimator, always >= 0
        clipfrac = ((ratio - 1.0).abs() > config.clip_coef).float().mean()

    advantages = batch.advantages
    if config.norm_adv and advantages.numel() > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    pg_loss = torch.max(-advantages * ratio,
                        -advantages * torch.clamp(ratio, 1 - config.clip_coef, 1 + config.clip_coef)).mean()

    if config.clip_vloss:
        v_unclipped = (new_value - batch.returns) ** 2
        v_clipped = batch.values + torch.clamp(new_value - batch.values, -config.clip_coef, config.clip_coef)
        v_loss = 0.5 * torch.max(v_unclipped, (v_clipped - batch.returns) ** 2).mean()
    else:
        v_loss = 0.5 * ((new_value - batch.returns) ** 2).mean()
    entropy_loss = entropy.mean()
    loss = pg_loss - config.ent_coef * entropy_loss + config.vf_coef * v_loss
    stats = {"pg_loss": pg_loss.detach(), "v_loss": v_loss.detach(), "entropy": entropy_loss.detach(),
             "old_approx_kl": old_approx_kl, "approx_kl": approx_kl, "clipfrac": clipfrac}
    return loss, stats


class PolicyEvaluation(nn.Module):
    """`policy.evaluate` as a module forward, so DDP/FSDP wrappers see the call (and sync gradients)."""

    def __init__(self, policy: PausePolicy):
        super().__init__()
        self.policy = policy

    def forward(self, inputs: ControllerInputs, actions: torch.Tensor):
        return self.policy.evaluate(inputs, actions)


class JointEvaluation(nn.Module):
    """Joint LoRA training's forward: the LM teacher-forced over stored episodes, then the head on its hidden
    states. One module holding both, so DDP/FSDP see the call and all-reduce LoRA and head gradients alike."""

    def __init__(self, policy: PausePolicy, lm: nn.Module, pause_id: int):
        super().__init__()
        self.policy = policy
        self.lm = lm
        self.pause_id = int(pause_id)

    def forward(self, sequences, attention_mask, positions, columns, token_ids, urgency, pauses_before_token,
                pauses_total, actions):
        """Tensors as in `TokenTrace` / `Rollout`; returns (controller log-prob, controller entropy, value,
        token log-prob), each (episodes, steps), at every step (callers mask)."""
        hidden, logits = teacher_forced(self.lm, sequences, attention_mask, positions, columns, self.pause_id,
                                        prompt_summary=getattr(self.policy, "prompt_summary", False))
        episodes, steps = actions.shape
        # The top answer-token probability is a head input the LM produces: recomputed here so that it moves
        # with the adapter, but detached: the token objective and the KL govern the answer distribution.
        top_prob = torch.exp(logits.max(-1).values - torch.logsumexp(logits, -1)).detach()  # (episodes, steps)
        inputs = ControllerInputs(hidden.flatten(0, 1), urgency[:, None].expand(-1, steps).flatten(),
                                  pauses_before_token.flatten(), pauses_total.flatten(), top_prob.flatten())
        log_prob, entropy, value = self.policy.evaluate(inputs, actions.flatten())
        shape = (episodes, steps)
        return (log_prob.view(shape), entropy.view(shape), value.view(shape),
                token_log_probs(logits, token_ids))  # token log-probs: (episodes, steps)


def joint_loss(evaluator: nn.Module, mb: EpisodeBatch, config: PPOConfig) -> tuple[torch.Tensor, dict]:
    """PPO on (controller choice, token) actions of whole episodes, plus kl_coef * KL to the adapter-off model."""
    rollout, tokens = mb.rollout, mb.rollout.tokens
    control_lp, entropy, value, token_lp = evaluator(
        tokens.sequences, tokens.attention_mask, tokens.position_ids, tokens.source_columns, tokens.token_ids,
        rollout.urgency, rollout.pauses_before_token, rollout.pauses_total, rollout.actions)
    decision, emitted, trained = rollout.decision, tokens.emitted, rollout.trained
    # A step's log-prob: the controller's where it decided, plus the token's where one was emitted.
    new_log_prob = torch.where(decision, control_lp, 0.0) + torch.where(emitted, token_lp, 0.0)  # (episodes, steps)
    # inputs=None: ppo_loss reads only the stored log-probs, values, advantages and returns
    flat = Batch(None, rollout.actions[trained], rollout.action_log_probs[trained], rollout.values[trained],
                 mb.step_advantages[trained], mb.step_returns[trained])
    # the entropy bonus is the controller's (mean over its decisions; a minibatch may have none)
    control_entropy = (torch.where(decision, entropy, 0.0).sum() / decision.sum().clamp(min=1))[None]  # (1,)
    loss, stats = ppo_loss(new_log_prob[trained], control_entropy, value[trained], flat, config)
    # k3 estimator of KL(adapter || reference) per emitted token: exp(r) - r - 1 >= 0, r = log p_ref - log p.
    log_ratio_ref = torch.where(emitted, tokens.ref_log_probs - token_lp, 0.0)
    kl_ref = (log_ratio_ref.exp() - log_ratio_ref - 1).sum() / emitted.sum().clamp(min=1)
    stats["kl_ref"] = kl_ref.detach()
    stats["token_log_prob"] = (torch.where(emitted, token_lp, 0.0).sum() / emitted.sum().clamp(min=1)).detach()
    return loss + config.kl_coef * kl_ref, stats


def minibatch_loss(evaluator: nn.Module, mb: Batch | EpisodeBatch, config: PPOConfig) -> tuple[torch.Tensor, dict]:
    """The loss of one minibatch: the head alone on stored features, or the joint pass (EpisodeBatch)."""
    if isinstance(mb, EpisodeBatch):
        return joint_loss(evaluator, mb, config)
    new_log_prob, entropy, new_value = evaluator(mb.inputs, mb.actions)
    return ppo_loss(new_log_prob, entropy, new_value, mb, config)


class NonFiniteLoss(RuntimeError):
    """A PPO loss was NaN/inf: training stops; the last checkpoint on disk is left as it was."""


def ppo_update(evaluator: nn.Module, optimizer, batch: Batch | EpisodeBatch, config: PPOConfig,
               generator: torch.Generator, accelerator, where: str) -> dict[str, float]:
    """Minibatch epochs over `batch` (this process's samples, or episodes when joint); returns stats averaged
    over processes.

    Every process runs the same number of minibatches (num_minibatches per epoch, whatever its
    sample count), so DDP's gradient all-reduce always pairs up; the KL early stop is decided on
    the mean over processes, so all stop together.
    """
    device = accelerator.device
    samples = len(batch)
    sums: dict[str, torch.Tensor] = {}
    minibatches = 0
    epochs_run = 0
    for epoch in range(config.update_epochs):
        order = torch.randperm(samples, generator=generator)
        epoch_kl = torch.zeros((), device=device)
        for chunk in torch.tensor_split(order, config.num_minibatches):
            mb = batch.index(chunk).to(device)
            loss, stats = minibatch_loss(evaluator, mb, config)
            bad = accelerator.reduce(torch.tensor(float(not torch.isfinite(loss)), device=device), "sum")
            if bad > 0:
                values = ", ".join(f"{k}={float(v):.4g}" for k, v in stats.items())
                raise NonFiniteLoss(f"non-finite PPO loss at {where}, epoch {epoch}, minibatch {minibatches} "
                                    f"({values})")
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            if config.max_grad_norm > 0:
                accelerator.clip_grad_norm_(evaluator.parameters(), config.max_grad_norm)
            optimizer.step()
            for k, v in stats.items():
                sums[k] = sums.get(k, 0) + v
            epoch_kl = epoch_kl + stats["approx_kl"]
            minibatches += 1
        epochs_run += 1
        mean_kl = accelerator.reduce(epoch_kl / config.num_minibatches, "mean")
        if config.target_kl > 0 and mean_kl > config.target_kl:
            break
    means = {k: accelerator.reduce(v / minibatches, "mean").item() for k, v in sums.items()}
    means["update_epochs"] = float(epochs_run)
    return means


def explained_variance(values: torch.Tensor, returns: torch.Tensor) -> float:
    var = returns.var()
    return float("nan") if var == 0 or returns.numel() < 2 else float(1 - (returns - values).var() / var)


# ---------------------------------------------------------------------------
# Metrics and evaluation
# ---------------------------------------------------------------------------

URGENCY_BUCKETS = 5  # rollout metrics per urgency bucket [0, 0.2), ..., [0.8, 1]


def rollout_sums(rollout: Rollout, reward: Reward) -> torch.Tensor:
    """Per-process sums for gathered metrics; layout: see `rollout_metrics`. (5 + 3 * buckets,)"""
    urgency, score, pauses = rollout.urgency.cpu(), rollout.score.float().cpu(), rollout.pauses.float().cpu()
    episode_reward = reward.reward(score, pauses, urgency)  # (episodes,)
    bucket = (urgency * URGENCY_BUCKETS).long().clamp(max=URGENCY_BUCKETS - 1)
    one_hot = nn.functional.one_hot(bucket, URGENCY_BUCKETS).float()  # (episodes, buckets)
    head = torch.stack([
        torch.tensor(float(urgency.numel())), episode_reward.sum(), score.sum(), pauses.sum(),
        rollout.decision.sum().float().cpu(),
    ])
    return torch.cat([head, one_hot.sum(0), (one_hot * pauses[:, None]).sum(0),
                      (one_hot * episode_reward[:, None]).sum(0)])


def rollout_metrics(sums: torch.Tensor) -> dict[str, float]:
    episodes = sums[0].item()
    metrics = {"rollout/meta_reward": sums[1].item() / episodes, "rollout/accuracy": sums[2].item() / episodes,
               "rollout/pauses": sums[3].item() / episodes, "rollout/decisions": sums[4].item() / episodes}
    counts, pauses, rewards = sums[5:].view(3, URGENCY_BUCKETS)
    for b in range(URGENCY_BUCKETS):
        if counts[b] > 0:
            name = f"u{b / URGENCY_BUCKETS:.1f}-{(b + 1) / URGENCY_BUCKETS:.1f}"
            metrics[f"rollout/pauses_{name}"] = (pauses[b] / counts[b]).item()
            metrics[f"rollout/meta_reward_{name}"] = (rewards[b] / counts[b]).item()
    return metrics


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


# ---------------------------------------------------------------------------
# Checkpoints: safetensors + JSON only
# ---------------------------------------------------------------------------

STATE_FILES = ("trainer.json", "policy.safetensors", "optimizer.safetensors", "optimizer.json")


def _optimizer_state(evaluator: nn.Module, optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    inner = getattr(optimizer, "optimizer", optimizer)
    state = get_optimizer_state_dict(evaluator, inner,
                                     options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if "param_groups" not in state:  # with cpu_offload the full state lands on rank 0 only; others get {}
        return {}, {}
    tensors, meta = {}, {"param_groups": state["param_groups"], "state": {}}
    for name, slots in state["state"].items():
        meta["state"][name] = {}
        for slot, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{name}::{slot}"] = value.detach().cpu().contiguous()
                meta["state"][name][slot] = "tensor"
            else:
                meta["state"][name][slot] = value
    return tensors, meta


def _load_optimizer_state(evaluator: nn.Module, optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    state = {name: {slot: tensors[f"{name}::{slot}"] if value == "tensor" else value
                    for slot, value in slots.items()} for name, slots in meta["state"].items()}
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
    inner = getattr(optimizer, "optimizer", optimizer)
    set_optimizer_state_dict(evaluator, inner, {"state": state, "param_groups": groups},
                             options=StateDictOptions(full_state_dict=True))


ADAPTER_STATE = "adapter.safetensors"  # joint LoRA training: the LM's trainable tensors, by parameter name


def _adapter_names(lm: nn.Module | None) -> list[str]:
    """Names of the LM's trainable tensors (named_parameters: a tied tensor appears once)."""
    return [] if lm is None else [name for name, param in lm.named_parameters() if param.requires_grad]


def save_checkpoint(run_dir: Path, config: PPOConfig, policy: PausePolicy, evaluator: nn.Module, optimizer,
                    generators: dict[str, torch.Generator], trainer: dict, accelerator, lm=None) -> None:
    """Write run_dir/{controller/, state/} atomically; every process's RNG goes to state/rng_<rank>.safetensors.

    With `lm` (joint LoRA training) also state/adapter.safetensors (exact resume) and the peft adapter/.
    """
    from safetensors.torch import load_file, save_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    # Joint: the evaluator holds the whole LM; its frozen base is not part of the training state.
    full = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=lm is not None)
    state_dict = get_model_state_dict(evaluator, options=full)  # collective under FSDP: every rank calls it
    policy_state = {k: v for k, v in state_dict.items() if k.startswith("policy.")}
    adapter_state = {name: state_dict[f"lm.{name}"].contiguous() for name in _adapter_names(lm)
                     if f"lm.{name}" in state_dict}  # with cpu_offload only rank 0 holds the tensors
    optimizer_tensors, optimizer_meta = _optimizer_state(evaluator, optimizer)
    rng = {name: g.get_state() for name, g in generators.items()}
    rng["torch_global"] = torch.get_rng_state()
    if torch.cuda.is_available():  # policy sampling on a GPU draws from the device's generator
        rng["cuda"] = torch.cuda.get_rng_state()
    staging = run_dir / ".rng-staging"
    if accelerator.is_main_process:
        staging.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    save_file(rng, str(staging / f"rng_{accelerator.process_index}.safetensors"))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with atomic_dir(run_dir / "controller") as tmp:
            save_policy(policy, tmp)
        with atomic_dir(run_dir / "state") as tmp:
            save_file({k.removeprefix("policy."): v.contiguous() for k, v in policy_state.items()},
                      str(tmp / "policy.safetensors"))
            save_file(optimizer_tensors, str(tmp / "optimizer.safetensors"))
            (tmp / "optimizer.json").write_text(json.dumps(optimizer_meta, indent=2) + "\n")
            for rank in range(accelerator.num_processes):
                name = f"rng_{rank}.safetensors"
                save_file(load_file(str(staging / name)), str(tmp / name))
            (tmp / "trainer.json").write_text(json.dumps(trainer, indent=2) + "\n")
            if lm is not None:
                save_file(adapter_state, str(tmp / ADAPTER_STATE))
        if lm is not None:  # the peft adapter as it stands: loadable with the run's model/ at any checkpoint
            with atomic_dir(run_dir / "adapter") as tmp:
                lm.save_pretrained(tmp, save_embedding_layers=False)
        for path in staging.iterdir():
            path.unlink()
        staging.rmdir()
    accelerator.wait_for_everyone()


def load_checkpoint(run_dir: Path, policy: PausePolicy, evaluator: nn.Module, optimizer,
                    generators: dict[str, torch.Generator], accelerator, lm=None) -> dict:
    """Restore weights (with `lm`: its trainable tensors too), optimizer, this process's RNG; return
    trainer.json (iteration, counters)."""
    from safetensors.torch import load_file

    state = run_dir / "state"
    wanted = STATE_FILES + ((ADAPTER_STATE,) if lm is not None else ())
    missing = [name for name in wanted if not (state / name).is_file()]
    if missing:
        raise ValueError(f"resume: {state} is missing {missing}; nothing to resume from")
    trainer = json.loads((state / "trainer.json").read_text())
    if trainer["num_processes"] != accelerator.num_processes:
        raise ValueError(f"resume: the checkpoint was written by {trainer['num_processes']} processes, this run has "
                         f"{accelerator.num_processes}; an exact resume needs the same number")
    policy.load_state_dict(load_file(str(state / "policy.safetensors")))
    if lm is not None:
        saved = load_file(str(state / ADAPTER_STATE))
        names = set(_adapter_names(lm))
        if set(saved) != names:
            raise ValueError(f"resume: {state / ADAPTER_STATE} holds {sorted(set(saved) ^ names)} where the model's "
                             "trainable adapter tensors differ; was the run trained on another model_run_dir?")
        with torch.no_grad():
            for name, param in lm.named_parameters():
                if name in saved:
                    param.copy_(saved[name])
    _load_optimizer_state(evaluator, optimizer, load_file(str(state / "optimizer.safetensors")),
                          json.loads((state / "optimizer.json").read_text()))
    rng = load_file(str(state / f"rng_{accelerator.process_index}.safetensors"))
    for name, generator in generators.items():
        generator.set_state(rng[name])
    torch.set_rng_state(rng["torch_global"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    return trainer


# The fields that may change between a run and its resumption; any other difference is refused.
RESUMABLE_CHANGES = {"iterations", "resume", "progress", "eval_every", "checkpoint_every", "torch_threads"}


def _check_resumable(saved: PPOConfig, config: PPOConfig) -> None:
    diffs = [f"{f.name}: saved={getattr(saved, f.name)!r}, now={getattr(config, f.name)!r}"
             for f in dataclasses.fields(PPOConfig)
             if f.name not in RESUMABLE_CHANGES and getattr(saved, f.name) != getattr(config, f.name)]
    if diffs:
        raise ValueError("resume: the config differs from the run's config.yaml: " + "; ".join(diffs))


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


def build_reward(config: PPOConfig) -> Reward:
    kwargs = {"deadline": {"min_budget": config.deadline_min_budget},
              "discounted": {"rate": config.discount_rate}}.get(config.reward, {})
    return make_reward(config.reward, config.reward_pause_normaliser(), **kwargs)


def build_policy(config: PPOConfig, feature_dim: int) -> PauseControllerHead:
    """The learned head; on the LM it also reads the top answer-token probability (the decode loop records it).
    With train_adapter its input hidden state is not detached (`joint`): its gradient reaches the adapter."""
    return PauseControllerHead(feature_dim, width=config.head_width, pause_scale=float(max(config.max_pauses, 1)),
                               use_top_prob=config.env == "lm", initial_pause_prob=config.initial_pause_prob,
                               joint=config.train_adapter, prompt_summary=config.prompt_summary)


def build_source(config: PPOConfig, reward: Reward, device: torch.device):
    """(rollout source, analytic model or None) for `config.env`."""
    if config.env == "analytic":
        model = AnalyticModel(config.analytic_env())
        return AnalyticSource(model, reward), model
    from .modeling import AdaptivePauseModel
    from .tasks import get_task

    lm = AdaptivePauseModel.from_pretrained(config.model_run_dir, device=device)
    source = LMSource(lm, [get_task(spec) for spec in config.tasks], config)
    if source.max_pauses_total != reward.max_pauses_total:
        raise ValueError(f"max_pauses_total: the decode loop's pause budget {source.max_pauses_total} differs from "
                         f"the reward's normaliser {reward.max_pauses_total}")
    return source, None


def train(config: PPOConfig) -> dict:
    """Run PPO as configured; returns the final evaluation (analytic) and counters. Raises NonFiniteLoss."""
    from accelerate import Accelerator

    if config.torch_threads > 0:
        torch.set_num_threads(config.torch_threads)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    try:
        return _train(config, accelerator)
    finally:
        # Whether training finished or raised (a NaN loss and config errors are raised on every rank alike),
        # the process group goes before the interpreter: a rank exiting with a live gloo group aborts
        # ("terminate called without an active exception"). Destroying it twice is a no-op.
        accelerator.end_training()


def _train(config: PPOConfig, accelerator) -> dict:
    from torch.utils.tensorboard import SummaryWriter
    from tqdm.auto import tqdm

    run_dir = Path(config.output_dir)
    rank, world = accelerator.process_index, accelerator.num_processes
    if config.episodes_per_iteration % world:
        raise ValueError(f"episodes_per_iteration: {config.episodes_per_iteration} does not split evenly over "
                         f"{world} processes")
    if (config.episodes_per_iteration // world) % config.group_size:
        raise ValueError(f"group_size: {config.group_size} does not divide the {config.episodes_per_iteration // world} "
                         f"episodes per process (episodes_per_iteration {config.episodes_per_iteration} over {world})")
    if config.train_adapter and config.episodes_per_iteration // world < config.num_minibatches:
        raise ValueError(f"num_minibatches: train_adapter splits whole episodes, and {config.num_minibatches} "
                         f"minibatches need at least as many episodes per process, got "
                         f"{config.episodes_per_iteration // world}; raise episodes_per_iteration")
    if not config.resume and (run_dir / "state").exists():
        raise ValueError(f"output_dir: {run_dir} already holds a run (state/); pass --resume true to continue it, "
                         "or choose another output_dir")
    if config.resume:
        if not (run_dir / "config.yaml").is_file():
            raise ValueError(f"resume: {run_dir / 'config.yaml'} not found; nothing to resume from")
        _check_resumable(load_yaml(PPOConfig, run_dir / "config.yaml"), config)

    reward = build_reward(config)
    source, model = build_source(config, reward, accelerator.device)

    torch.manual_seed(config.seed)  # the same initial head on every process
    policy = build_policy(config, source.feature_dim)
    lm = source.model.lm if config.train_adapter else None  # joint LoRA training: the LM is in the loss
    if lm is None:
        evaluator = PolicyEvaluation(policy)
        groups = [{"params": list(policy.parameters()), "lr": config.learning_rate}]
    else:
        evaluator = JointEvaluation(policy, lm, source.model.settings.pause_id)
        groups = [{"params": list(policy.parameters()), "lr": config.learning_rate},
                  {"params": [param for _, param in source.adapter_parameters()], "lr": config.adapter_learning_rate}]
    base_lrs = [group["lr"] for group in groups]
    optimizer = torch.optim.Adam(groups, eps=1e-5)
    evaluator, optimizer = accelerator.prepare(evaluator, optimizer)
    policy = accelerator.unwrap_model(evaluator).policy
    generators = {"rollout": torch.Generator().manual_seed(config.seed * 1000 + 2 * rank + 1),
                  "update": torch.Generator().manual_seed(config.seed * 1000 + 2 * rank + 2)}

    trainer = {"iteration": 0, "episodes": 0, "decisions": 0, "elapsed_s": 0.0, "num_processes": world,
               "last_good_iteration": 0}
    if config.resume:
        trainer = load_checkpoint(run_dir, policy, evaluator, optimizer, generators, accelerator, lm)
    if accelerator.is_main_process:
        save_yaml(config, run_dir / "config.yaml")
    writer = SummaryWriter(str(run_dir / "logs"), purge_step=trainer["iteration"] + 1) \
        if accelerator.is_main_process else None
    local_episodes = config.episodes_per_iteration // world

    start_iteration = trainer["iteration"]
    start_time = time.perf_counter() - trainer["elapsed_s"]
    bar = tqdm(total=config.iterations, initial=start_iteration, desc="ppo", dynamic_ncols=True,
               disable=not (config.progress and accelerator.is_main_process))
    evaluation: list[dict] = []
    metrics: dict[str, float] = {}  # the last iteration's (empty when resuming a finished run)
    try:
        for iteration in range(start_iteration + 1, config.iterations + 1):
            iteration_start = time.perf_counter()
            fraction = 1 - (iteration - 1) / config.iterations if config.anneal_lr else 1.0
            lr = config.learning_rate * fraction
            for group, base_lr in zip(optimizer.param_groups, base_lrs):  # the head's, then the adapter's
                group["lr"] = base_lr * fraction

            group = config.group_size  # one urgency per group of episodes (rloo); 1: per episode
            urgency = sample_urgency(config, local_episodes // group, generators["rollout"]).repeat_interleave(group)
            rollout = source.collect(policy, urgency, generators["rollout"])
            batch = make_batch(rollout, reward, config.gamma, config.gae_lambda, group)
            sums = accelerator.reduce(rollout_sums(rollout, reward).to(accelerator.device), "sum").cpu()
            ev = explained_variance(batch.values, batch.returns)
            stats = ppo_update(evaluator, optimizer, batch, config, generators["update"], accelerator,
                               where=f"iteration {iteration}")

            metrics = rollout_metrics(sums)
            metrics.update({f"losses/{k}": v for k, v in stats.items() if k != "update_epochs"})
            metrics["losses/explained_variance"] = ev
            trainer["iteration"] = iteration
            trainer["episodes"] += int(sums[0].item())
            trainer["decisions"] += int(sums[4].item())
            trainer["elapsed_s"] = time.perf_counter() - start_time
            metrics.update({"charts/learning_rate": lr, "charts/update_epochs": stats["update_epochs"],
                            "charts/episodes": trainer["episodes"],
                            "charts/episodes_per_s": sums[0].item() / (time.perf_counter() - iteration_start)})
            if iteration % config.eval_every == 0 or iteration == config.iterations:
                if accelerator.is_main_process and model is not None:
                    evaluation = evaluate_analytic(policy, model, reward, config.eval_urgencies)
                    for row in evaluation:
                        metrics[f"eval/fraction_of_optimum_u{row['urgency']:.2f}"] = row["fraction_of_optimum"]
                        metrics[f"eval/meta_reward_u{row['urgency']:.2f}"] = row["greedy"]
                    metrics["eval/min_fraction_of_optimum"] = min(r["fraction_of_optimum"] for r in evaluation)
            if writer is not None:
                for key, value in metrics.items():
                    writer.add_scalar(key, value, iteration)
            postfix = {"reward": f"{metrics['rollout/meta_reward']:.3f}", "pauses": f"{metrics['rollout/pauses']:.2f}",
                       "kl": f"{metrics['losses/approx_kl']:.4f}"}
            if lm is not None:
                postfix.update(acc=f"{metrics['rollout/accuracy']:.3f}", kl_ref=f"{metrics['losses/kl_ref']:.4f}")
            bar.set_postfix(**postfix)
            bar.update(1)
            if iteration % config.checkpoint_every == 0 or iteration == config.iterations:
                trainer["last_good_iteration"] = iteration
                save_checkpoint(run_dir, config, policy, evaluator, optimizer, generators, dict(trainer),
                                accelerator, lm)
    except NonFiniteLoss as error:
        last = trainer["last_good_iteration"]
        kept = f"{run_dir / 'state'} (iteration {last})" if last else "none (no checkpoint was written yet)"
        raise NonFiniteLoss(f"{error}; training stopped; the last good checkpoint is {kept}, left intact") from None
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    if not evaluation and model is not None and accelerator.is_main_process:  # e.g. resuming a finished run
        evaluation = evaluate_analytic(policy, model, reward, config.eval_urgencies)
    # DDP keeps the replicas identical; check it rather than trust it (cheap: one gather of a small head,
    # and of the adapter when it is trained).
    trained_tensors = list(policy.parameters()) + ([] if lm is None else [p for _, p in source.adapter_parameters()])
    flat = torch.cat([p.detach().flatten().to(accelerator.device) for p in trained_tensors])[None]  # (1, parameters)
    replicas = accelerator.gather(flat)  # (processes, parameters)
    in_sync = bool((replicas == replicas[:1]).all())
    result = {"trainer": trainer, "evaluation": evaluation, "num_processes": world, "replicas_in_sync": in_sync,
              "metrics": metrics}  # the last iteration's gathered scalars
    if accelerator.is_main_process:
        if isinstance(source, LMSource):  # make run_dir a loadable AdaptivePauseModel: model/, adapter/, controller/
            from .modeling import AdaptivePauseModel

            AdaptivePauseModel(source.model.lm, source.model.tokenizer, policy).save_pretrained(run_dir)
        write_json_atomic(result, run_dir / "result.json")
    accelerator.wait_for_everyone()  # every rank waits for the main one's saves; `train` then tears down
    return result


def main(argv: list[str] | None = None) -> int:
    config = parse_cli(PPOConfig, argv)
    try:
        result = train(config)
    except NonFiniteLoss as error:
        print(f"train-controller: {error}", file=sys.stderr)
        return 1
    from accelerate import PartialState

    if PartialState().is_main_process and result["evaluation"]:
        rows = result["evaluation"]
        print(format_analytic(rows))
        minutes = result["trainer"]["elapsed_s"] / 60
        print(f"trained {result['trainer']['iteration']} iterations, {result['trainer']['episodes']} episodes, "
              f"{minutes:.2f} min on {result['num_processes']} process(es)")
        print(f"analytic: min_fraction_of_optimum={min(r['fraction_of_optimum'] for r in rows):.4f}")
    return 0


__all__ = ["Rollout", "TokenTrace", "RolloutSource", "AnalyticSource", "LMSource", "Batch", "EpisodeBatch",
           "decision_gae", "make_batch", "ppo_loss", "ppo_update", "teacher_forced", "token_trace",
           "PolicyEvaluation", "JointEvaluation", "NonFiniteLoss", "train", "main"]
