"""Bring-your-own task: a JSONL file of {"prompt", "answer", "difficulty"?} with a named scorer."""

from __future__ import annotations

import json
import random
from pathlib import Path

from .base import Example, Task
from .scoring import get_scorer


class JsonlTask(Task):
    def __init__(self, path: str | Path, scorer: str = "exact", name: str | None = None):
        get_scorer(scorer)  # fail early on an unknown scorer
        self.path = Path(path)
        self.scorer = scorer
        self.name = name or self.path.stem
        if not self.path.is_file():
            raise ValueError(f"JSONL task file {str(self.path)!r} does not exist")
        self.items = self._read()
        self.difficulties = tuple(sorted({e.difficulty for e in self.items}))

    def _read(self) -> list[Example]:
        items = []
        with self.path.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f"{self.path}:{line_no}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{where}: not valid JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
                missing = [k for k in ("prompt", "answer") if k not in row]
                if missing:
                    raise ValueError(f"{where}: missing field(s) {missing}")
                if not isinstance(row["prompt"], str) or not row["prompt"]:
                    raise ValueError(f"{where}: 'prompt' must be a non-empty string")
                if not isinstance(row["answer"], (str, int, float)):
                    raise ValueError(f"{where}: 'answer' must be a string or a number")
                difficulty = row.get("difficulty", 0)
                if not isinstance(difficulty, int) or isinstance(difficulty, bool):
                    raise ValueError(f"{where}: 'difficulty' must be an integer, got {difficulty!r}")
                items.append(Example(row["prompt"], str(row["answer"]), difficulty, self.name))
        if not items:
            raise ValueError(f"JSONL task file {str(self.path)!r} has no examples")
        return items

    def sample(self, rng: random.Random) -> Example:
        return rng.choice(self.items)

    def examples(self, n: int, seed: int) -> list[Example]:
        """Without replacement when the file is large enough, so an eval set has no repeats."""
        rng = random.Random(f"{self.name}:{seed}")
        if n <= len(self.items):
            return rng.sample(self.items, n)
        return [self.sample(rng) for _ in range(n)]

    def __repr__(self) -> str:
        return f"jsonl:{self.path}:{self.scorer}"
