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
from adaptive_pause.eval.urgency_auto import auto_table, estimator_phrases, fmt, format_auto_table
from adaptive_pause.modeling import AdaptivePauseModel
from adaptive_pause.tasks import get_task


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    model = AdaptivePauseModel.from_pretrained(args.run_dir)
    seed, blocks = estimator_phrases(args.run_dir)  # the estimator's own split, unless the flags say otherwise
    seed = seed if args.phrase_seed is None else args.phrase_seed
    blocks = blocks if args.phrase_blocks is None else args.phrase_blocks
    result = auto_table(model, get_task(args.task), args.split, args.num_per_level, seed, args.seed,
                        args.placement, args.batch_size, phrase_blocks=blocks, max_new_tokens=args.max_new_tokens,
                        max_pauses=args.max_pauses, max_pauses_total=args.max_pauses_total,
                        first_token_pauses_only=args.first_token_pauses_only)
    return {"config": vars(args), **result}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run directory with model/, controller/ and urgency/")
    parser.add_argument("--task", default="addition:1-3", help="the task whose prompts carry the phrases")
    parser.add_argument("--split", default="test", help="phrase-bank split (held out: validation or test)")
    parser.add_argument("--placement", default="before", help="before | after | any")
    parser.add_argument("--phrase_seed", type=int, default=None,
                        help="the phrase bank's split seed (default: the estimator's own, as trained)")
    parser.add_argument("--phrase_blocks", nargs="*", default=None,
                        help="the phrase bank's blocks (default: the estimator's own, as trained)")
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
    from adaptive_pause.tasks.urgency_phrases import BLOCKS

    if args.phrase_blocks is not None and not set(args.phrase_blocks) <= set(BLOCKS):
        parser.error(f"--phrase_blocks: must name blocks of {list(BLOCKS)}, got {args.phrase_blocks}")
    result = run(args)
    print(format_auto_table(result))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("urgency_auto: " + " ".join(f"{key}={fmt(result[key])}" for key in (
        "spearman_level_pauses", "spearman_level_estimate", "mae", "spearman_level_pauses_explicit")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
