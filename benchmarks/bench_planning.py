"""Fixed k, the per-step controller and the planning controller, side by side on the demo task (issue 15).

For each LM seed: the demo recipe (adaptive_pause/configs/demo_*.yaml) with the pause countdown
(`model.pause_countdown: true`), and with `--compare_countdown` the same LM without it (fixed-k accuracy of
both, teacher-forced, per k). For each PPO seed: the demo's per-step controller and a planning controller
(`controller: plan`), same recipe. Each is then decoded greedily on held-out examples at each urgency:
accuracy, mean pauses (compute), pause passes (sequential forward passes spent on pauses per answer; k pauses
prefilled together count as one: fixed k is prefilled as one chunk), forward passes per answer (the prompt
pass + pause passes + one per answer token after the first), ms per answer (batch wall time / answers), per
urgency and per difficulty. Independent units run in `--jobs` processes.

Prints a table, writes OUT/bench_planning.json and two Pareto plots, and ends with
`bench_planning: latency_ratio=X accuracy_gap_u0=Y pause_ratio_u0=Z` (means over runs): X = planning's pause
passes at u = 0 over the per-step controller's at the same accuracy (its curve over urgencies, interpolated);
Y = planning's u = 0 accuracy minus the best fixed k's, in points; Z = its mean pauses over the best k.

    python benchmarks/bench_planning.py --out runs/bench_planning --seeds 0 1 2 --lm_seeds 0 1 --jobs 6

`--step_on_plain` puts the per-step controller on each LM's twin without the countdown: a per-step decision
commits to one pause, so the countdown it feeds reads 1 at every pause, and a countdown LM never saw that run
for more than one pause (k such pauses gave 0.504-0.544 where the same k prefilled with k, ..., 1 gave up to
0.958: docs/results.md, issue 15, session 12).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from importlib import resources
from pathlib import Path

import yaml

DEMO_TASK = "addition:1-3"  # the demo configs' task


def stage_yaml(stage: str) -> dict:
    return yaml.safe_load(resources.files("adaptive_pause").joinpath(f"configs/demo_{stage}.yaml").read_text())


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)  # parallel jobs share the cores: one thread each, no oversubscription


def build_lm(out: str, seed: int, countdown: bool, pretrain_steps: int, base: str | None = None,
             pretrain_set: dict | None = None, finetune_set: dict | None = None) -> str:
    """pretrain + LoRA finetune of the demo recipe into OUT/lm{seed}[-plain]/{pre,ft}; returns the finetune run.
    With `base` (a finished demo pretrain run, no countdown): only the finetune, seeded by `seed`, with the
    countdown added there (finetune's `pause_countdown`) or not."""
    from adaptive_pause.config import from_dict
    from adaptive_pause.training.finetune import FinetuneConfig, run_finetune
    from adaptive_pause.training.pretrain import PretrainConfig, run_pretrain

    root = Path(out) / f"lm{seed}{'' if countdown else '-plain'}"
    if (root / "ft" / "adapter").is_dir():
        return str(root / "ft")  # built before (a rerun of the bench reuses it)
    if base is None:
        pre = {**stage_yaml("pretrain"), **(pretrain_set or {})}
        pre["model"] = {**pre["model"], "pause_countdown": countdown}
        run_pretrain(from_dict(PretrainConfig, {**pre, "seed": seed, "progress": False, "max_steps": pretrain_steps,
                                                "output_dir": str(root / "pre"), "overwrite": True}))
    run_finetune(from_dict(FinetuneConfig, {**stage_yaml("finetune"), **(finetune_set or {}), "seed": seed,
                                            "progress": False,
                                            "base_model": base or str(root / "pre"), "output_dir": str(root / "ft"),
                                            "pause_countdown": countdown and base is not None, "overwrite": True}))
    return str(root / "ft")


def train_controller(lm_dir: str, out: str, controller: str, seed: int, iterations: int, ppo_set: dict | None = None,
                     tag: str = "") -> str:
    """The demo's controller recipe (demo_controller.yaml) with `ppo_set` on top, into OUT/lm{s}-{controller}{tag}{seed}."""
    from adaptive_pause.config import from_dict
    from adaptive_pause.ppo.config import PPOConfig
    from adaptive_pause.ppo.trainer import train

    run = Path(out) / f"{Path(lm_dir).parent.name}-{controller}{tag}{seed}"
    if (run / "controller").is_dir() and (run / "result.json").is_file():
        return str(run)
    train(from_dict(PPOConfig, {**stage_yaml("controller"), "env": "lm", "model_run_dir": lm_dir, "seed": seed,
                                "controller": controller, "iterations": iterations, **(ppo_set or {}),
                                "output_dir": str(run), "progress": False, "overwrite": True}))
    return str(run)


def measure(model, policy, examples, task, urgency: float, chunk: bool, batch: int = 100) -> dict:
    """Greedy decoding of `examples` at one urgency: per-answer records and the totals the table reads."""
    import torch

    sweep = stage_yaml("sweep")
    rows = {"correct": [], "pauses": [], "pause_passes": [], "passes": [], "difficulty": []}
    seconds = 0.0
    for start in range(0, len(examples), batch):
        chunk_examples = examples[start:start + batch]
        t0 = time.perf_counter()
        out = model.generate([e.prompt for e in chunk_examples], urgency=urgency, policy=policy,
                             max_new_tokens=5, max_pauses=sweep["max_pauses"],
                             max_pauses_total=sweep["max_pauses_total"], first_token_pauses_only=True,
                             chunk_pauses=chunk)
        seconds += time.perf_counter() - t0
        trace = out.result.trace
        pause_passes = (trace.valid & (trace.actions == 1) & ~trace.planned).sum(1)  # a pass that starts pauses
        answer_tokens = out.result.answer_tokens
        rows["correct"] += [float(task.score(t, e.answer)) for t, e in zip(out.texts, chunk_examples)]
        rows["pauses"] += out.pauses
        rows["pause_passes"] += pause_passes.tolist()
        rows["passes"] += (1 + pause_passes + (answer_tokens - 1).clamp(min=0)).tolist()
        rows["difficulty"] += [e.difficulty for e in chunk_examples]
    n = len(examples)
    summary = {"accuracy": sum(rows["correct"]) / n, "mean_pauses": sum(rows["pauses"]) / n,
               "pause_passes": sum(rows["pause_passes"]) / n, "passes": sum(rows["passes"]) / n,
               "ms_per_answer": 1000 * seconds / n, "by_difficulty": {}}
    d = torch.tensor(rows["difficulty"])
    for level in sorted(set(rows["difficulty"])):
        sel = (d == level).nonzero().flatten().tolist()
        summary["by_difficulty"][level] = {"n": len(sel), "accuracy": sum(rows["correct"][i] for i in sel) / len(sel),
                                           "mean_pauses": sum(rows["pauses"][i] for i in sel) / len(sel)}
    summary["_pauses"], summary["_difficulty"] = rows["pauses"], rows["difficulty"]
    return summary


def evaluate(lm_dir: str, controller_dirs: dict, urgencies: list, fixed_ks: list, n: int) -> dict:
    """{policy label: {u: summary}} for fixed k (urgency-independent), and each controller at each urgency."""
    import torch

    from adaptive_pause.eval.sweep import _spearman
    from adaptive_pause.modeling import AdaptivePauseModel
    from adaptive_pause.tasks import get_task
    from policies import FixedPauses

    torch.set_num_threads(1)
    task = get_task(DEMO_TASK)
    examples = task.examples(n, 1_000_003, "test")
    results = {}
    lm = AdaptivePauseModel.from_pretrained(lm_dir)
    for k in fixed_ks:
        results[f"fixed k={k}"] = {0.0: measure(lm, FixedPauses(k), examples, task, 0.0, chunk=True)}
    for label, run in controller_dirs.items():
        model = AdaptivePauseModel.from_pretrained(run)
        results[label] = {u: measure(model, model.policy, examples, task, u, chunk=False) for u in urgencies}
        curve = results[label]
        summary = {"spearman_urgency_pauses": _spearman(urgencies, [curve[u]["mean_pauses"] for u in urgencies])}
        mid = min(urgencies, key=lambda u: abs(u - 0.5))
        summary["spearman_difficulty_pauses_u0.5"] = _spearman(curve[mid]["_difficulty"], curve[mid]["_pauses"])
        results[label]["summary"] = summary
    for curve in results.values():
        for u, s in curve.items():
            if u != "summary":
                s.pop("_pauses"), s.pop("_difficulty")
    return results


def interpolate(curve: list[tuple[float, float]], accuracy: float) -> float:
    """y at `accuracy` on a curve of (accuracy, y) points (sorted by accuracy; clamped at the ends)."""
    pts = sorted(curve)
    if accuracy <= pts[0][0]:
        return pts[0][1]
    for (a0, y0), (a1, y1) in zip(pts, pts[1:]):
        if a0 <= accuracy <= a1:
            return y0 if a1 == a0 else y0 + (y1 - y0) * (accuracy - a0) / (a1 - a0)
    return pts[-1][1]


def headline(results: dict, ppo_seed: int) -> dict:
    fixed = {int(label.split("=")[1]): curve[0.0] for label, curve in results.items() if label.startswith("fixed")}
    best_k = max(fixed, key=lambda k: (fixed[k]["accuracy"], -k))
    plan, step = results[f"plan{ppo_seed}"], results[f"step{ppo_seed}"]
    step_curve = [(s["accuracy"], s["pause_passes"]) for u, s in step.items() if u != "summary"]
    step_at = interpolate(step_curve, plan[0.0]["accuracy"])
    # Where the per-step curve never reaches the planner's accuracy, `interpolate` clamps at its end point: the
    # ratio then compares the planner with a controller that is less accurate at any latency (and is undefined
    # where that controller never pauses). Say so beside the ratio.
    step_best = max(a for a, _ in step_curve)
    return {"best_fixed_k": best_k, "best_fixed_accuracy": fixed[best_k]["accuracy"],
            "plan_accuracy_u0": plan[0.0]["accuracy"], "step_accuracy_u0": step[0.0]["accuracy"],
            "accuracy_gap_u0": 100 * (plan[0.0]["accuracy"] - fixed[best_k]["accuracy"]),
            "pause_ratio_u0": plan[0.0]["mean_pauses"] / best_k if best_k else float("nan"),
            "plan_pause_passes_u0": plan[0.0]["pause_passes"], "step_pause_passes_at_plan_accuracy": step_at,
            "latency_ratio": plan[0.0]["pause_passes"] / step_at if step_at > 0 else float("nan"),
            "step_best_accuracy": step_best, "step_reaches_plan_accuracy": step_best >= plan[0.0]["accuracy"],
            "plan_summary": plan["summary"], "step_summary": step["summary"]}


def countdown_compare(lm_dir: str, plain_dir: str, ks: list, n: int) -> dict:
    """Teacher-forced fixed-k accuracy (eval-pauses) of the countdown LM and the same LM without it."""
    import torch

    from adaptive_pause.eval.eval_pauses import greedy_correct, load_run
    from adaptive_pause.tasks import get_task

    torch.set_num_threads(1)
    examples = get_task(DEMO_TASK).examples(n, 1_000_003, "test")
    return {name: {k: greedy_correct(load_run(d), examples, k, 250).float().mean().item() for k in ks}
            for name, d in (("countdown", lm_dir), ("plain", plain_dir))}


def countdown_only(compare: dict, args, out: Path) -> dict:
    """The fixed-k comparison alone: per LM seed, and the mean and spread over seeds of (countdown - plain)."""
    for lm, c in compare.items():
        print(f"countdown vs plain, {lm}, teacher-forced accuracy by k: " + " ".join(
            f"k={k}: {c['countdown'][k]:.3f}/{c['plain'][k]:.3f}" for k in args.fixed_ks))
    diffs = {k: [100 * (c["countdown"][k] - c["plain"][k]) for c in compare.values()] for k in args.fixed_ks}
    spread = {k: (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0) for k, v in diffs.items()}
    print("countdown - plain, points, mean (sd) over LM seeds: " + " ".join(
        f"k={k}: {m:+.1f} ({s:.1f})" for k, (m, s) in spread.items()))
    payload = {"args": vars(args), "countdown_compare": compare, "difference_points_mean_sd": spread}
    (out / "bench_planning_countdown.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    return payload


def plot(all_results: dict, out: Path, tag: str = "") -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for x_key, name, xlabel in (("mean_pauses", f"pareto_pauses{tag}.png", "mean pauses per answer (compute)"),
                                ("pause_passes", f"pareto_latency{tag}.png",
                                 "sequential passes on pauses per answer (latency)")):
        fig, ax = plt.subplots(figsize=(7, 5))
        for run, results in all_results.items():
            for label, curve in results.items():
                kind = label.split()[0].rstrip("0123456789")
                pts = sorted((s[x_key], s["accuracy"]) for u, s in curve.items() if u != "summary")
                style = {"fixed": ("s", "grey"), "step": ("o-", "tab:blue"), "plan": ("^-", "tab:red")}[kind]
                ax.plot(*zip(*pts), style[0], color=style[1], alpha=0.6, label=kind)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys())
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy (addition:1-3, held out)")
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        paths.append(str(out / name))
    return paths


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench_planning")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="PPO seeds")
    parser.add_argument("--lm_seeds", type=int, nargs="+", default=[0], help="LM (pretrain + finetune) seeds")
    parser.add_argument("--jobs", type=int, default=1, help="independent units run in this many processes")
    parser.add_argument("--iterations", type=int, default=1200, help="PPO iterations (the demo's 1200)")
    parser.add_argument("--pretrain_steps", type=int, default=1500, help="pretrain steps (the demo's 1500)")
    parser.add_argument("--base", default=None, help="a finished demo pretrain run (no countdown): skip pretraining; "
                        "LM seeds then seed the finetune, which adds the countdown")
    parser.add_argument("--num_examples", type=int, default=500)
    parser.add_argument("--urgencies", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--fixed_ks", type=int, nargs="+", default=[0, 1, 2, 4, 8, 16])
    parser.add_argument("--compare_countdown", action="store_true", help="also build each LM without the countdown")
    parser.add_argument("--ppo_set", type=json.loads, default={},
                        help='JSON object of controller-config fields set on top of the demo recipe for both '
                             'controllers, e.g. \'{"ent_coef": 0.02, "learning_rate": 0.001}\'')
    parser.add_argument("--pretrain_set", type=json.loads, default={},
                        help='JSON object of pretrain-config fields set on top of the demo recipe, e.g. '
                             '\'{"tasks": ["addition:1-3"]}\' (bare sums only, the session 2 recipe)')
    parser.add_argument("--finetune_set", type=json.loads, default={},
                        help="JSON object of finetune-config fields set on top of the demo recipe")
    parser.add_argument("--tag", default="", help="inserted in the controller runs' directory names (lm0-plan{TAG}0): "
                        "runs of another recipe then sit beside, not over, earlier ones")
    parser.add_argument("--step_on_plain", action="store_true",
                        help="train and decode the per-step controller on each LM's twin without the countdown (built "
                             "as for --compare_countdown). A per-step decision commits to one pause, so on a countdown "
                             "LM every pause reads 1, a sequence that LM never saw for more than one pause (see "
                             "docs/results.md, issue 15, session 12); the planner stays on the countdown LM")
    parser.add_argument("--planner", choices=("plan", "outcome"), default="plan",
                        help="the planning controller: 'plan' (PausePlanningHead, PPO over counts) or 'outcome' (the "
                             "outcome planner: P(correct | k) fitted on observed outcomes, controller 'outcome'); it "
                             "fills the table's plan rows")
    parser.add_argument("--countdown_only", action="store_true",
                        help="with --compare_countdown: only the LMs and their fixed-k comparison, no controllers")
    args = parser.parse_args(argv)
    for name in ("ppo_set", "pretrain_set", "finetune_set"):
        if not isinstance(getattr(args, name), dict):
            parser.error(f"--{name}: must be a JSON object of config fields, got {getattr(args, name)!r}")
    import dataclasses

    from adaptive_pause.ppo.config import PPOConfig

    unknown = sorted(set(args.ppo_set) - {f.name for f in dataclasses.fields(PPOConfig)})
    if unknown:
        parser.error(f"--ppo_set: unknown controller-config fields {unknown} (see adaptive-pause train-controller -h)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs, initializer=_one_thread if args.jobs > 1 else None) as pool:
        lm_jobs = {(s, c): pool.submit(build_lm, str(out), s, c, args.pretrain_steps, args.base, args.pretrain_set,
                                       args.finetune_set) for s in args.lm_seeds
                   for c in ((True, False) if args.compare_countdown or args.step_on_plain else (True,))}
        lms = {key: job.result() for key, job in lm_jobs.items()}
        compare_jobs = {s: pool.submit(countdown_compare, lms[(s, True)], lms[(s, False)], args.fixed_ks,
                                       args.num_examples) for s in args.lm_seeds if args.compare_countdown}
        if args.countdown_only:
            return countdown_only({f"lm{s}": job.result() for s, job in compare_jobs.items()}, args, out)
        kinds = {"step": "step", "plan": args.planner}  # table label -> controller kind
        ppo_jobs = {(s, c, p): pool.submit(train_controller, lms[(s, c == "plan" or not args.step_on_plain)], str(out),
                                           kinds[c], p, args.iterations, args.ppo_set, args.tag)
                    for s in args.lm_seeds for p in args.seeds for c in ("step", "plan")}
        runs = {key: job.result() for key, job in ppo_jobs.items()}
        eval_jobs = {s: pool.submit(evaluate, lms[(s, True)], {f"{c}{p}": runs[(s, c, p)] for c in ("step", "plan")
                                                              for p in args.seeds},
                                    args.urgencies, args.fixed_ks, args.num_examples) for s in args.lm_seeds}
        results = {f"lm{s}": job.result() for s, job in eval_jobs.items()}
        compare = {f"lm{s}": job.result() for s, job in compare_jobs.items()}

    heads = {f"lm{s}-ppo{p}": headline(results[f"lm{s}"], p) for s in args.lm_seeds for p in args.seeds}
    print("| lm | policy | u | accuracy | mean pauses | pause passes | passes/answer | ms/answer | acc by difficulty |")
    print("|----|--------|---|----------|-------------|--------------|---------------|-----------|-------------------|")
    for lm, res in results.items():
        for label, curve in res.items():
            for u, s in curve.items():
                if u == "summary":
                    continue
                by_d = " ".join(f"{d}:{v['accuracy']:.3f}/{v['mean_pauses']:.2f}" for d, v in s["by_difficulty"].items())
                print(f"| {lm} | {label} | {u:.2f} | {s['accuracy']:.3f} | {s['mean_pauses']:.2f} | "
                      f"{s['pause_passes']:.2f} | {s['passes']:.2f} | {s['ms_per_answer']:.2f} | {by_d} |")
    print("\nper run (u = 0): best fixed k, accuracies, gap (points), pause ratio, pause passes plan vs step at "
          "equal accuracy, Spearman(u, pauses) and Spearman(difficulty, pauses)@u0.5 of plan / step")
    for run, h in heads.items():
        print(f"{run}: best_k={h['best_fixed_k']} fixed={h['best_fixed_accuracy']:.3f} "
              f"plan={h['plan_accuracy_u0']:.3f} step={h['step_accuracy_u0']:.3f} gap={h['accuracy_gap_u0']:+.1f} "
              f"pause_ratio={h['pause_ratio_u0']:.2f} passes plan={h['plan_pause_passes_u0']:.2f} "
              f"step@acc={h['step_pause_passes_at_plan_accuracy']:.2f} latency_ratio={h['latency_ratio']:.2f} "
              f"step_best={h['step_best_accuracy']:.3f}{'' if h['step_reaches_plan_accuracy'] else ' (below plan)'} "
              f"rho_u plan/step={h['plan_summary']['spearman_urgency_pauses']}/"
              f"{h['step_summary']['spearman_urgency_pauses']} "
              f"rho_d plan/step={h['plan_summary']['spearman_difficulty_pauses_u0.5']}/"
              f"{h['step_summary']['spearman_difficulty_pauses_u0.5']}")
    for lm, c in compare.items():
        print(f"countdown vs plain, {lm}, teacher-forced accuracy by k: " + " ".join(
            f"k={k}: {c['countdown'][k]:.3f}/{c['plain'][k]:.3f}" for k in args.fixed_ks))
    plots = plot(results, out, args.tag)

    def mean(key):
        """(mean, sd, runs) over the runs where the figure is defined (a ratio is NaN where its denominator is 0:
        no fixed k pauses, or the per-step controller never pauses); NaN when it is defined in none."""
        values = [h[key] for h in heads.values() if math.isfinite(h[key])]
        if not values:
            return float("nan"), float("nan"), 0
        return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0), len(values)

    summary = {k: mean(k) for k in ("latency_ratio", "accuracy_gap_u0", "pause_ratio_u0")}
    payload = {"args": vars(args), "seconds": time.perf_counter() - started, "results": results, "runs": heads,
               "countdown_compare": compare, "mean_sd": summary, "plots": plots}
    (out / f"bench_planning{args.tag}.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    print(f"plots: {' '.join(plots)}; json: {out / f'bench_planning{args.tag}.json'}; {payload['seconds']:.0f} s")
    print("means over the runs where defined: " + ", ".join(f"{k} {m:.3f} (sd {sd:.3f}, {n} of {len(heads)} runs)"
                                                             for k, (m, sd, n) in summary.items()))
    print(f"bench_planning: latency_ratio={summary['latency_ratio'][0]:.3f} "
          f"accuracy_gap_u0={summary['accuracy_gap_u0'][0]:.2f} pause_ratio_u0={summary['pause_ratio_u0'][0]:.3f}")
    return payload


if __name__ == "__main__":
    main()
