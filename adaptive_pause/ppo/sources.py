"""Rollout sources: where PPO's episodes come from, adapted to its storage (`algorithm.Rollout`).

A source has `hidden_size` (what the controller's features come from), `max_pauses_total` (the reward's
pause normaliser) and `collect(policy, urgency, generator) -> Rollout`, which runs `policy` (sampling) on
len(urgency) fresh episodes. `AnalyticSource` steps the analytic env. `LMSource` runs the decode loop on task
prompts and maps its trace onto `Rollout`: features, pauses before the token and in total, top_prob,
actions, log-probs and values from the controller's decisions, valid (the row was unfinished), undecided
(a forced emit or a planned pause), score (the task's scorer on the decoded answer), pauses, difficulty.
With joint LoRA training it adds a `TokenTrace` from the teacher-forced replay (`decoding/replay.py`), with
the adapter (old log-probs) and without it (the reference).

Must not: compute advantages or losses (`algorithm.py`), or decode by itself (`decoding/`).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Protocol

import torch
from torch import nn

from policies import PausePolicy
from rewards import Reward

from ..decoding import DecodeConfig, decode
from ..decoding.replay import source_columns, teacher_forced, token_log_probs
from ..envs.analytic import AnalyticBatchEnv, AnalyticModel
from ..positions import position_ids
from ..tasks import example_id
from .algorithm import Rollout, TokenTrace

if TYPE_CHECKING:
    from .config import PPOConfig


class RolloutSource(Protocol):
    hidden_size: int  # the hidden size the controller's features come from (analytic: its feature width)
    max_pauses_total: int  # the reward's pause normaliser

    def collect(self, policy: PausePolicy, urgency: torch.Tensor, generator: torch.Generator) -> Rollout: ...


class AnalyticSource:
    """Rollouts of the analytic environment (adaptive_pause/analytic_env.py), batched over episodes."""

    def __init__(self, model: AnalyticModel, reward: Reward):
        self.model = model
        self.env = AnalyticBatchEnv(model, reward)
        self.hidden_size = model.feature_dim
        self.max_pauses_total = model.max_pauses

    @torch.no_grad()
    def collect(self, policy: PausePolicy, urgency: torch.Tensor, generator: torch.Generator) -> Rollout:
        env, device = self.env, _device_of(policy)
        episodes, steps = urgency.shape[0], self.model.max_pauses + 1  # at most cap pauses, then the answer
        features = torch.zeros(episodes, steps, self.hidden_size)
        before = torch.zeros(episodes, steps, dtype=torch.long)
        actions = torch.zeros(episodes, steps, dtype=torch.long)
        log_probs, values = torch.zeros(episodes, steps), torch.zeros(episodes, steps)
        valid = torch.zeros(episodes, steps, dtype=torch.bool)
        forced = torch.zeros(episodes, steps, dtype=torch.bool)

        inputs = env.reset(urgency.cpu(), generator)
        taken = 0
        for t in range(steps):
            decision = policy.decide(inputs.to(device), generator=generator if device.type == "cpu" else None)
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
            values=values[:, keep], valid=valid[:, keep], undecided=forced[:, keep], score=env.score.clone(),
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

    def __init__(self, model, tasks: list, config: "PPOConfig"):
        self.model = model
        self.tasks = tasks
        # ids of the file-backed examples rollouts used (the run's data.json records them)
        self.seen: dict[str, set[str]] = {task.name: set() for task in tasks if hasattr(task, "splits")}
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
            max_pauses_total=config.max_pauses_total, first_token_pauses_only=config.first_token_pauses_only,
            do_sample=self.train_adapter, temperature=1.0,
            controller_greedy=False, record_features=True, prompt_summary=config.prompt_summary,
        )
        self.hidden_size = model.hidden_size
        self.max_pauses_total = self.decode_config.pause_budget
        self.phrases = None
        if config.urgency_from_phrases:
            from ..tasks.urgency_phrases import UrgencyPhraseBank

            if model.urgency_estimator is None:
                raise ValueError(f"urgency_from_phrases: {config.model_run_dir} has no urgency/ (an urgency "
                                 "estimator); train one with `adaptive-pause train-urgency RUN_DIR` first")
            self.phrases = UrgencyPhraseBank(config.phrase_seed)

    def adapter_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """(name, tensor) of the LM's trainable tensors (LoRA A/B, the <pause> row); empty when frozen."""
        return [(name, param) for name, param in self.model.lm.named_parameters() if param.requires_grad]

    @torch.no_grad()
    def collect(self, policy: PausePolicy, urgency: torch.Tensor, generator: torch.Generator) -> Rollout:
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        rng = random.Random(seed)
        group = self.group_size  # consecutive episodes share a prompt (and, from the caller, an urgency)
        if urgency.shape[0] % group:
            raise ValueError(f"group_size: {group} does not divide the {urgency.shape[0]} episodes of a rollout")
        chosen = [self.tasks[rng.randrange(len(self.tasks))] for _ in range(urgency.shape[0] // group)]
        examples = [task.sample(rng, "dev") for task in chosen]  # PPO reads the dev split (tasks.STAGE_SPLITS)
        for example in examples:
            if example.task in self.seen:
                self.seen[example.task].add(example_id(example))
        prompts, urgency_input = [e.prompt for e in examples], None
        if self.phrases is not None:
            urgency, prompts, urgency_input = self._phrased(urgency, examples, rng)
        chosen = [task for task in chosen for _ in range(group)]
        examples = [e for e in examples for _ in range(group)]
        prompt_ids = [ids for ids in self.model.encode(prompts) for _ in range(group)]
        settings, device = self.model.settings, self.model.device
        read = urgency if urgency_input is None else urgency_input
        result = decode(self.model.lm, self.model.tokenizer, prompt_ids, policy,
                        read.to(device), self.decode_config, settings.pause_id, settings.numbering,
                        settings.pause_slots, seed=seed)
        texts = self.model.tokenizer.batch_decode(result.answer_ids, skip_special_tokens=True)
        score = torch.tensor([task.score(text, e.answer) for task, text, e in zip(chosen, texts, examples)],
                             device=device)
        trace = result.trace
        return Rollout(
            features=trace.features, pauses_before_token=trace.pauses_before_token, pauses_total=trace.pauses_total,
            top_prob=trace.top_prob, urgency=urgency.to(device).float(), actions=trace.actions,
            log_probs=trace.log_probs, values=trace.values, valid=trace.valid, undecided=trace.forced | trace.planned,
            score=score.float(), pauses=result.pauses_total.long(),
            difficulty=torch.tensor([e.difficulty for e in examples], device=device),
            tokens=token_trace(self.model.lm, result, settings) if self.train_adapter else None,
            choices=trace.choices if policy.plans else None,  # a planning controller's counts
            urgency_input=None if urgency_input is None else urgency_input.to(device).float(),
        )

    def _phrased(self, urgency: torch.Tensor, examples: list, rng: random.Random):
        """(the reward's urgency: the phrase's level, phrased prompts, the controller's: the estimate), per group.
        Each group's urgency becomes its nearest level; its prompt carries a train phrasing of that level."""
        from ..tasks.urgency_phrases import LEVELS
        from ..urgency import estimate

        group = self.group_size
        levels = (urgency[::group].cpu() * (LEVELS - 1)).round().long()  # (groups,)
        phrased = [self.phrases.sample(rng, "train", e, int(level)) for e, level in zip(examples, levels)]
        prompts = [p.prompt for p in phrased]
        estimated = estimate(self.model, self.model.encode(prompts), None).cpu()  # (groups,)
        level_urgency = levels.float() / (LEVELS - 1)
        return (level_urgency.repeat_interleave(group), prompts, estimated.repeat_interleave(group))


@torch.no_grad()
def token_trace(lm, result, settings) -> TokenTrace:
    """The `TokenTrace` of a finished decode: teacher-forced token log-probs with the adapter and without."""
    trace = result.trace
    rows, steps = trace.valid.shape
    sequences, mask = result.sequences, result.attention_mask  # (rows, prompt + steps)
    prompt_len = sequences.shape[1] - steps
    positions = position_ids(sequences, mask, settings.pause_id, settings.numbering, settings.pause_slots)
    columns = source_columns(mask, prompt_len, steps)
    emitted = trace.valid & (trace.actions == 0)
    token_ids = torch.where(trace.valid, trace.tokens, 0)

    def log_probs() -> torch.Tensor:  # (rows, steps), 0 where no token was emitted
        _, logits = teacher_forced(lm, sequences, mask, positions, columns, settings.pause_id,
                                   countdown=result.countdown)
        return torch.where(emitted, token_log_probs(logits, token_ids), 0.0)

    old = log_probs()
    with lm.disable_adapter():
        ref = log_probs()
    return TokenTrace(sequences=sequences, attention_mask=mask, position_ids=positions, source_columns=columns,
                      token_ids=token_ids, emitted=emitted, log_probs=old, ref_log_probs=ref,
                      countdown=result.countdown)


def _device_of(policy: nn.Module) -> torch.device:
    param = next(iter(policy.parameters()), None)
    return param.device if param is not None else torch.device("cpu")
