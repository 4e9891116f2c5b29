"""The pause regime: a task + recipe where extra pauses at inference pay (issue 3).

For each seed, trains (from scratch, with the project's own stages) a pause model and an
equal-compute no-pause control, then measures exact-match accuracy (greedy decoding, via
`evaluation.greedy_correct`) by k pauses before the answer and by difficulty bucket.

- pause model: `pretrain` with regime_pretrain.yaml, then `finetune` with regime_finetune.yaml
  (skipped when the finetune config has max_steps 0 or --no_finetune is given);
- control: the same two stages, the same architecture, numbering, steps, seeds and data, with
  no pauses (pause_placement 'answer' with max_pauses 0, or pause_rate 0; finetune max_pauses 0),
  evaluated at k = 0.

Prints the table (mean and min..max over seeds), writes JSON, and ends with
`pause_regime: task=NAME best_k=K gain_vs_k0=X gain_vs_control=Y hard_over_easy=Z`:
gains in accuracy points at the best k (by mean over seeds), means over seeds;
hard_over_easy = gain vs k=0 of the hardest bucket / gain vs k=0 of the easiest bucket, the
denominator floored at 1 point so that the ratio stays finite when the easy bucket gains nothing.

Usage: python benchmarks/pause_regime.py [--seeds 0 1 2] [--workers 2] [--out runs/pause_regime]
       [--pretrain key=value ...] [--finetune key=value ...]   (overrides, for exploration)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from adaptive_pause.eval.tables import markdown_table

import yaml

ROOT = Path(__file__).resolve().parents[1]
KS = [0, 1, 2, 4, 8, 16]


def _parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key] = yaml.safe_load(value)
    return out


def _train_and_eval(job: dict) -> dict:
    """One (seed, arm) job in its own process: pretrain, finetune, evaluate. Returns accuracies."""
    import torch

    torch.set_num_threads(job["threads"])
    from adaptive_pause.config import from_dict
    from adaptive_pause.eval.eval_pauses import greedy_correct, load_run
    from adaptive_pause.tasks import get_task
    from adaptive_pause.training.finetune import FinetuneConfig, run_finetune
    from adaptive_pause.training.pretrain import PretrainConfig, run_pretrain

    out = Path(job["out"])
    start = time.time()
    pre = from_dict(PretrainConfig, {**job["pretrain"], "output_dir": str(out / "pretrain"), "seed": job["seed"],
                                     "progress": False})
    run_pretrain(pre)
    run_dir = out / "pretrain"
    if job["finetune"] is not None and job["finetune"].get("max_steps", 0) > 0:
        ft = from_dict(FinetuneConfig, {**job["finetune"], "output_dir": str(out / "finetune"),
                                        "base_model": str(run_dir), "seed": job["seed"], "progress": False})
        run_finetune(ft)
        run_dir = out / "finetune"
    train_s = time.time() - start
    run = load_run(run_dir)
    results = {}
    for spec in job["tasks"]:
        examples = get_task(spec).examples(job["num_examples"], job["eval_seed"])
        difficulty = torch.tensor([e.difficulty for e in examples])
        by_k = {}
        for k in job["ks"]:
            correct = greedy_correct(run, examples, k, batch_size=250).float()
            by_k[k] = {"all": correct.mean().item(),
                       "by_difficulty": {int(d): correct[difficulty == d].mean().item()
                                         for d in difficulty.unique()}}
        results[spec] = {"n_by_difficulty": {int(d): int((difficulty == d).sum()) for d in difficulty.unique()},
                         "by_k": by_k}
    return {"seed": job["seed"], "arm": job["arm"], "results": results, "train_s": train_s,
            "total_s": time.time() - start}


def control_overrides(pretrain: dict) -> dict:
    """The no-pause control of a pretrain config: same everything, zero pauses."""
    if pretrain.get("pause_placement", "random") == "answer":
        return {**pretrain, "max_pauses": 0, "k_weights": None}
    return {**pretrain, "pause_rate": 0.0}


def _stats(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values), "values": values}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain_config", default=str(ROOT / "scripts/configs/regime_pretrain.yaml"))
    parser.add_argument("--finetune_config", default=str(ROOT / "scripts/configs/regime_finetune.yaml"))
    parser.add_argument("--no_finetune", action="store_true", help="pretrain stage only")
    parser.add_argument("--pretrain", nargs="*", default=[], help="pretrain overrides key=value")
    parser.add_argument("--finetune", nargs="*", default=[], help="finetune overrides key=value")
    parser.add_argument("--no_control", action="store_true", help="exploration: train the pause model only")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2, help="parallel training processes (1 thread each)")
    parser.add_argument("--num_examples", type=int, default=1000, help="held-out examples per task")
    parser.add_argument("--eval_seed", type=int, default=1_000_003)
    parser.add_argument("--out", default=str(ROOT / "runs/pause_regime"))
    parser.add_argument("--json", default=None, help="JSON output (default OUT/pause_regime.json)")
    args = parser.parse_args(argv)

    started = time.time()
    pretrain = {**(yaml.safe_load(Path(args.pretrain_config).read_text()) or {}), **_parse_overrides(args.pretrain)}
    finetune = None
    if not args.no_finetune:
        finetune = {**(yaml.safe_load(Path(args.finetune_config).read_text()) or {}),
                    **_parse_overrides(args.finetune)}
    for cfg in (pretrain, finetune):
        if cfg is not None:
            for key in ("output_dir", "base_model", "seed"):
                cfg.pop(key, None)
    tasks = pretrain["tasks"]
    if finetune is not None and finetune.get("tasks", tasks) != tasks:
        raise ValueError(f"pretrain and finetune configs train different tasks: {tasks} vs {finetune['tasks']}")
    pause_slots = pretrain.get("pause_slots", 16)
    ks = [k for k in KS if k <= pause_slots]

    jobs = []
    for seed in args.seeds:
        common = dict(seed=seed, tasks=tasks, num_examples=args.num_examples, eval_seed=args.eval_seed, threads=1)
        jobs.append({**common, "arm": "pause", "ks": ks, "out": f"{args.out}/seed{seed}/pause",
                     "pretrain": pretrain, "finetune": finetune})
        if args.no_control:
            continue
        jobs.append({**common, "arm": "control", "ks": [0], "out": f"{args.out}/seed{seed}/control",
                     "pretrain": control_overrides(pretrain),
                     "finetune": None if finetune is None else {**finetune, "max_pauses": 0, "k_weights": None}})
    if args.workers > 1:
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            done = list(pool.map(_train_and_eval, jobs))
    else:
        done = [_train_and_eval(job) for job in jobs]

    report = {"pretrain": pretrain, "finetune": finetune, "seeds": args.seeds, "ks": ks, "tasks": {}}
    summary_line = None
    for spec in tasks:
        pause = {r["seed"]: r["results"][spec] for r in done if r["arm"] == "pause"}
        control = {r["seed"]: r["results"][spec] for r in done if r["arm"] == "control"}
        if not control:  # exploration without a control: report k=0 of the pause model in its place
            control = {s: {"by_k": {0: res["by_k"][0]}} for s, res in pause.items()}
        buckets = sorted(next(iter(pause.values()))["n_by_difficulty"])
        counts = next(iter(pause.values()))["n_by_difficulty"]

        def acc(res, k, bucket):
            entry = res["by_k"][k]
            return entry["all"] if bucket == "all" else entry["by_difficulty"][bucket]

        table = {}
        for bucket in ["all"] + buckets:
            row = {f"k={k}": _stats([100 * acc(pause[s], k, bucket) for s in args.seeds]) for k in ks}
            row["control"] = _stats([100 * acc(control[s], 0, bucket) for s in args.seeds])
            table[str(bucket)] = row
        best_k = max(ks, key=lambda k: table["all"][f"k={k}"]["mean"])
        per_seed_gain_k0 = [100 * (acc(pause[s], best_k, "all") - acc(pause[s], 0, "all")) for s in args.seeds]
        per_seed_gain_ctl = [100 * (acc(pause[s], best_k, "all") - acc(control[s], 0, "all")) for s in args.seeds]
        gain_bucket = {b: statistics.fmean(100 * (acc(pause[s], best_k, b) - acc(pause[s], 0, b))
                                           for s in args.seeds) for b in buckets}
        easy, hard = buckets[0], buckets[-1]
        hard_over_easy = gain_bucket[hard] / max(gain_bucket[easy], 1.0)

        head = ["difficulty", "n"] + [f"k={k}" for k in ks] + ["control k=0"]
        rows = []
        for bucket, row in table.items():
            n = args.num_examples if bucket == "all" else counts[int(bucket)]
            cells = [f"{row[c]['mean']:.1f} ({row[c]['min']:.0f}-{row[c]['max']:.0f})"
                     for c in [f"k={k}" for k in ks] + ["control"]]
            rows.append([bucket, str(n)] + cells)
        print(f"\ntask {spec}: exact-match accuracy (%), mean over seeds {args.seeds} (min-max)")
        print(markdown_table(head, rows))
        print(f"best k={best_k}: gain vs k=0 per seed {[round(g, 1) for g in per_seed_gain_k0]}, "
              f"gain vs control per seed {[round(g, 1) for g in per_seed_gain_ctl]}, "
              f"gain vs k=0 by bucket {{{', '.join(f'{b}: {g:.1f}' for b, g in gain_bucket.items())}}}")
        report["tasks"][spec] = {
            "table": table, "best_k": best_k, "gain_vs_k0": _stats(per_seed_gain_k0),
            "gain_vs_control": _stats(per_seed_gain_ctl), "gain_vs_k0_by_bucket": gain_bucket,
            "hard_over_easy": hard_over_easy,
        }
        name = spec.split(":")[0]
        summary_line = (f"pause_regime: task={name} best_k={best_k} "
                        f"gain_vs_k0={statistics.fmean(per_seed_gain_k0):.1f} "
                        f"gain_vs_control={statistics.fmean(per_seed_gain_ctl):.1f} "
                        f"hard_over_easy={hard_over_easy:.1f}")
    report["runs"] = done
    report["wall_s"] = time.time() - started
    out_json = Path(args.json) if args.json else Path(args.out) / "pause_regime.json"
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(report, indent=2) + "\n")
    print("train+eval per job (s): " + ", ".join(f"{r['arm']}{r['seed']}={r['total_s']:.0f}" for r in done))
    print(f"wall time {report['wall_s']:.0f} s; wrote {out_json}")
    print(summary_line)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
