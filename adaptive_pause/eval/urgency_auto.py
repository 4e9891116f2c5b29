"""Urgency from the wording, end to end: pauses and accuracy per phrase level with `urgency="auto"`.

Owns: `auto_table`: for each urgency level, task prompts carrying a phrase of that level (from one split
of the phrase bank) go through `generate(urgency="auto")` (the run's estimator, then its controller) and,
beside them, the same prompts with the level's urgency given explicitly; per level the mean estimate,
pauses and accuracy of both, and the summary figures (Spearman of level against mean pauses, per prompt
estimate against level, MAE). Used by `benchmarks/urgency_auto.py`, the demo and the sweep's "auto" rows.

Must not: train anything or decode by itself (it calls `generate`).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..tasks.urgency_phrases import LEVELS, UrgencyPhraseBank, level_urgency


def estimator_phrases(run_dir) -> tuple[int, list[str] | None]:
    """(phrase seed, phrase blocks) the run's estimator was trained with, from RUN_DIR/urgency/config.json: the
    split whose held-out phrasings it never saw. An estimator that did not record them: (0, None = all)."""
    saved = Path(run_dir) / "urgency" / "config.json"
    extra = json.loads(saved.read_text()).get("extra", {}) if saved.is_file() else {}
    return int(extra.get("phrase_seed", 0)), extra.get("phrase_blocks")


def _spearman(x, y) -> float | str:
    from scipy.stats import spearmanr

    if len(set(x)) < 2 or len(set(y)) < 2:
        return "constant"  # undefined when one side does not vary: said so, not NaN (as the sweep)
    return float(spearmanr(x, y).statistic)


def fmt(value) -> str:
    """A summary figure for a printed line: 3 decimals, or the word that says why there is none."""
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def auto_table(model, task, split: str = "test", num_per_level: int = 100, phrase_seed: int = 0, seed: int = 12345,
               placement: str = "before", batch_size: int = 128, phrase_blocks=None, **generate_kwargs) -> dict:
    """{"table": per level {level, urgency, auto/estimate, auto/pauses, auto/accuracy, explicit/pauses,
    explicit/accuracy}, "spearman_level_pauses", "spearman_level_pauses_explicit", "spearman_level_estimate",
    "mae"}; `phrase_blocks`: the bank's blocks (None: all; use the estimator's own, as trained);
    `generate_kwargs` go to `model.generate` (max_new_tokens, max_pauses, ...)."""
    if num_per_level < 1:
        raise ValueError(f"num_per_level: must be >= 1, got {num_per_level}")
    bank = UrgencyPhraseBank(phrase_seed, blocks=phrase_blocks or None)
    examples = bank.examples([task], split, num_per_level * LEVELS, seed, placement)
    rows: dict[str, list[dict]] = {"auto": [], "explicit": []}
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        prompts = [e.prompt for e in chunk]
        for mode, urgency in (("auto", "auto"), ("explicit", [e.urgency for e in chunk])):
            out = model.generate(prompts, urgency=urgency, **generate_kwargs)
            for i, e in enumerate(chunk):
                rows[mode].append({"level": e.level, "pauses": out.pauses[i], "estimate": out.urgency_estimated[i],
                                   "score": task.score(out.texts[i], e.answer)})
    table = []
    for level in range(LEVELS):
        line: dict = {"level": level, "urgency": level_urgency(level)}
        for mode, records in rows.items():
            mine = [r for r in records if r["level"] == level]
            line[f"{mode}/pauses"] = sum(r["pauses"] for r in mine) / len(mine)
            line[f"{mode}/accuracy"] = sum(r["score"] for r in mine) / len(mine)
        mine = [r["estimate"] for r in rows["auto"] if r["level"] == level]
        line["auto/estimate"] = sum(mine) / len(mine)
        table.append(line)
    levels = [r["level"] for r in rows["auto"]]
    estimates = [r["estimate"] for r in rows["auto"]]
    return {
        "table": table,
        "spearman_level_pauses": _spearman([t["level"] for t in table], [t["auto/pauses"] for t in table]),
        "spearman_level_pauses_explicit": _spearman([t["level"] for t in table],
                                                    [t["explicit/pauses"] for t in table]),
        "spearman_level_pauses_per_prompt": _spearman(levels, [r["pauses"] for r in rows["auto"]]),
        "spearman_level_estimate": _spearman(levels, estimates),
        "mae": sum(abs(e - level_urgency(lv)) for e, lv in zip(estimates, levels)) / len(levels),
    }


def format_auto_table(result: dict) -> str:
    lines = [f"{'level':>5} {'u':>5} {'estimate':>8} {'pauses auto':>11} {'pauses explicit':>15} "
             f"{'acc auto':>8} {'acc explicit':>12}"]
    for t in result["table"]:
        lines.append(f"{t['level']:>5} {t['urgency']:>5.2f} {t['auto/estimate']:>8.3f} {t['auto/pauses']:>11.2f} "
                     f"{t['explicit/pauses']:>15.2f} {t['auto/accuracy']:>8.3f} {t['explicit/accuracy']:>12.3f}")
    return "\n".join(lines)
