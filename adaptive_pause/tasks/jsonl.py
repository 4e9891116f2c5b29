"""Bring-your-own task: JSONL of {"prompt", "answer", "difficulty"?} with a named scorer, kept in splits.

`jsonl:PATH[:SCORER]`. PATH is either a directory holding `train.jsonl` and `test.jsonl` (and optionally
`dev.jsonl`), or one file split deterministically by the rule below. The task's name is the directory's or the
file's stem, so tables stay short.

The split rule (one file, or a directory without dev.jsonl for the dev split): an example's split is fixed by
the sha256 of its prompt: digest mod 10 in 0..7 -> train, 8 -> dev, 9 -> test (of train.jsonl, when only dev
is missing: 9 -> dev, the rest train). So a prompt never changes split when lines are added, reordered or
duplicated, and the same prompt never lands in two splits.

Must not: know about tokenizers, models or pauses.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from .base import SPLITS, Example, Task, check_split
from .scoring import get_scorer


def hash_bucket(prompt: str) -> int:
    """0..9 from the prompt's sha256: the split rule's only input."""
    return int.from_bytes(hashlib.sha256(prompt.encode("utf-8")).digest()[:8], "big") % 10


def split_of(prompt: str) -> str:
    bucket = hash_bucket(prompt)
    return "train" if bucket < 8 else "dev" if bucket == 8 else "test"


def json_objects(path: Path):
    """(where, object) for each non-blank line of a JSON-lines file, `where` = "PATH:LINE"; a ValueError names
    the line that is not JSON or not an object."""
    with Path(path).open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            where = f"{path}:{line_no}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{where}: not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1})") \
                    from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
            yield where, row


def read_jsonl(path: Path, name: str) -> list[Example]:
    items = []
    for where, row in json_objects(path):
        missing = [k for k in ("prompt", "answer") if k not in row]
        if missing:
            raise ValueError(f"{where}: missing field(s) {missing}")
        if not isinstance(row["prompt"], str) or not row["prompt"]:
            raise ValueError(f"{where}: 'prompt' must be a non-empty string")
        if not isinstance(row["answer"], (str, int, float)) or isinstance(row["answer"], bool):
            raise ValueError(f"{where}: 'answer' must be a string or a number")
        difficulty = row.get("difficulty", 0)
        if not isinstance(difficulty, int) or isinstance(difficulty, bool):
            raise ValueError(f"{where}: 'difficulty' must be an integer, got {difficulty!r}")
        items.append(Example(row["prompt"], str(row["answer"]), difficulty, name))
    if not items:
        raise ValueError(f"JSONL task file {str(path)!r} has no examples")
    return items


class JsonlTask(Task):
    def __init__(self, path: str | Path, scorer: str = "exact", name: str | None = None):
        get_scorer(scorer)  # fail early on an unknown scorer
        self.path = Path(path)
        self.scorer = scorer
        if self.path.is_dir():
            self.name = name or self.path.name
            files = {split: self.path / f"{split}.jsonl" for split in SPLITS}
            for split in ("train", "test"):
                if not files[split].is_file():
                    raise ValueError(f"JSONL task directory {str(self.path)!r} has no {split}.jsonl "
                                     "(it needs train.jsonl and test.jsonl; dev.jsonl is optional)")
            self.splits = {split: read_jsonl(f, self.name) for split, f in files.items() if f.is_file()}
            if "dev" not in self.splits:  # PPO's split: a fixed tenth of train.jsonl, by the prompt hash
                train = self.splits["train"]
                self.splits["dev"] = [e for e in train if hash_bucket(e.prompt) == 9]
                self.splits["train"] = [e for e in train if hash_bucket(e.prompt) != 9]
            self.split_rule = "files"
        elif self.path.is_file():
            self.name = name or self.path.stem
            items = read_jsonl(self.path, self.name)
            self.splits = {split: [e for e in items if split_of(e.prompt) == split] for split in SPLITS}
            self.split_rule = "sha256(prompt) mod 10: 0-7 train, 8 dev, 9 test"
        else:
            raise ValueError(f"JSONL task {str(self.path)!r} is neither a file nor a directory")
        overlap = {e.prompt for e in self.splits["train"]} & {e.prompt for e in self.splits["test"]}
        if overlap:
            raise ValueError(f"JSONL task {str(self.path)!r}: {len(overlap)} prompt(s) are in both train and test, "
                             f"e.g. {sorted(overlap)[0]!r}; held-out examples must not be trained on")
        self.items = [e for split in SPLITS for e in self.splits[split]]
        self.difficulties = tuple(sorted({e.difficulty for e in self.items}))

    def split_items(self, split: str) -> list[Example]:
        items = self.splits[check_split(split)]
        if not items:
            raise ValueError(f"JSONL task {str(self.path)!r}: its {split} split is empty ({self.split_rule}); "
                             "add examples or give a directory with train.jsonl, dev.jsonl and test.jsonl")
        return items

    def sample(self, rng: random.Random, split: str = "train") -> Example:
        return rng.choice(self.split_items(split))

    def examples(self, n: int, seed: int, split: str = "test") -> list[Example]:
        """Without replacement when the split is large enough, so an eval set has no repeats."""
        items = self.split_items(split)
        rng = random.Random(f"{self.name}:{split}:{seed}")
        if n <= len(items):
            return rng.sample(items, n)
        return [rng.choice(items) for _ in range(n)]

    def __repr__(self) -> str:
        return f"jsonl:{self.path}:{self.scorer}"
