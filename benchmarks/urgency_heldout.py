"""A trained urgency estimator on phrasings it never saw: the bank's held-out templates, phrasings written apart
from the bank, and a file of your own.

For a run directory with `urgency/` (after `adaptive-pause train-urgency`), task prompts carrying each phrasing
(before or after the task text, at random) go through `AdaptivePauseModel.estimate_urgency`, the path
`generate(urgency="auto")` takes. Per source: Spearman(intended level, estimate) and the mean absolute error
against level / 6, per prompt, and the mean estimate per level. Sources:
- `validation`, `test`: the phrase bank's held-out templates (split by the estimator's phrase seed);
- `apart`: `WRITTEN_APART`, phrasings no template of the bank renders;
- `--phrases FILE`: one JSON object per line, {"phrase": "...", "level": 0..6} or {"phrase": ..., "urgency": u}.

    python benchmarks/urgency_heldout.py RUN_DIR [--phrases mine.jsonl] [--per_phrase 10]

Ends with `urgency_heldout: SOURCE_spearman=R SOURCE_mae=X ...` for every source.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import torch

from adaptive_pause.tasks.jsonl import json_objects
from adaptive_pause.tasks.urgency_phrases import (
    LEVELS,
    WRITTEN_APART,
    UrgencyPhraseBank,
)


def read_phrases(path: str) -> list[tuple[float, str]]:
    """(urgency, phrase) pairs from a JSON-lines file; a clear error names the line and field at fault."""
    pairs = []
    try:
        items = list(json_objects(Path(path)))
    except (OSError, ValueError) as err:
        raise SystemExit(f"urgency_heldout: --phrases: {err}")
    for where, item in items:
        where = f"--phrases {where}"
        if not isinstance(item.get("phrase"), str) or not item["phrase"].strip():
            raise SystemExit(f"urgency_heldout: {where}: phrase: expected a non-empty string")
        if ("level" in item) == ("urgency" in item):
            raise SystemExit(f"urgency_heldout: {where}: give exactly one of level (0..{LEVELS - 1}) and urgency")
        if "level" in item:
            level = item["level"]
            if not (isinstance(level, int) and not isinstance(level, bool) and 0 <= level < LEVELS):
                raise SystemExit(f"urgency_heldout: {where}: level: expected an integer in 0..{LEVELS - 1}, "
                                 f"got {level!r}")
            urgency = level / (LEVELS - 1)
        else:
            urgency = item["urgency"]
            if not (isinstance(urgency, (int, float)) and not isinstance(urgency, bool) and 0 <= urgency <= 1):
                raise SystemExit(f"urgency_heldout: {where}: urgency: expected a number in [0, 1], got {urgency!r}")
        pairs.append((float(urgency), item["phrase"].strip()))
    if not pairs:
        raise SystemExit(f"urgency_heldout: --phrases {path}: no phrases")
    return pairs


def phrased(pairs: list[tuple[float, str]], task, per_phrase: int, seed: str) -> tuple[list[str], list[float]]:
    rng = random.Random(seed)
    prompts, targets = [], []
    for urgency, phrase in pairs:
        for _ in range(per_phrase):
            prompt = task.sample(rng).prompt
            prompts.append(f"{phrase} {prompt}" if rng.random() < 0.5 else f"{prompt} {phrase}")
            targets.append(urgency)
    return prompts, targets


def figures(estimate: torch.Tensor, target: list[float]) -> dict:
    from scipy.stats import spearmanr

    target_t = torch.tensor(target, dtype=torch.float64)
    levels = sorted(set(target))
    return {"n": len(target), "spearman": float(spearmanr(target, estimate.tolist()).statistic),
            "mae": float((estimate.double() - target_t).abs().mean()),
            "mean_estimate_per_level": {f"{u:.3f}": round(float(estimate[target_t == u].mean()), 3)
                                        for u in levels}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="a run directory with model/ and urgency/")
    p.add_argument("--phrases", default=None, help="JSON lines of your own: {\"phrase\", \"level\" or \"urgency\"}")
    p.add_argument("--task", default="addition:1-3", help="the task whose prompts carry the phrases")
    p.add_argument("--per_phrase", type=int, default=10, help="prompts per written-apart or file phrase")
    p.add_argument("--num_bank", type=int, default=700,
                   help="prompts per held-out split of the bank (0: skip the bank)")
    p.add_argument("--phrase_seed", type=int, default=None,
                   help="the bank's split (default: the one the estimator was trained with)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--output", default="benchmarks/results/urgency_heldout.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from adaptive_pause.modeling import AdaptivePauseModel
    from adaptive_pause.tasks import get_task

    run = Path(args.run_dir)
    if not (run / "urgency" / "config.json").is_file():
        raise SystemExit(f"urgency_heldout: {run} has no urgency/ (train one with `adaptive-pause train-urgency`)")
    extra = json.loads((run / "urgency" / "config.json").read_text()).get("extra", {})
    phrase_seed = args.phrase_seed if args.phrase_seed is not None else int(extra.get("phrase_seed", 0))
    sources = {"apart": [(level / (LEVELS - 1), phrase) for level, phrase in WRITTEN_APART]}
    if args.phrases:
        sources["file"] = read_phrases(args.phrases)
    model = AdaptivePauseModel.from_pretrained(run)
    task = get_task(args.task)
    bank = UrgencyPhraseBank(phrase_seed)
    rows = {}
    for split in ("validation", "test") if args.num_bank > 0 else ():
        examples = bank.examples([task], split, args.num_bank, seed=7)
        estimate = model.estimate_urgency([e.prompt for e in examples])
        rows[split] = figures(estimate, [e.urgency for e in examples])
    for name, pairs in sources.items():
        prompts, targets = phrased(pairs, task, args.per_phrase, f"urgency-heldout:{name}")
        rows[name] = figures(model.estimate_urgency(prompts), targets)
    print(f"urgency estimator of {run} (phrase seed {phrase_seed}) on phrasings it never trained on")
    header = f"{'source':>10} | {'prompts':>7} | {'Spearman':>8} | {'MAE':>6} | mean estimate per intended urgency"
    print(header)
    print("-" * len(header))
    for name, r in rows.items():
        means = ", ".join(f"{u}: {m:.2f}" for u, m in r["mean_estimate_per_level"].items())
        print(f"{name:>10} | {r['n']:>7} | {r['spearman']:>8.3f} | {r['mae']:>6.3f} | {means}")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"config": vars(args), "phrase_seed": phrase_seed, "rows": rows}, indent=1) + "\n")
    print(f"wrote {output}")
    print("urgency_heldout: " + " ".join(f"{name}_spearman={r['spearman']:.3f} {name}_mae={r['mae']:.3f}"
                                         for name, r in rows.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
