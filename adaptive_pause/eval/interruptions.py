"""Interruptions end to end: each held-out interrupted example decoded by the one loop, interrupted for real.

Owns: `evaluate_interruptions` (per example: the uninterrupted answer; the same request interrupted by
`DecodeSession.interrupt` from `generate`'s step callback when the row reaches the example's arrival point;
for a replacement also the new request asked uninterrupted) and `summarise` (per variant: accuracy, how often
an otherwise-correct answer changed, how often a modification was followed where the uninterrupted answer is
right, pauses after the interruption). Arrival: with no prefix written the interruption comes after the
first step (inside the pause run when the row pauses), else once the row has emitted that many characters.
Urgency interruptions set the urgency the variant stands for (hurry 1, slow 0) unless the run has an
urgency estimator, which then re-reads the interruption.

Must not: train, or decode outside `AdaptivePauseModel.generate`.
"""

from __future__ import annotations

from statistics import mean
from typing import Sequence

import torch

from ..tasks.interruptions import VARIANT_URGENCY, VARIANTS, InterruptedExample


def _interrupter(examples: Sequence, use_reader: bool, record: dict):
    """on_step callback: interrupt each interrupted example's row once, at its arrival point; record pauses
    spent before it. Rows of other examples are never interrupted (arrival -1 is never reached)."""
    emitted = torch.tensor([len(e.emitted) if isinstance(e, InterruptedExample) else -1 for e in examples])
    texts = [getattr(e, "interruption", "") for e in examples]

    def on_step(session) -> None:
        waiting = session.active.cpu() & ~session.interrupted.cpu()
        # Emits grow by at most one per step, so a row meets its arrival point exactly once (unless it ends first).
        reached = torch.where(emitted == 0, torch.ones_like(waiting), session.answer_tokens.cpu() == emitted)
        rows = (waiting & reached).nonzero().flatten().tolist()
        if not rows:
            return
        for r in rows:
            record[r] = int(session.pauses_total[r])
        given = [VARIANT_URGENCY.get(examples[r].variant) for r in rows]
        urgent = [r for r, u in zip(rows, given) if u is not None]
        plain = [r for r, u in zip(rows, given) if u is None]
        if urgent:
            urgency = None if use_reader else [VARIANT_URGENCY[examples[r].variant] for r in urgent]
            session.interrupt(urgent, [texts[r] for r in urgent], urgency=urgency)
        if plain:  # the reader (if any) reads these too: chatter may carry urgency cues of its own
            session.interrupt(plain, [texts[r] for r in plain])

    return on_step


def sweep_step(model, examples: Sequence):
    """The step callback with which a sweep decodes `examples` (None when none is interrupted)."""
    if not any(isinstance(e, InterruptedExample) for e in examples):
        return None
    return _interrupter(examples, model.urgency_estimator is not None, {})


def interrupted_score(task, example, text: str, finish_reason: str) -> float:
    """The task's score of an answer; a cancellation is right when the row finished `cancelled`."""
    if getattr(example, "variant", None) == "cancel":
        return float(finish_reason == "cancelled")
    return task.score(text, example.answer)


def accuracy_by_kind(examples: Sequence, scores: torch.Tensor) -> dict | None:
    """{variant: mean score} over the interrupted examples (None when there are none)."""
    variants = [getattr(e, "variant", None) for e in examples]
    kinds = sorted({v for v in variants if v is not None})
    if not kinds:
        return None
    return {v: scores[torch.tensor([x == v for x in variants])].mean().item() for v in kinds}


@torch.no_grad()
def evaluate_interruptions(model, task, examples: Sequence[InterruptedExample], urgency: float = 0.5,
                           policy=None, batch_size: int = 256, **decode) -> list[dict]:
    """One record per example: variant, scores, answers and pauses, interrupted and not."""
    use_reader = model.urgency_estimator is not None
    records = []
    for start in range(0, len(examples), batch_size):
        chunk = list(examples[start:start + batch_size])
        plain = model.generate([e.prompt for e in chunk], urgency=urgency, policy=policy, **decode)
        replaced = [i for i, e in enumerate(chunk) if e.variant == "replace"]
        fresh = model.generate([chunk[i].new_prompt + "=" for i in replaced], urgency=urgency, policy=policy,
                               **decode) if replaced else None
        arrived: dict[int, int] = {}
        hit = model.generate([e.prompt for e in chunk], urgency=urgency, policy=policy,
                             on_step=_interrupter(chunk, use_reader, arrived), **decode)
        for i, e in enumerate(chunk):
            rec = {"variant": e.variant, "kind": e.kind, "difficulty": e.difficulty, "reached": i in arrived,
                   "plain_answer": plain.texts[i], "plain_correct": task.score(plain.texts[i], e.original_answer),
                   "answer": hit.texts[i], "finish": hit.finish_reasons[i], "pauses_plain": plain.pauses[i],
                   "pauses_after": hit.pauses[i] - arrived.get(i, hit.pauses[i])}
            rec["correct"] = interrupted_score(task, e, hit.texts[i], hit.finish_reasons[i])
            if i in replaced:
                rec["new_request_correct"] = task.score(fresh.texts[replaced.index(i)], e.answer)
            records.append(rec)
    return records


def summarise(records: list[dict]) -> dict:
    """{variant: figures} over the examples whose interruption arrived (see module docstring)."""
    out = {}
    for variant in VARIANTS:
        mine = [r for r in records if r["variant"] == variant and r["reached"]]
        if not mine:
            continue
        right = [r for r in mine if r["plain_correct"] == 1.0]
        row = {"n": len(mine), "not_reached": sum(r["variant"] == variant and not r["reached"] for r in records),
               "accuracy": mean(r["correct"] for r in mine),
               "plain_accuracy": mean(r["plain_correct"] for r in mine), "n_plain_correct": len(right),
               "pauses_after": float(mean(r["pauses_after"] for r in mine))}
        if variant in ("irrelevant", "hurry", "slow"):
            row["changed_of_correct"] = mean(r["answer"] != r["plain_answer"] for r in right) if right else None
        if VARIANTS[variant] == "modify":
            row["followed_of_correct"] = mean(r["correct"] for r in right) if right else None
        if variant == "replace":
            row["new_request_plain_accuracy"] = mean(r["new_request_correct"] for r in mine)
        out[variant] = row
    return out
