"""The PPO algorithm for the pause controller, top to bottom as in CleanRL's ppo.py: storage, GAE, loss, update.

Owns: rollout storage (`Rollout`, `TokenTrace`: complete episodes as named (episodes, steps) tensors;
episode-major, not CleanRL's (steps, envs), because an LM rollout is a batch of prompts decoded to
completion), `decision_gae` (GAE on the decision-step clock: a forced step's reward goes to the decision
before it; "next value" is the value at the row's next decision, 0 after its last), `group_advantages`
(RLOO), `ppo_loss` (clipped surrogate, clipped value loss, entropy bonus), the joint LoRA + controller loss
(a step's action is (controller choice, token), plus a k3 KL to the adapter-off model per emitted token, as
TRL's GRPO), and `ppo_update` (minibatch epochs, gradient clipping, approx-KL early stop, the NaN stop).

Must not: collect rollouts (`envs/sources.py`), decode, save files or run the loop (`trainer.py`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from policies import ControllerInputs, PausePolicy
from rewards import Reward

from ..checkpoint import NonFiniteLossError
from ..decoding.replay import teacher_forced, token_log_probs

if TYPE_CHECKING:
    from .config import PPOConfig


@dataclass
class Rollout:
    """A batch of complete episodes, right-padded to the longest (the LM mapping: `envs/sources.py`)."""

    features: torch.Tensor  # (episodes, steps, feature width) float: what the controller read
    pauses_before_token: torch.Tensor  # (episodes, steps) long
    pauses_total: torch.Tensor  # (episodes, steps) long
    top_prob: torch.Tensor | None  # (episodes, steps) float, or None when the source has none
    urgency: torch.Tensor  # (episodes,) float in [0, 1]
    actions: torch.Tensor  # (episodes, steps) long: 1 = pause, 0 = emit (forced steps: 0)
    log_probs: torch.Tensor  # (episodes, steps) float: log-prob of the action when it was taken
    values: torch.Tensor  # (episodes, steps) float: value estimate when the action was taken
    valid: torch.Tensor  # (episodes, steps) bool: the row took this step
    undecided: torch.Tensor  # (episodes, steps) bool: taken but not chosen by the controller (a forced emit at
    #                          a cap, or a pause planned ahead)
    score: torch.Tensor  # (episodes,) float in [0, 1]: the final answer's score
    pauses: torch.Tensor  # (episodes,) long: pauses in the episode
    difficulty: torch.Tensor | None = None  # (episodes,) long: instance difficulty, for metrics only
    tokens: "TokenTrace | None" = None  # joint LoRA training: answer tokens as actions; None = controller only
    choices: torch.Tensor | None = None  # (episodes, steps) long: the controller's action at its decisions when it
    #                                      is not the slot's pause/emit (a planning controller's count k)
    urgency_input: torch.Tensor | None = None  # (episodes,) the controller's urgency where it differs from the
    #                                            reward's `urgency` (estimated from a phrase); None = the same

    @property
    def decision(self) -> torch.Tensor:  # (episodes, steps) bool: the controller's decisions
        return self.valid & ~self.undecided

    @property
    def trained(self) -> torch.Tensor:  # (episodes, steps) bool: the steps PPO trains on (GAE's clock)
        return self.decision if self.tokens is None else self.decision | self.tokens.emitted

    @property
    def controller_actions(self) -> torch.Tensor:  # (episodes, steps): what the controller chose (its log-prob's)
        return self.actions if self.choices is None else self.choices

    @property
    def action_log_probs(self) -> torch.Tensor:  # (episodes, steps): log-prob of the whole action when taken
        return self.log_probs if self.tokens is None else self.log_probs + self.tokens.log_probs

    def index(self, idx: torch.Tensor) -> "Rollout":
        """The episodes `idx` (a minibatch of whole episodes)."""
        return map_tensors(self, lambda x: x[idx])

    def to(self, device: torch.device) -> "Rollout":
        return map_tensors(self, lambda x: x.to(device))

    def step_rewards(self, reward: Reward) -> torch.Tensor:  # (episodes, steps)
        paused = (self.actions == 1) & self.valid  # every pause costs, decided or planned
        return reward.per_step(self.score, paused, self.urgency, self.valid)

    def episode_rewards(self, reward: Reward) -> torch.Tensor:  # (episodes,)
        return reward.reward(self.score, self.pauses, self.urgency)

    def inputs(self, mask: torch.Tensor) -> ControllerInputs:
        """Controller inputs at the steps selected by mask (episodes, steps) bool, flattened to (samples, ...)."""
        read = self.urgency if self.urgency_input is None else self.urgency_input
        urgency = read[:, None].expand_as(self.valid)
        return ControllerInputs(
            self.features[mask], urgency[mask], self.pauses_before_token[mask], self.pauses_total[mask],
            None if self.top_prob is None else self.top_prob[mask],
        )

    def validate(self) -> None:
        """Check shapes and invariants of a trace from an outside source (cheap; raises ValueError)."""
        episodes, steps = self.actions.shape
        per_step = ("pauses_before_token", "pauses_total", "log_probs", "values", "valid", "undecided")
        for name in per_step + (("top_prob",) if self.top_prob is not None else ()):
            if tuple(getattr(self, name).shape) != (episodes, steps):
                raise ValueError(f"{name}: expected shape {(episodes, steps)}, got {tuple(getattr(self, name).shape)}")
        if self.features.shape[:2] != (episodes, steps):
            raise ValueError(f"features: expected shape ({episodes}, {steps}, dim), got {tuple(self.features.shape)}")
        for name in ("urgency", "score", "pauses") + (("urgency_input",) if self.urgency_input is not None else ()):
            if tuple(getattr(self, name).shape) != (episodes,):
                raise ValueError(f"{name}: expected shape ({episodes},), got {tuple(getattr(self, name).shape)}")
        if (self.undecided & ~self.valid).any():
            raise ValueError("undecided: an undecided step must be a valid step")
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
    countdown: torch.Tensor | None = None  # (episodes, length) long: the countdown inputs the loop fed

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


def map_tensors(obj, fn):
    """A copy of a (nested) dataclass with `fn` applied to every tensor field."""
    changes = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if torch.is_tensor(value):
            changes[f.name] = fn(value)
        elif dataclasses.is_dataclass(value):
            changes[f.name] = map_tensors(value, fn)
    return dataclasses.replace(obj, **changes)


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
class DecisionBatch:
    """Flattened decision samples of one process's rollout: what the update epochs iterate over."""

    inputs: ControllerInputs  # each field (samples, ...)
    actions: torch.Tensor  # (samples,) long
    log_probs: torch.Tensor  # (samples,) float: at collection
    values: torch.Tensor  # (samples,) float: at collection
    advantages: torch.Tensor  # (samples,) float
    returns: torch.Tensor  # (samples,) float

    def __len__(self) -> int:
        return self.actions.shape[0]

    def index(self, idx: torch.Tensor) -> "DecisionBatch":
        return DecisionBatch(self.inputs.index(idx), self.actions[idx], self.log_probs[idx], self.values[idx],
                     self.advantages[idx], self.returns[idx])

    def to(self, device: torch.device) -> "DecisionBatch":
        return DecisionBatch(self.inputs.to(device), self.actions.to(device), self.log_probs.to(device),
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

    @property
    def advantages(self) -> torch.Tensor:  # (samples,)
        return self.step_advantages[self.rollout.trained]


def group_advantages(episode_rewards: torch.Tensor, group_size: int) -> torch.Tensor:  # (episodes,)
    """RLOO: each episode's reward minus the mean reward of the other episodes of its group (consecutive
    `group_size` episodes on one prompt at one urgency). Unbiased (the baseline does not depend on the
    episode's own actions), and what the prompt contributes to the reward (is it solvable?) cancels."""
    groups = episode_rewards.view(-1, group_size)  # (groups, group_size)
    others = (groups.sum(1, keepdim=True) - groups) / (group_size - 1)
    return (groups - others).flatten()


def make_batch(rollout: Rollout, reward: Reward, gamma: float, gae_lambda: float, advantage: str = "gae",
               group_size: int = 1) -> DecisionBatch | EpisodeBatch:
    """Advantages over the trained steps: GAE, or with `advantage` "rloo" the episode's RLOO advantage (groups
    of `group_size` episodes) at each of its steps (the value head still learns GAE returns: logged, and there for a later switch back).
    Returns a flat `DecisionBatch` of controller decisions, or an `EpisodeBatch` (joint)."""
    trained = rollout.trained
    advantages, returns = decision_gae(rollout.step_rewards(reward), rollout.values, trained, gamma, gae_lambda)
    if advantage == "rloo":
        per_episode = group_advantages(rollout.episode_rewards(reward).float(), group_size)  # (episodes,)
        advantages = torch.where(trained, per_episode[:, None].to(advantages.dtype), torch.zeros_like(advantages))
    if rollout.tokens is not None:
        return EpisodeBatch(rollout, advantages, returns)
    return DecisionBatch(rollout.inputs(trained), rollout.controller_actions[trained], rollout.log_probs[trained],
                 rollout.values[trained], advantages[trained], returns[trained])


def ppo_loss(new_log_prob: torch.Tensor, entropy: torch.Tensor, new_value: torch.Tensor, batch: DecisionBatch,
             config: "PPOConfig") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
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
                pauses_total, actions, countdown=None):
        """Tensors as in `TokenTrace` / `Rollout`; returns (controller log-prob, controller entropy, value,
        token log-prob), each (episodes, steps), at every step (callers mask)."""
        features, logits = teacher_forced(self.lm, sequences, attention_mask, positions, columns, self.pause_id,
                                          prompt_summary=self.policy.prompt_summary, countdown=countdown)
        episodes, steps = actions.shape
        # The top answer-token probability is a head input the LM produces: recomputed here so that it moves
        # with the adapter, but detached: the token objective and the KL govern the answer distribution.
        top_prob = torch.exp(logits.max(-1).values - torch.logsumexp(logits, -1)).detach()  # (episodes, steps)
        inputs = ControllerInputs(features.flatten(0, 1), urgency[:, None].expand(-1, steps).flatten(),
                                  pauses_before_token.flatten(), pauses_total.flatten(), top_prob.flatten())
        log_prob, entropy, value = self.policy.evaluate(inputs, actions.flatten())
        shape = (episodes, steps)
        return (log_prob.view(shape), entropy.view(shape), value.view(shape),
                token_log_probs(logits, token_ids))  # token log-probs: (episodes, steps)


def joint_loss(evaluator: nn.Module, mb: EpisodeBatch, config: "PPOConfig") -> tuple[torch.Tensor, dict]:
    """PPO on (controller choice, token) actions of whole episodes, plus kl_coef * KL to the adapter-off model."""
    rollout, tokens = mb.rollout, mb.rollout.tokens
    control_lp, entropy, value, token_lp = evaluator(
        tokens.sequences, tokens.attention_mask, tokens.position_ids, tokens.source_columns, tokens.token_ids,
        rollout.urgency, rollout.pauses_before_token, rollout.pauses_total, rollout.controller_actions,
        tokens.countdown)
    decision, emitted, trained = rollout.decision, tokens.emitted, rollout.trained
    # A step's log-prob: the controller's where it decided, plus the token's where one was emitted.
    new_log_prob = torch.where(decision, control_lp, 0.0) + torch.where(emitted, token_lp, 0.0)  # (episodes, steps)
    # inputs=None: ppo_loss reads only the stored log-probs, values, advantages and returns
    flat = DecisionBatch(None, rollout.actions[trained], rollout.action_log_probs[trained], rollout.values[trained],
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


def minibatch_loss(evaluator: nn.Module, mb: DecisionBatch | EpisodeBatch, config: "PPOConfig") -> tuple[torch.Tensor, dict]:
    """The loss of one minibatch: the head alone on stored features, or the joint pass (EpisodeBatch)."""
    if isinstance(mb, EpisodeBatch):
        return joint_loss(evaluator, mb, config)
    new_log_prob, entropy, new_value = evaluator(mb.inputs, mb.actions)
    return ppo_loss(new_log_prob, entropy, new_value, mb, config)


# The approx KL (nats) of one minibatch beyond which an update has exploded rather than learnt: clipped PPO moves
# ~0.01-0.1 per update (target_kl 0.03 stops the epochs), and 10 means the taken actions' probabilities moved by
# factors like e^10 within one update (e.g. a learning rate of 1e10 puts the head's logits at +-1e9).
EXPLODED_KL = 10.0


def stop_if_diverged(values: dict[str, torch.Tensor], accelerator, where: str) -> None:
    """Raise NonFiniteLossError naming each of `values` (reward, advantages, ...) that holds a NaN or inf on any
    process; every process raises alike (the flags are summed over processes)."""
    flags = torch.tensor([float(not bool(torch.isfinite(v).all())) for v in values.values()],
                         device=accelerator.device)
    flags = accelerator.reduce(flags, "sum")
    bad = [name for name, flag in zip(values, flags.tolist()) if flag > 0]
    if bad:
        raise NonFiniteLossError(f"PPO diverged at {where}: {', '.join(bad)} not finite")


def ppo_update(evaluator: nn.Module, optimizer, batch: DecisionBatch | EpisodeBatch, config: "PPOConfig",
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
            # one collective: [any process's loss not finite, sum of the processes' approx KL]
            bad, kl_sum = accelerator.reduce(torch.stack([(~torch.isfinite(loss)).float(),
                                                          stats["approx_kl"].float()]).to(device), "sum").tolist()
            step = f"{where}, epoch {epoch}, minibatch {minibatches}"
            if bad > 0 or kl_sum / accelerator.num_processes > EXPLODED_KL:
                values = ", ".join(f"{k}={float(v):.4g}" for k, v in stats.items())
                what = "loss not finite" if bad > 0 else (
                    f"the policy exploded (approx KL {kl_sum / accelerator.num_processes:.4g} > {EXPLODED_KL} nats; "
                    f"lower learning_rate={config.learning_rate})")
                raise NonFiniteLossError(f"PPO diverged at {step}: {what} ({values})")
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            # max_norm inf when clipping is off: the norm is still measured, the gradients scaled by exactly 1.
            # After the all-reduce every process holds the same gradients, so every process decides alike.
            grad_norm = accelerator.clip_grad_norm_(evaluator.parameters(),
                                                    config.max_grad_norm if config.max_grad_norm > 0 else math.inf)
            if not math.isfinite(float(grad_norm)):
                raise NonFiniteLossError(f"PPO diverged at {step}: gradient norm {float(grad_norm)} not finite "
                                         "(the update was not applied)")
            try:
                optimizer.step()
            except RuntimeError as err:  # e.g. lr 1e300: Adam's step size does not fit a float32
                if "overflow" not in str(err):
                    raise
                raise NonFiniteLossError(f"PPO diverged at {step}: the optimizer step overflowed ({err}); lower "
                                         f"learning_rate={config.learning_rate}") from None
            if not all(bool(torch.isfinite(p).all()) for p in evaluator.parameters() if p.requires_grad):
                raise NonFiniteLossError(f"PPO diverged at {step}: parameters not finite after the update "
                                         f"(lower learning_rate={config.learning_rate})")
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
