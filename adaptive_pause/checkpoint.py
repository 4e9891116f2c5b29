"""Atomic run-directory writes and agreement checks between saved parts.

Owns: writing a directory (or file) to a temporary sibling and renaming it into
place, so a crash never leaves a half-written checkpoint; and checking that a
tokenizer, model and controller agree (vocab size, hidden size, pause id),
with a message that says exactly what differs.

Must not: know about training loops or decoding.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temporary directory that replaces `path` only when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json_atomic(data, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def check_agreement(parts: dict[str, dict[str, int]]) -> None:
    """`parts` maps a part's name to the facts it records; all shared facts must agree.

    E.g. {"tokenizer": {"vocab_size": 105, "pause_id": 4}, "model": {"vocab_size": 100}}
    raises: "checkpoint parts disagree: vocab_size: tokenizer=105, model=100".
    """
    keys = sorted({k for facts in parts.values() for k in facts})
    problems = []
    for key in keys:
        seen = {name: facts[key] for name, facts in parts.items() if key in facts}
        if len(set(seen.values())) > 1:
            problems.append(f"{key}: " + ", ".join(f"{n}={v}" for n, v in seen.items()))
    if problems:
        raise ValueError("checkpoint parts disagree: " + "; ".join(problems))
