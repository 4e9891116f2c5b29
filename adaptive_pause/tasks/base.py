"""What a task is: examples with a difficulty, a scorer, a seeded sampler, an HF datasets view.

Must not: know about tokenizers, models or pauses. A task produces text; the
collators turn it into tokens.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from .scoring import get_scorer


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

    def sample(self, rng: random.Random) -> Example:
        raise NotImplementedError

    def score(self, prediction: str, answer: str) -> float:
        return get_scorer(self.scorer)(prediction, answer)

    def examples(self, n: int, seed: int) -> list[Example]:
        """`n` examples, the same for the same seed (and different across tasks)."""
        rng = random.Random(f"{self.name}:{seed}")
        return [self.sample(rng) for _ in range(n)]

    def to_dataset(self, n: int, seed: int):
        """An HF `datasets.Dataset` with columns prompt, answer, difficulty, task."""
        from datasets import Dataset

        return Dataset.from_list([asdict(e) for e in self.examples(n, seed)])
