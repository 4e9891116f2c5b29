"""The policy-driven decode loop: the only place a policy drives a `DecodeSession` to the end.

Owns: `decode` (prefill prompts, then run a policy), `run_policy` (drive an existing session: urgency
schedules, step callbacks, chunked and speculative steps chosen per step, a planning controller's counts
prefilled in one pass each), and the check that the loop's
features are the ones the policy reads. Generation, PPO rollouts, sweeps and the gymnasium env use these.

Must not: know about tasks, rewards, PPO updates or files.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch

from policies.base import PausePolicy

from .config import DecodeConfig, UrgencyLike, UrgencySchedule
from .session import DecodeSession
from .trace import DecodeResult


def check_policy_reads(policy: PausePolicy, config: DecodeConfig, hidden_size: int | None) -> None:
    """The loop's features must be the ones the policy reads: its hidden size, with or without the prompt
    summary. (Policies that read no features, the baselines, take either.)"""
    if hidden_size is not None:
        policy.check_hidden_size(hidden_size)
    if policy.prompt_summary and not config.prompt_summary:
        raise ValueError(f"policy {type(policy).__name__} reads the prompt summary (prompt_summary=True); decode "
                         "with prompt_summary=True (DecodeConfig, PauseEnvConfig)")
    if getattr(policy, "first_token_only", False) and not config.first_token_pauses_only:
        raise ValueError(f"policy {type(policy).__name__} plans the pauses before the first answer token only; "
                         "decode with first_token_pauses_only=True")
    if config.prompt_summary and not policy.prompt_summary and policy.hidden_size is not None:
        raise ValueError(f"prompt_summary: the decode loop appends the prompt summary to the features, but policy "
                         f"{type(policy).__name__} was built without it; decode with prompt_summary=False")


def check_schedule(urgency_schedule: UrgencySchedule | None) -> None:
    if urgency_schedule is not None and not callable(urgency_schedule):
        if not isinstance(urgency_schedule, Mapping) or not all(
                isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in urgency_schedule):
            raise ValueError("urgency_schedule: expected a callable (session) -> urgency | None or a mapping "
                             f"{{step (int >= 0): urgency}}, got {urgency_schedule!r}")


def _schedule_value(schedule: UrgencySchedule | None, session: DecodeSession, step: int):
    if schedule is None:
        return None
    if callable(schedule):
        return schedule(session)
    return schedule.get(step)


@torch.no_grad()
def run_policy(session: DecodeSession, policy: PausePolicy, urgency_schedule: UrgencySchedule | None = None,
               generator: torch.Generator | None = None,
               on_step: Callable[[DecodeSession], None] | None = None) -> DecodeResult:
    """Drive `session` with `policy` until every row finishes. The only policy-driven loop."""
    check_policy_reads(policy, session.config, None)
    step = 0
    cfg = session.config
    while not session.done:
        if urgency_schedule is not None:
            new_urgency = _schedule_value(urgency_schedule, session, step)
            if new_urgency is not None:
                session.set_urgency(new_urgency)
            if session.done:  # a callback may cancel every row
                break
        inputs = session.controller_inputs()
        decision = policy.decide(inputs, greedy=cfg.controller_greedy, generator=generator)
        if cfg.speculate_pauses:
            decision = session.take_pending(decision)
        plan = policy.plan_pauses(inputs)  # None for a per-step policy; else also the pauses' countdown
        if policy.plans:  # a planning controller: before a token, its count k of pauses in one pass, then the emit
            fresh = session.active & ~session.forced() & (session.pauses_before_token == 0)  # (batch,)
            session.step_pauses(torch.where(fresh, decision.action.long(), 0), decision, deciding=fresh)
        elif cfg.chunk_pauses and plan is not None and int((plan.to(session.device) * session.active).max()) >= 2:
            # Rows with a plan prefill it in one pass; the others take their one-token decision alongside.
            plan = plan.to(session.device).long()
            session.step_pauses(torch.where(plan >= 1, plan, decision.action.long()), decision)
        elif cfg.speculate_pauses >= 2 and bool((decision.action.bool() & session.active & ~session.forced()).any()):
            session.step_speculative(decision, policy, cfg.speculate_pauses, cfg.controller_greedy, generator)
        else:
            session.step(decision.action, decision, committed=plan)
        if on_step is not None:
            on_step(session)
        step += 1
    return session.result()


def decode(model, tokenizer, prompt_ids: Sequence[Sequence[int]], policy: PausePolicy, urgency: UrgencyLike,
           config: DecodeConfig, pause_id: int, numbering: str, pause_slots: int, seed: int | None = None,
           urgency_schedule: UrgencySchedule | None = None,
           on_step: Callable[[DecodeSession], None] | None = None, urgency_reader=None) -> DecodeResult:
    """Prefill `prompt_ids` (token id lists, left-padded here) and run `policy` to the end.

    `urgency`: a number or one per prompt, in [0, 1]. `urgency_schedule`: {step: urgency} or a callback
    (session) -> urgency | None, applied before each step. `on_step(session)` runs after each step (e.g. to
    `cancel` or `interrupt` rows). `urgency_reader`: how an interruption's urgency is read when its caller
    gives none (`DecodeSession.interrupt`).
    """
    check_schedule(urgency_schedule)
    hidden = getattr(getattr(model, "config", None), "hidden_size", None)
    check_policy_reads(policy, config, hidden)  # before the prompt pass, not after it
    session = DecodeSession(model, tokenizer, prompt_ids, urgency, config, pause_id, numbering, pause_slots, seed)
    session.urgency_reader = urgency_reader
    generator = None
    if seed is not None:
        generator = torch.Generator(device=session.device)
        generator.manual_seed(int(seed) + 1)
    return run_policy(session, policy, urgency_schedule, generator, on_step)
