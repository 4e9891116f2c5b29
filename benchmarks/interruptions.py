"""Interruptions on the embedded default: train with them, then interrupt held-out answers for real.

Per seed: pause-pretraining from scratch and LoRA finetuning on `addition` + `interrupt` (the demo's model
shape and pause regime, scaled down), a controller trained by PPO on uninterrupted additions (it reads the
urgency an urgency interruption sets), then `eval.interruptions.evaluate_interruptions` on held-out
phrasings (the test templates): per variant the accuracy after the interruption, irrelevant (and urgency)
interruptions that changed an otherwise-correct answer, modifications followed where the uninterrupted answer
is right, replacement accuracy beside the new request asked uninterrupted, and mean pauses after "hurry up"
vs "take your time" (under the learned controller, and under the confidence baseline, whose threshold reads
urgency). The same accuracies on the training phrasings (fresh examples) separate "learned what the
interruption asks" from "generalises to a phrasing never seen". Prints a table (mean and spread over seeds),
writes JSON, and ends with one `interruptions: key=value ...` line. `--bare_pretrain_steps N` pretrains as the
demo does: bare sums first, then the mix continued from that model (the setting where pauses pay, for the
"hurry up" / "take your time" figures). `--base_model DIR` runs the same task in chat form on a pretrained base
(issue 16, item 4; e.g. SmolLM2-135M-Instruct from `adaptive-pause import-gguf`): no pretraining, LoRA
finetuning on the mix, and with `--controller_iterations 0` decoding with `--fixed_k` pauses (its pauses after
"hurry up" then come from the confidence baseline alone).

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
from policies import ConfidenceThreshold, FixedPauses


def train_seed(args, seed: int, root: Path) -> Path:
    tasks = [f"addition:{args.digits}", f"interrupt:{args.digits}", *(args.extra_tasks or [])]
    common = dict(tasks=tasks, batch_size=args.batch_size, seed=seed, progress=False, log_every=args.log_every,
                  overwrite=True)
    if args.continue_from:
        # a second finetuning stage: the earlier run's adapter trained further on this mix (its base and format)
        base, chat = str(Path(args.continue_from) / f"seed{seed}" / "finetune"), dict(continue_adapter=True)
    elif args.base_model:
        # a pretrained base (issue 16, item 4): no pretraining; LoRA-finetuned on the same mix in its chat format
        base, chat = args.base_model, dict(prompt_format=args.prompt_format, system_prompt=args.system_prompt)
    else:
        base, chat = str(root / "pretrain"), {}
        pretrain_from_scratch(args, common, root)
    run_finetune(FinetuneConfig(output_dir=str(root / "finetune"), base_model=base, max_pauses=args.max_pauses,
                                max_steps=args.finetune_steps, learning_rate=args.finetune_lr, lora_r=args.lora_r,
                                lora_alpha=2.0 * args.lora_r, warmup_steps=min(10, args.finetune_steps // 10),
                                **chat, **common))
    if not args.controller_iterations:
        return root / "finetune"  # evaluated with --fixed_k pauses
    train_controller(PPOConfig(output_dir=str(root / "controller"), env="lm", model_run_dir=str(root / "finetune"),
                               tasks=[f"addition:{args.digits}"], max_new_tokens=args.max_new_tokens,
                               max_pauses=args.max_pauses, max_pauses_total=args.max_pauses,
                               first_token_pauses_only=True, iterations=args.controller_iterations,
                               episodes_per_iteration=args.episodes, initial_pause_prob=args.initial_pause_prob,
                               prompt_summary=args.prompt_summary, seed=seed, progress=False, overwrite=True))
    return root / "controller"


def pretrain_from_scratch(args, common: dict, root: Path) -> None:
    """The embedded default's pause-pretraining into root/pretrain (the demo's model shape)."""
    model = ModelConfig(hidden_size=args.hidden_size, num_layers=args.num_layers, num_heads=args.num_heads,
                        intermediate_size=4 * args.hidden_size, position_numbering="slotted",
                        pause_slots=args.max_pauses)
    pretrain = dict(pause_placement="answer", max_pauses=args.max_pauses, max_steps=args.pretrain_steps,
                    learning_rate=args.pretrain_lr, warmup_steps=min(100, args.pretrain_steps // 10))
    if args.bare_pretrain_steps:
        # the demo's two-stage recipe: bare sums first (pauses come to pay), then the same sums beside the
        # interruption task, continued from that model (the markers are added by mean-resizing there)
        run_pretrain(PretrainConfig(output_dir=str(root / "pretrain_bare"), model=model,
                                    **{**common, "tasks": [f"addition:{args.digits}"]},
                                    **{**pretrain, "max_steps": args.bare_pretrain_steps,
                                       "learning_rate": args.bare_pretrain_lr}))
        model = ModelConfig(name_or_path=str(root / "pretrain_bare"))
    run_pretrain(PretrainConfig(output_dir=str(root / "pretrain"), model=model, **pretrain, **common))


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    per_seed = {}
    decode = dict(max_new_tokens=args.max_new_tokens, max_pauses=args.max_pauses, first_token_pauses_only=True,
                  batch_size=args.eval_batch_size)
    learned = bool(args.controller_iterations)
    stage, last_part = ("controller", "controller") if learned else ("finetune", "adapter")  # what --reuse needs
    for seed in args.seeds:
        start = time.perf_counter()
        run_dir = out / f"seed{seed}" / stage
        if not (args.reuse and (run_dir / last_part).is_dir()):
            run_dir = train_seed(args, seed, out / f"seed{seed}")
        trained_s = time.perf_counter() - start
        model = AdaptivePauseModel.from_pretrained(run_dir)
        task = get_task(f"interrupt:{args.digits}")
        examples = task.examples(args.num_examples, seed=10_000 + seed, split="test")  # held-out phrasings
        seen = task.examples(args.num_examples, seed=20_000 + seed, split="train")  # training phrasings
        policy = None if learned else FixedPauses(args.fixed_k)  # None: the run's learned controller
        by_variant = summarise(evaluate_interruptions(model, task, examples, urgency=args.urgency, policy=policy,
                                                      **decode))
        for variant, row in summarise(evaluate_interruptions(model, task, seen, urgency=args.urgency, policy=policy,
                                                             **decode)).items():
            by_variant[variant]["accuracy_train_phrasings"] = row["accuracy"]
        if not learned:  # fixed k pauses: what follows an interruption is set by k, not by its words
            for row in by_variant.values():
                row.pop("pauses_after")
        urgent = [e for e in examples if e.variant in ("hurry", "slow")]
        confident = summarise(evaluate_interruptions(model, task, urgent, urgency=args.urgency,
                                                     policy=ConfidenceThreshold(args.confidence), **decode))
        for variant, row in confident.items():
            by_variant[variant]["pauses_after_confidence"] = row["pauses_after"]
        per_seed[seed] = {"by_variant": by_variant, "train_s": trained_s, "reused": args.reuse,
                          "eval_s": time.perf_counter() - start - trained_s}
        print(f"seed {seed}: trained in {trained_s:.0f} s; " + json.dumps(per_seed[seed]["by_variant"]), flush=True)
        partial = out / "partial.json"  # the seeds done so far, should a later one stop
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps({"args": vars(args), "per_seed": per_seed}, indent=1))
    return per_seed


def merge(args) -> dict:
    """The per-seed results of earlier runs, in file order; their training settings must agree."""
    per_seed, first = {}, None
    for path in args.merge:
        try:
            written = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise SystemExit(f"--merge: {path} is not this benchmark's JSON ({type(error).__name__}: {error})")
        if not isinstance(written, dict) or not {"args", "per_seed"} <= set(written):
            raise SystemExit(f"--merge: {path} is not this benchmark's JSON (no 'args' and 'per_seed')")
        settings = {k: v for k, v in written["args"].items() if k not in ("seeds", "json", "out", "reuse", "threads")}
        if first is None:
            first = settings
        elif settings != first:
            changed = sorted(k for k in set(settings) | set(first) if settings.get(k) != first.get(k))
            raise SystemExit(f"--merge: {path} was run with other settings ({', '.join(changed)})")
        for seed, result in written["per_seed"].items():
            if int(seed) in per_seed:
                raise SystemExit(f"--merge: seed {seed} appears twice ({path})")
            per_seed[int(seed)] = result
    vars(args).update({k: v for k, v in first.items() if k != "merge"}, seeds=list(per_seed))
    return per_seed


def figure(per_seed: dict, variant: str, key: str) -> list[float]:
    values = [s["by_variant"].get(variant, {}).get(key) for s in per_seed.values()]
    return [v for v in values if v is not None]


def cell(values: list[float], digits: int = 3) -> str:
    if not values:
        return "-"
    return f"{mean(values):.{digits}f}" + (f" +- {pstdev(values):.{digits}f}" if len(values) > 1 else "")


def check_args(parser, args) -> None:
    """Refuse a setting that would fail, or be ignored, only after the training it waits for."""
    if args.merge:
        return
    for spec in args.extra_tasks or []:
        try:
            get_task(spec)
        except ValueError as error:
            parser.error(f"--extra_tasks: {error}")
    if args.continue_from and Path(args.continue_from).resolve() == Path(args.out).resolve():
        parser.error("--continue_from: must not be --out (the runs it continues would be overwritten)")
    for seed in args.seeds if args.continue_from else []:
        if not (Path(args.continue_from) / f"seed{seed}" / "finetune" / "adapter").is_dir():
            parser.error(f"--continue_from: {args.continue_from}/seed{seed}/finetune has no adapter/ (a finished "
                         "finetune run of this benchmark is needed for each seed)")
    if args.base_model and not Path(args.base_model).is_dir():
        parser.error(f"--base_model: {args.base_model} is not a directory (import a GGUF with "
                     "`adaptive-pause import-gguf FILE --output_dir DIR`, or pass an HF model directory)")
    if args.fixed_k is not None and args.controller_iterations:
        parser.error("--fixed_k: only without a controller (--controller_iterations 0); the controller sets the pauses")
    if args.fixed_k is None and not args.controller_iterations:
        args.fixed_k = 0
    if args.fixed_k is not None and not 0 <= args.fixed_k <= args.max_pauses:
        parser.error(f"--fixed_k: must be in 0..--max_pauses ({args.max_pauses}), got {args.fixed_k}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", default="runs/bench_interruptions")
    parser.add_argument("--json", default="benchmarks/results/interruptions.json")
    parser.add_argument("--digits", default="1-2", help="addition digits (the task's difficulty range)")
    parser.add_argument("--pretrain_steps", type=int, default=4000)
    parser.add_argument("--pretrain_lr", type=float, default=3e-3)
    parser.add_argument("--bare_pretrain_steps", type=int, default=0,
                        help="pretrain on bare additions this many steps first, then on the mix (the demo's recipe)")
    parser.add_argument("--bare_pretrain_lr", type=float, default=3e-3)
    parser.add_argument("--hidden_size", type=int, default=64, help="the model's width (the demo's: 64)")
    parser.add_argument("--num_layers", type=int, default=2, help="the model's depth (the demo's: 2)")
    parser.add_argument("--num_heads", type=int, default=2, help="attention heads (the demo's: 2)")
    parser.add_argument("--base_model", default=None,
                        help="a pretrained HF model directory (e.g. from `adaptive-pause import-gguf`): "
                             "no pretraining, LoRA finetuning on the same mix in --prompt_format")
    parser.add_argument("--prompt_format", default="chat", choices=["raw", "chat", "auto"],
                        help="with --base_model: how prompts are shown to it")
    parser.add_argument("--system_prompt", default="Answer with the number only.",
                        help="with --base_model in chat format: the system message (the real-model recipe's)")
    parser.add_argument("--extra_tasks", nargs="+", metavar="SPEC",
                        help="task specs added to the training mix (tasks are mixed uniformly), e.g. "
                             "interrupt@reverse+plus_one:1-2 to give those variants more weight")
    parser.add_argument("--continue_from", metavar="OUT",
                        help="no pretraining: train the adapter of OUT/seedN/finetune (an earlier --out) "
                             "--finetune_steps more on this mix; --lora_r must be its")
    parser.add_argument("--finetune_steps", type=int, default=200)
    parser.add_argument("--finetune_lr", type=float, default=1e-3)
    parser.add_argument("--lora_r", type=int, default=16, help="LoRA rank (alpha = 2 r)")
    parser.add_argument("--controller_iterations", type=int, default=150,
                        help="controller PPO iterations; 0: no controller, the finetuned LM decodes with --fixed_k")
    parser.add_argument("--fixed_k", type=int, default=None,
                        help="pauses before the answer without a controller (0..--max_pauses; default 0)")
    parser.add_argument("--episodes", type=int, default=256, help="PPO episodes per iteration")
    parser.add_argument("--initial_pause_prob", type=float, default=0.3)
    parser.add_argument("--prompt_summary", action="store_true", help="the controller reads the prompt's mean state")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--max_pauses", type=int, default=4)
    parser.add_argument("--max_new_tokens", type=int, default=5)
    parser.add_argument("--num_examples", type=int, default=700)
    parser.add_argument("--urgency", type=float, default=0.5, help="urgency before any interruption")
    parser.add_argument("--confidence", type=float, default=0.99,
                        help="confidence baseline's threshold at u=0 (0 at u=1) for the pauses after hurry/slow")
    parser.add_argument("--reuse", action="store_true", help="evaluate OUT/seedN/controller where it exists")
    parser.add_argument("--eval_batch_size", type=int, default=256)
    parser.add_argument("--log_every", type=int, default=100, help="training log interval (steps)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="report the seeds of these JSONs (one per seed, run as separate processes) as one table; "
                             "trains and evaluates nothing")
    args = parser.parse_args(argv)
    check_args(parser, args)
    per_seed = merge(args) if args.merge else run(args)
    keys = [("n", "n", 0), ("plain_accuracy", "uninterrupted", 3), ("accuracy", "after (held-out phrasings)", 3),
            ("accuracy_train_phrasings", "after (training phrasings)", 3),
            ("changed_of_correct", "changed of correct", 3), ("followed_of_correct", "followed of correct", 3),
            ("new_request_plain_accuracy", "new request alone", 3), ("pauses_after", "pauses after (learned)", 2),
            ("pauses_after_confidence", f"pauses after (confidence:{args.confidence})", 2)]
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
    hurry_c = figure(per_seed, "hurry", "pauses_after_confidence")
    slow_c = figure(per_seed, "slow", "pauses_after_confidence")
    seen = {v: figure(per_seed, v, "accuracy_train_phrasings") for v in VARIANTS}
    summary = {"seeds": args.seeds, "irrelevant_changed": mean(irrelevant) if irrelevant else None,
               "modify_followed": mean(modified) if modified else None,
               "replace_accuracy": mean(replace) if replace else None,
               "replace_plain_accuracy": mean(replace_plain) if replace_plain else None,
               "cancelled": mean(cancel) if cancel else None,
               "pauses_after_hurry": mean(hurry) if hurry else None, "pauses_after_slow": mean(slow) if slow else None,
               "confidence_pauses_after_hurry": mean(hurry_c) if hurry_c else None,
               "confidence_pauses_after_slow": mean(slow_c) if slow_c else None,
               **{f"{v}_train_phrasings": mean(x) for v, x in seen.items() if x}}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"args": vars(args), "summary": summary, "per_seed": per_seed}, indent=1))
    print(f"wrote {args.json}")
    print("interruptions: " + " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}".replace(" ", "")
                                       for k, v in summary.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
