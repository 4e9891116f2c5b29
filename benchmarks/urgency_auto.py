"""End to end with urgency="auto": pauses and accuracy per phrase level, on held-out phrasings.

For each urgency level, task prompts carrying a phrase of that level from a split the estimator never
trained on go through `generate(urgency="auto")` (the run's estimator, then its controller); beside them
the same prompts with the level's urgency given explicitly. Prints a table, writes JSON, and ends with
`urgency_auto: spearman_level_pauses=R spearman_level_estimate=R mae=X`.

usage: PYTHONPATH=. python benchmarks/urgency_auto.py RUN_DIR [--split test] [--num_per_level 100] ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from scipy.stats import spearmanr

from adaptive_pause.modeling import AdaptivePauseModel
from adaptive_pause.tasks import get_task
from adaptive_pause.tasks.urgency_phrases import LEVELS, UrgencyPhraseBank, level_urgency


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    model = AdaptivePauseModel.from_pretrained(args.run_dir)
    task = get_task(args.task)
    bank = UrgencyPhraseBank(args.phrase_seed)
    n = args.num_per_level * LEVELS
    examples = bank.examples([task], args.split, n, args.seed, args.placement)
    kwargs = dict(max_new_tokens=args.max_new_tokens, max_pauses=args.max_pauses,
                  max_pauses_total=args.max_pauses_total, first_token_pauses_only=args.first_token_pauses_only)
    rows = {"auto": [], "explicit": []}
    for start in range(0, n, args.batch_size):
        chunk = examples[start:start + args.batch_size]
        prompts = [e.prompt for e in chunk]
        for mode, urgency in (("auto", "auto"), ("explicit", [e.urgency for e in chunk])):
            out = model.generate(prompts, urgency=urgency, **kwargs)
            for i, e in enumerate(chunk):
                rows[mode].append({"level": e.level, "pauses": out.pauses[i], "urgency_used": out.urgency_used[i],
                                   "estimate": out.urgency_estimated[i],
                                   "score": task.score(out.texts[i], e.answer)})
    table = []
    for level in range(LEVELS):
        line = {"level": level, "urgency": level_urgency(level)}
        for mode, records in rows.items():
            mine = [r for r in records if r["level"] == level]
            line[f"{mode}/pauses"] = sum(r["pauses"] for r in mine) / len(mine)
            line[f"{mode}/accuracy"] = sum(r["score"] for r in mine) / len(mine)
        line["auto/estimate"] = sum(r["estimate"] for r in rows["auto"] if r["level"] == level) / args.num_per_level
        table.append(line)
    levels = [r["level"] for r in rows["auto"]]
    estimates = [r["estimate"] for r in rows["auto"]]
    summary = {
        "spearman_level_pauses": float(spearmanr([t["level"] for t in table], [t["auto/pauses"] for t in table])
                                       .statistic),
        "spearman_level_pauses_explicit": float(spearmanr([t["level"] for t in table],
                                                          [t["explicit/pauses"] for t in table]).statistic),
        "spearman_level_pauses_per_prompt": float(spearmanr(levels, [r["pauses"] for r in rows["auto"]]).statistic),
        "spearman_level_estimate": float(spearmanr(levels, estimates).statistic),
        "mae": sum(abs(e - level_urgency(lv)) for e, lv in zip(estimates, levels)) / len(levels),
    }
    return {"config": vars(args), "table": table, **summary}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run directory with model/, controller/ and urgency/")
    parser.add_argument("--task", default="addition:1-3", help="the task whose prompts carry the phrases")
    parser.add_argument("--split", default="test", help="phrase-bank split (held out: validation or test)")
    parser.add_argument("--placement", default="before", help="before | after | any")
    parser.add_argument("--phrase_seed", type=int, default=0, help="the phrase bank's split seed (as in training)")
    parser.add_argument("--seed", type=int, default=12345, help="seed of the prompts")
    parser.add_argument("--num_per_level", type=int, default=100, help="prompts per level")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--max_new_tokens", type=int, default=5)
    parser.add_argument("--max_pauses", type=int, default=16)
    parser.add_argument("--max_pauses_total", type=int, default=16)
    parser.add_argument("--first_token_pauses_only", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/urgency_auto.json")
    args = parser.parse_args(argv)
    result = run(args)
    print(f"{'level':>5} {'u':>5} {'estimate':>8} {'pauses auto':>11} {'pauses explicit':>15} "
          f"{'acc auto':>8} {'acc explicit':>12}")
    for t in result["table"]:
        print(f"{t['level']:>5} {t['urgency']:>5.2f} {t['auto/estimate']:>8.3f} {t['auto/pauses']:>11.2f} "
              f"{t['explicit/pauses']:>15.2f} {t['auto/accuracy']:>8.3f} {t['explicit/accuracy']:>12.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"urgency_auto: spearman_level_pauses={result['spearman_level_pauses']:.3f} "
          f"spearman_level_estimate={result['spearman_level_estimate']:.3f} mae={result['mae']:.3f} "
          f"spearman_level_pauses_explicit={result['spearman_level_pauses_explicit']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
