"""Scorers: map (prediction, reference answer) to a score in [0, 1].

Must not: import anything from the rest of the package.
"""

from __future__ import annotations

import math
from typing import Callable


def exact(prediction: str, answer: str) -> float:
    return float(prediction.strip() == answer.strip())


def numeric(prediction: str, answer: str, rel_tol: float = 1e-6) -> float:
    """1 if both parse as numbers that agree (so "07" matches "7"), else exact match."""
    try:
        p, a = float(prediction.strip()), float(answer.strip())
    except ValueError:
        return exact(prediction, answer)
    return float(math.isclose(p, a, rel_tol=rel_tol, abs_tol=1e-9))


def partial(prediction: str, answer: str) -> float:
    """Fraction of answer characters right in place (partial credit for digit strings)."""
    prediction, answer = prediction.strip(), answer.strip()
    if not answer:
        return float(not prediction)
    right = sum(p == a for p, a in zip(prediction, answer))
    return right / max(len(answer), len(prediction))


SCORERS: dict[str, Callable[[str, str], float]] = {"exact": exact, "numeric": numeric, "partial": partial}


def get_scorer(name: str) -> Callable[[str, str], float]:
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; choose one of {sorted(SCORERS)}")
    return SCORERS[name]
