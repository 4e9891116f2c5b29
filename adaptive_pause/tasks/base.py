"""What a task is: examples with a difficulty, a scorer, seeded samplers per split, an HF datasets view.

Splits: every stage reads one split of a task. Training stages (pretrain, finetune) read "train", controller
PPO reads "dev", `eval-pauses` and `sweep` read "test" (`STAGE_SPLITS`). A file-backed task keeps its splits
apart (`jsonl.py`); a generated task draws each split from its own seeded stream (a large instance space
makes repeats across splits rare, but small difficulty levels, e.g. 1-digit additions, do repeat).

Must not: know about tokenizers, models or pauses. A task produces text; the collators turn it into tokens.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass

from .scoring import get_scorer

SPLITS = ("train", "dev", "test")
STAGE_SPLITS = {"pretrain": "train", "finetune": "train", "train-controller": "dev", "eval-pauses": "test",
                "sweep": "test"}


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split: must be one of {SPLITS}, got {split!r}")
    return split


@dataclass(frozen=True)
class Example:
    prompt: str
    answer: str
    difficulty: int
    task: str


class Task:
    """A family of examples. Subclasses implement `sample(rng)` and set the class fields.

    `difficulties` lists the difficulty values the task can produce (an
    example's difficulty is the task's own natural knob: digits, bits, hops...).
    """

    name: str = ""
    scorer: str = "exact"
    difficulties: tuple[int, ...] = ()

    def sample(self, rng: random.Random, split: str = "train") -> Example:
        """One example of `split`. Generated tasks draw every split from the same distribution: their splits
        differ by seed stream (`examples`, `loop.examples_for_step`), not by content."""
        raise NotImplementedError

    def score(self, prediction: str, answer: str) -> float:
        return get_scorer(self.scorer)(prediction, answer)

    def examples(self, n: int, seed: int, split: str = "test") -> list[Example]:
        """`n` examples of `split`, the same for the same seed (and different across tasks and splits)."""
        rng = random.Random(f"{self.name}:{check_split(split)}:{seed}" if split != "test" else f"{self.name}:{seed}")
        return [self.sample(rng, split) for _ in range(n)]

    def to_dataset(self, n: int, seed: int):
        """An HF `datasets.Dataset` with columns prompt, answer, difficulty, task."""
        from datasets import Dataset

        return Dataset.from_list([asdict(e) for e in self.examples(n, seed)])


def example_id(example: Example) -> str:
    """A short, stable id of an example: the first 12 hex digits of its prompt's sha256."""
    return hashlib.sha256(example.prompt.encode("utf-8")).hexdigest()[:12]


def data_record(stage: str, split: str, specs: list[str], tasks: list[Task],
                seen: dict[str, set[str]] | None = None) -> dict:
    """What a stage read, for its run directory's data.json: the split, and per task its label, how its
    splits are kept apart, and (file-backed tasks) the ids of the examples seen."""
    record = {"stage": stage, "split": split, "tasks": {}}
    for spec, task in zip(specs, tasks):
        label = task_label(spec, task)
        entry = {"spec": spec, "split_rule": getattr(task, "split_rule", "seed streams (generated task)")}
        if seen is not None and hasattr(task, "splits"):
            entry["example_ids"] = sorted(seen.get(label, set()))
        record["tasks"][label] = entry
    return record


def task_label(spec: str, task: Task) -> str:
    """The short name a task goes by in tables: its spec for a generated task (`addition:1-3`), its name
    (the file's or directory's stem) for a file-backed one, with its scorer when that is not exact match (the
    same file scored two ways is two rows)."""
    if not hasattr(task, "splits"):
        return spec
    return task.name if task.scorer == "exact" else f"{task.name}:{task.scorer}"
