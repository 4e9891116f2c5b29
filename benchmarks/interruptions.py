"""Interruptions on the embedded default: train with them, then interrupt held-out answers for real.

Per seed: pause-pretraining from scratch and LoRA finetuning on `addition` + `interrupt` (the demo's model
shape and pause regime, scaled down), a controller trained by PPO on uninterrupted additions (it reads the
urgency an urgency interruption sets), then `eval.interruptions.evaluate_interruptions` on held-out
phrasings (the test templates): per variant the accuracy after the interruption, irrelevant (and urgency)
interruptions that changed an otherwise-correct answer, modifications followed where the uninterrupted answer
is right, replacement accuracy beside the new request asked uninterrupted, and mean pauses after "hurry up"
vs "take your time". Prints a table (mean and spread over seeds), writes JSON, and ends with one
`interruptions: key=value ...` line.

usage: PYTHONPATH=. python benchmarks/interruptions.py --seeds 0 1 2 [--out DIR] [--pretrain_steps N] ...
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from statistics import mean, pstdev

import torch

from adaptive_pause.eval.interruptions import evaluate_interruptions, summarise
from adaptive_pause.eval.tables import markdown_table
from adaptive_pause.modeling import AdaptivePauseModel, ModelConfig
from adaptive_pause.ppo.config import PPOConfig
from adaptive_pause.ppo.trainer import train as train_controller
from adaptive_pause.tasks import get_task
from adaptive_pause.tasks.interruptions import VARIANTS
from adaptive_pause.training.finetune import FinetuneConfig, run_finetune
from adaptive_pause.training.pretrain import PretrainConfig, run_pretrain


def train_seed(args, seed: int, root: Path) -> Path:
    tasks = [f"addition:{args.digits}", f"interrupt:{args.digits}"]
    common = dict(tasks=tasks, batch_size=args.batch_size, seed=seed, progress=False, log_every=100, overwrite=True)
    model = ModelConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=256,
                        position_numbering="slotted", pause_slots=args.max_pauses)
    run_pretrain(PretrainConfig(output_dir=str(root / "pretrain"), model=model, pause_placement="answer",
                                max_pauses=args.max_pauses, max_steps=args.pretrain_steps, learning_rate=3e-3,
                                warmup_steps=min(100, args.pretrain_steps // 10), **common))
    run_finetune(FinetuneConfig(output_dir=str(root / "finetune"), base_model=str(root / "pretrain"),
                                max_pauses=args.max_pauses, max_steps=args.finetune_steps, learning_rate=1e-3,
                                warmup_steps=min(10, args.finetune_steps // 10), **common))
    train_controller(PPOConfig(output_dir=str(root / "controller"), env="lm", model_run_dir=str(root / "finetune"),
                               tasks=[f"addition:{args.digits}"], max_new_tokens=args.max_new_tokens,
                               max_pauses=args.max_pauses, max_pauses_total=args.max_pauses,
                               first_token_pauses_only=True, iterations=args.controller_iterations,
                               episodes_per_iteration=256, initial_pause_prob=0.3, seed=seed, progress=False,
                               overwrite=True))
    return root / "controller"


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    per_seed = {}
    for seed in args.seeds:
        start = time.perf_counter()
        run_dir = train_seed(args, seed, out / f"seed{seed}")
        trained_s = time.perf_counter() - start
        model = AdaptivePauseModel.from_pretrained(run_dir)
        task = get_task(f"interrupt:{args.digits}")
        examples = task.examples(args.num_examples, seed=10_000 + seed, split="test")  # held-out phrasings
        records = evaluate_interruptions(model, task, examples, urgency=args.urgency,
                                         max_new_tokens=args.max_new_tokens, max_pauses=args.max_pauses,
                                         first_token_pauses_only=True)
        per_seed[seed] = {"by_variant": summarise(records), "train_s": trained_s,
                          "eval_s": time.perf_counter() - start - trained_s}
        print(f"seed {seed}: trained in {trained_s:.0f} s; " + json.dumps(per_seed[seed]["by_variant"]), flush=True)
        partial = Path(args.json).with_suffix(".partial.json")  # the seeds done so far, should a later one stop
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps({"args": vars(args), "per_seed": per_seed}, indent=1))
    return per_seed


def figure(per_seed: dict, variant: str, key: str) -> list[float]:
    values = [s["by_variant"].get(variant, {}).get(key) for s in per_seed.values()]
    return [v for v in values if v is not None]


def cell(values: list[float], digits: int = 3) -> str:
    if not values:
        return "-"
    return f"{mean(values):.{digits}f}" + (f" +- {pstdev(values):.{digits}f}" if len(values) > 1 else "")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", default="runs/bench_interruptions")
    parser.add_argument("--json", default="benchmarks/results/interruptions.json")
    parser.add_argument("--digits", default="1-2", help="addition digits (the task's difficulty range)")
    parser.add_argument("--pretrain_steps", type=int, default=1500)
    parser.add_argument("--finetune_steps", type=int, default=200)
    parser.add_argument("--controller_iterations", type=int, default=150)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--max_pauses", type=int, default=4)
    parser.add_argument("--max_new_tokens", type=int, default=5)
    parser.add_argument("--num_examples", type=int, default=700)
    parser.add_argument("--urgency", type=float, default=0.5, help="urgency before any interruption")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    per_seed = run(args)
    keys = [("n", "n", 0), ("accuracy", "accuracy after", 3), ("plain_accuracy", "uninterrupted acc", 3),
            ("changed_of_correct", "changed of correct", 3), ("followed_of_correct", "followed of correct", 3),
            ("new_request_plain_accuracy", "new request uninterrupted", 3), ("pauses_after", "pauses after", 2)]
    rows = [[variant] + [cell(figure(per_seed, variant, key), d) for key, _, d in keys] for variant in VARIANTS]
    print(f"interruptions: seeds={args.seeds} digits={args.digits} held-out phrasings (test templates); "
          "mean +- spread over seeds")
    print(markdown_table(["variant"] + [label for _, label, _ in keys], rows))
    irrelevant = figure(per_seed, "irrelevant", "changed_of_correct")
    modified = [mean(v) for v in zip(*(figure(per_seed, m, "followed_of_correct") for m in ("reverse", "plus_one")))]
    replace = figure(per_seed, "replace", "accuracy")
    replace_plain = figure(per_seed, "replace", "new_request_plain_accuracy")
    hurry, slow = figure(per_seed, "hurry", "pauses_after"), figure(per_seed, "slow", "pauses_after")
    cancel = figure(per_seed, "cancel", "accuracy")
    summary = {"seeds": args.seeds, "irrelevant_changed": mean(irrelevant) if irrelevant else None,
               "modify_followed": mean(modified) if modified else None,
               "replace_accuracy": mean(replace) if replace else None,
               "replace_plain_accuracy": mean(replace_plain) if replace_plain else None,
               "cancelled": mean(cancel) if cancel else None,
               "pauses_after_hurry": mean(hurry) if hurry else None, "pauses_after_slow": mean(slow) if slow else None}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"args": vars(args), "summary": summary, "per_seed": per_seed}, indent=1))
    print(f"wrote {args.json}")
    print("interruptions: " + " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}".replace(" ", "")
                                       for k, v in summary.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
