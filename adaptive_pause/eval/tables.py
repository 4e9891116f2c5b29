"""Markdown tables for printed reports (eval-pauses, sweeps, benchmarks): one renderer for all of them.

Must not: compute figures; it only lays out what it is given.
"""

from __future__ import annotations

from typing import Sequence


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-style table with columns padded to their widest cell."""
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]

    def line(cells) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])
