"""Synthetic tasks with a per-instance difficulty, scorers, and bring-your-own JSONL tasks.

A task is named by a spec string, usable in YAML and on the command line:
``addition`` (default difficulty range), ``addition:1-4`` (digits 1 to 4),
``interrupt:1-2`` (additions interrupted mid-answer, `interruptions.py`; ``interrupt@reverse+plus_one:1-2``
draws only those variants: listed beside ``interrupt:1-2`` in a stage's tasks, which are mixed uniformly, it gives
them more weight), ``jsonl:path/to/file.jsonl`` or
``jsonl:path/to/dir:numeric`` (a directory with train/dev/test.jsonl), ``phrased:SPEC`` (SPEC's prompts
carrying urgency wording before or after them; ``phrased-before:SPEC`` only before, `urgency_phrases.PhrasedTask`).
Every stage reads one split (`base.STAGE_SPLITS`; the rule for files is in `jsonl.py`).
"""

from __future__ import annotations

import re
from pathlib import Path

from .base import SPLITS, STAGE_SPLITS, Example, Task, check_split, data_record, example_id, task_label
from .jsonl import JsonlTask
from .scoring import SCORERS, get_scorer
from .interruptions import VARIANTS, InterruptedExample, InterruptionTask
from .synthetic import SYNTHETIC_TASKS

SYNTHETIC_TASKS = {**SYNTHETIC_TASKS, InterruptionTask.name: InterruptionTask}

# Every built-in task at its default difficulty range: the default mixture of the training stages.
ALL_TASKS = ["addition", "parity", "sum_mod10", "multihop", "threesum", "primes"]

__all__ = ["ALL_TASKS", "Example", "InterruptedExample", "InterruptionTask", "Task", "JsonlTask", "SCORERS", "SPLITS", "STAGE_SPLITS", "SYNTHETIC_TASKS",
           "check_split", "data_record", "example_id", "get_scorer", "get_task", "task_label"]


def get_task(spec: str) -> Task:
    if spec.startswith("phrased"):  # phrased[-before|-after][@SEED]:SPEC (urgency_phrases.PhrasedTask)
        from .urgency_phrases import PhrasedTask

        head, sep, inner = spec.partition(":")
        form = re.fullmatch(r"phrased(?:-(before|after))?(?:@(\d+))?", head)
        if not sep or not inner or form is None:
            raise ValueError(f"task spec {spec!r}: expected phrased[-before|-after][@SEED]:SPEC, e.g. "
                             "phrased:addition:1-3 or phrased-before@1:addition:1-3")
        return PhrasedTask(get_task(inner), int(form.group(2) or 0), spec, form.group(1) or "any")
    if spec.startswith("jsonl:"):
        rest = spec[len("jsonl:") :]
        path, _, scorer = rest.rpartition(":")
        if path and scorer in SCORERS:
            return JsonlTask(path, scorer=scorer)
        if path and not Path(rest).exists() and Path(path).exists():  # FILE:SCORER with a scorer we lack
            raise ValueError(f"task spec {spec!r}: unknown scorer {scorer!r}; known: {sorted(SCORERS)}")
        return JsonlTask(rest)
    name, _, rng = spec.partition(":")
    variants = None
    if name.startswith(f"{InterruptionTask.name}@"):  # interrupt@VARIANT[+VARIANT...]: a subset of the variants
        name, _, listed = name.partition("@")
        variants = tuple(listed.split("+"))
        unknown = sorted({v for v in variants if v not in VARIANTS})
        if unknown:  # an empty list ("interrupt@:1-2") or name ("reverse+") is the unknown variant ''
            raise ValueError(f"task spec {spec!r}: unknown interruption variant(s) {unknown}; expected "
                             f"interrupt@VARIANT[+VARIANT...][:LO-HI] with variants from {list(VARIANTS)}")
    if name not in SYNTHETIC_TASKS:
        raise ValueError(
            f"unknown task {name!r}; choose one of {sorted(SYNTHETIC_TASKS)} or 'jsonl:PATH[:SCORER]'"
        )
    extra = {} if variants is None else {"variants": variants}
    if not rng:
        return SYNTHETIC_TASKS[name](**extra)
    lo, sep, hi = rng.partition("-")
    try:
        lo_i, hi_i = int(lo), int(hi if sep else lo)
    except ValueError:
        raise ValueError(f"task spec {spec!r}: expected NAME:LO-HI with integers, e.g. addition:1-4") from None
    return SYNTHETIC_TASKS[name](lo_i, hi_i, **extra)
