"""Urgency sweeps: accuracy versus delay for the learned controller and the baselines.

Owns: `adaptive-pause sweep RUN_DIR`: for every policy (the run's learned
controller, fixed k, confidence threshold, random) and every urgency, run the
held-out examples of each task through the one decode loop
(`AdaptivePauseModel.generate`), score the answers with the task's scorer and
report accuracy, mean / p50 / p95 pauses, meta-reward and milliseconds per
answer, overall and per difficulty bucket (and accuracy per interruption variant, the interrupted examples
interrupted for real: `interruptions.py`); write `sweep.csv`, `sweep.json`,
`pareto.png` and `by_difficulty.png`.

Policies whose decisions do not read urgency (fixed k, random) are decoded
once and their meta-reward is computed at every urgency; urgency-aware ones
(learned, confidence) are decoded once per urgency.

Must not: train anything or implement decoding.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from tqdm.auto import tqdm

from policies import ConfidenceThreshold, FixedPauses, RandomPauses
from rewards import MetaReward

from ..checkpoint import write_json_atomic
from ..config import check, help_field, parse_cli
from ..decoding import pause_budget
from ..modeling import AdaptivePauseModel
from ..tasks import check_split, get_task, task_label
from .interruptions import accuracy_by_kind, interrupted_score, sweep_step
from .plots import ALL, plot
from .tables import markdown_table


@dataclass
class SweepConfig:
    """Urgency sweep of a run's controller against baselines."""

    run_dir: str = help_field("run directory with model/, adapter/ and controller/")
    urgencies: list[float] = help_field("urgencies to sweep", default_factory=lambda: [i / 10 for i in range(11)])
    tasks: Optional[list[str]] = help_field("task specs; empty = the run's own tasks", default=None)
    num_examples: int = help_field("held-out examples per task (the demo's 500 by default)", default=500)
    fixed_ks: list[int] = help_field("fixed-k baselines (pauses before the answer)",
                                default_factory=lambda: [0, 1, 2, 4, 8, 16])
    confidence_high: float = help_field("confidence baseline: threshold at u=0 (falls linearly to 0 at u=1); "
                                   "negative disables it", default=0.95)
    random_ps: list[float] = help_field("random baselines: pause probability per step", default_factory=lambda: [0.5])
    learned: bool = help_field("sweep the run's learned controller (needs RUN_DIR/controller)", default=True)
    auto: bool = help_field("also the 'auto' rows: at each phrase level's urgency, held-out phrasings of that level "
                            "before the task prompts, the learned controller reading urgency from the wording "
                            "(policy 'auto', the run's estimator: RUN_DIR/urgency) and, beside it, the same prompts "
                            "with the level's urgency given (policy 'phrased')", default=False)
    max_pauses: Optional[int] = help_field("cap on pauses before one answer token; empty = what the run's controller "
                                           "was trained with (RUN_DIR/decode.yaml), else 16", default=None)
    max_pauses_total: Optional[int] = help_field("cap on pauses per answer (also the meta-reward's normaliser); "
                                                 "empty = the trained setting, else the decode loop's budget "
                                                 "(decoding.pause_budget)", default=None)
    first_token_pauses_only: Optional[bool] = help_field(
        "policies may pause only before the first answer token (as the model was finetuned); later tokens are "
        "forced emits; empty = the trained setting, else false", default=None)
    split: str = help_field("the tasks' split: test (held out, the default), dev, or train (labelled as training "
                            "data)", default="test")
    batch_size: int = help_field("prompts per decode call", default=256)
    seed: int = help_field("seed of the held-out examples", default=1_000_003)
    output_dir: Optional[str] = help_field("where tables and plots go; empty = RUN_DIR/sweep", default=None)
    progress: bool = help_field("show a progress bar", default=True)
    device: Optional[str] = help_field("where the model runs (cpu, cuda); empty = where it loads (cpu)", default=None)

    def __post_init__(self):
        check(len(self.urgencies) > 0, "urgencies", "needs at least one urgency")
        for u in self.urgencies:
            check(isinstance(u, (int, float)) and math.isfinite(u) and 0 <= u <= 1, "urgencies",
                   f"every urgency must be a number in [0, 1], got {u!r}")
        check(all(k >= 0 for k in self.fixed_ks), "fixed_ks", f"must be >= 0, got {self.fixed_ks}")
        check(all(0 <= p <= 1 for p in self.random_ps), "random_ps", f"must be in [0, 1], got {self.random_ps}")
        check(self.num_examples >= 1, "num_examples", f"must be >= 1, got {self.num_examples}")
        check(self.max_pauses is None or self.max_pauses >= 0, "max_pauses", f"must be >= 0, got {self.max_pauses}")
        check_split(self.split)
        check(self.max_pauses_total is None or self.max_pauses_total >= 1, "max_pauses_total",
               f"must be >= 1, got {self.max_pauses_total}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(not self.auto or self.learned, "auto", "the 'auto' rows run the learned controller: needs learned true")

    def resolved(self, trained: dict) -> "SweepConfig":
        """This config with its empty pause settings taken from the run's trained ones (`trained`), else the
        defaults (16, no total cap, pauses before every token)."""
        def pick(name, fallback):
            mine = getattr(self, name)
            return mine if mine is not None else trained.get(name, fallback)

        return dataclasses.replace(self, max_pauses=pick("max_pauses", 16),
                                   max_pauses_total=pick("max_pauses_total", None),
                                   first_token_pauses_only=pick("first_token_pauses_only", False))

    def pause_budget(self, max_new_tokens: int) -> int:
        """The answer's pause budget (the meta-reward's normaliser): the decode loop's one rule."""
        return pause_budget(self.max_pauses, max_new_tokens, self.max_pauses_total, bool(self.first_token_pauses_only))


def _policies(config: SweepConfig, model: AdaptivePauseModel):
    """(name, param, policy, reads_urgency) for every policy in the sweep."""
    out = []
    if config.learned:
        if model.policy is None:
            raise ValueError(
                f"{config.run_dir} has no controller/ to sweep; train one with `adaptive-pause train-controller`, "
                "or pass --learned false to sweep only the baselines"
            )
        out.append(("learned", "", model.policy, True))
    for k in config.fixed_ks:
        if k > config.max_pauses:
            raise ValueError(f"fixed_ks: k={k} exceeds max_pauses={config.max_pauses}")
        out.append(("fixed", str(k), FixedPauses(k), False))
    if config.confidence_high >= 0:
        out.append(("confidence", f"{config.confidence_high:g}", ConfidenceThreshold(config.confidence_high, 0.0), True))
    for p in config.random_ps:
        out.append(("random", f"{p:g}", RandomPauses(p), False))
    return out


def wilson_interval(mean: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a mean score in [0, 1] over n answers (exact for 0/1 scores)."""
    if n == 0:
        return float("nan"), float("nan")
    centre = (mean + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def within_noise(accuracy: float, best: float, n: int, z: float = 1.96) -> bool:
    """Is `accuracy` within noise of `best` (both means over n answers)? A two-proportion z test at 95%:
    best - accuracy <= z * sqrt(p_b (1 - p_b) / n + p_a (1 - p_a) / n)."""
    spread = math.sqrt(best * (1 - best) / n + accuracy * (1 - accuracy) / n)
    return best - accuracy <= z * spread + 1e-12


def _summarise(scores: torch.Tensor, pauses: torch.Tensor, ms: torch.Tensor, u: float, budget: int) -> dict:
    pauses_f = pauses.float()
    meta = MetaReward(max(budget, 1)).reward(scores, pauses, torch.full_like(scores, u))
    low, high = wilson_interval(scores.mean().item(), int(scores.numel()))
    return {
        "n": int(scores.numel()),
        "accuracy": scores.mean().item(),
        "accuracy_low": low,  # 95% Wilson interval of the mean score
        "accuracy_high": high,
        "mean_pauses": pauses_f.mean().item(),
        "p50_pauses": pauses_f.quantile(0.5).item(),
        "p95_pauses": pauses_f.quantile(0.95).item(),
        "meta_reward": meta.mean().item(),
        "ms_per_answer": ms.mean().item(),
    }


@torch.no_grad()
def run_sweep(config: SweepConfig) -> list[dict]:
    model = AdaptivePauseModel.from_pretrained(config.run_dir, device=config.device)
    config = config.resolved(model.trained_decode)
    run_config = {}
    if (Path(config.run_dir) / "config.yaml").is_file():
        import yaml

        run_config = yaml.safe_load((Path(config.run_dir) / "config.yaml").read_text()) or {}
    specs = config.tasks or run_config.get("tasks")
    if not specs:
        raise ValueError(f"{config.run_dir}: no tasks given and none recorded in config.yaml; pass --tasks")
    tasks = [get_task(s) for s in specs]
    policies = _policies(config, model)
    if model.settings.numbering == "slotted" and config.max_pauses > model.settings.pause_slots:
        raise ValueError(f"max_pauses={config.max_pauses} exceeds the model's pause_slots={model.settings.pause_slots}")
    jobs = sum(len(config.urgencies) if aware else 1 for *_, aware in policies) * len(tasks)
    bar = tqdm(total=jobs, desc="sweep", disable=not config.progress)
    rows = []
    per_instance: dict[tuple[str, float], float] = {}
    for spec, task in zip(specs, tasks):
        label = task_label(spec, task)
        examples = task.examples(config.num_examples, config.seed, config.split)
        prompts = [e.prompt for e in examples]
        difficulty = torch.tensor([e.difficulty for e in examples])
        max_new = max(len(model.tokenizer(e.answer, add_special_tokens=False)["input_ids"]) for e in examples) + 1
        budget = config.pause_budget(max_new)
        for name, param, policy, aware in policies:
            for u_decode in (config.urgencies if aware else [0.0]):
                scores, pauses, ms = [], [], []
                for start in range(0, len(prompts), config.batch_size):
                    chunk = slice(start, start + config.batch_size)
                    started = time.perf_counter()
                    out = model.generate(prompts[chunk], urgency=float(u_decode), policy=policy,
                                         max_new_tokens=max_new, max_pauses=config.max_pauses,
                                         max_pauses_total=budget,
                                         first_token_pauses_only=config.first_token_pauses_only, seed=config.seed,
                                         on_step=sweep_step(model, examples[chunk]))
                    scores += [interrupted_score(task, e, text, reason)
                               for text, reason, e in zip(out.texts, out.finish_reasons, examples[chunk])]
                    pauses += out.pauses
                    # wall-clock of the batched call shared by its answers: throughput-based ms per answer
                    ms += [(time.perf_counter() - started) * 1000 / len(out.texts)] * len(out.texts)
                scores_t, pauses_t, ms_t = torch.tensor(scores, dtype=torch.float), torch.tensor(pauses), torch.tensor(ms)
                if name == "learned":
                    per_instance[(label, float(u_decode))] = _spearman(difficulty.tolist(), pauses_t.tolist())
                for u in (config.urgencies if not aware else [u_decode]):
                    for bucket in [ALL] + sorted(set(difficulty.tolist())):
                        mask = torch.ones_like(difficulty, dtype=torch.bool) if bucket == ALL else difficulty == bucket
                        row = {"policy": name, "param": param, "urgency": float(u), "task": label,
                               "split": config.split, "difficulty": bucket}
                        row.update(_summarise(scores_t[mask], pauses_t[mask], ms_t[mask], float(u), budget))
                        row["accuracy_by_kind"] = accuracy_by_kind(examples, scores_t) if bucket == ALL else None
                        rows.append(row)
                bar.update(1)
        if config.auto:
            rows += _auto_rows(model, task, label, config, max_new, budget)
    bar.close()
    # Per-instance Spearman(difficulty, pauses) of the learned controller, one number per (task, urgency):
    # stored on its overall rows so that tables, CSV and JSON carry it.
    for row in rows:
        row["spearman_difficulty_pauses"] = (per_instance.get((row["task"], row["urgency"]))
                                             if row["policy"] == "learned" and row["difficulty"] == ALL
                                             else None)
    return rows


def _auto_rows(model, task, label: str, config: SweepConfig, max_new: int, budget: int) -> list[dict]:
    """Rows 'auto' (urgency from the wording) and 'phrased' (the same prompts, the level's urgency given) at each
    phrase level, on the phrase bank's test phrasings (never seen by the estimator) before the task's prompts."""
    from ..tasks.urgency_phrases import LEVELS, UrgencyPhraseBank, level_urgency

    if model.urgency_estimator is None:
        raise ValueError(f"auto: {config.run_dir} has no urgency estimator (urgency/); train one with "
                         "`adaptive-pause train-urgency RUN_DIR`, or set auto false")
    from .urgency_auto import estimator_phrases

    phrase_seed, blocks = estimator_phrases(config.run_dir)  # the estimator's own split: held out from it
    bank, rows = UrgencyPhraseBank(phrase_seed, blocks=blocks), []
    for level in range(LEVELS):
        u = level_urgency(level)
        examples = bank.examples([task], "test", config.num_examples, config.seed, "before", levels=[level])
        prompts = [e.prompt for e in examples]
        difficulty = torch.tensor([e.difficulty for e in examples])
        for name, urgency in (("auto", "auto"), ("phrased", u)):
            scores, pauses, ms = [], [], []
            for start in range(0, len(prompts), config.batch_size):
                chunk = slice(start, start + config.batch_size)
                started = time.perf_counter()
                out = model.generate(prompts[chunk], urgency=urgency, max_new_tokens=max_new,
                                     max_pauses=config.max_pauses, max_pauses_total=budget,
                                     first_token_pauses_only=config.first_token_pauses_only, seed=config.seed)
                scores += [task.score(text, e.answer) for text, e in zip(out.texts, examples[chunk])]
                pauses += out.pauses
                ms += [(time.perf_counter() - started) * 1000 / len(out.texts)] * len(out.texts)
            scores_t, pauses_t, ms_t = torch.tensor(scores, dtype=torch.float), torch.tensor(pauses), torch.tensor(ms)
            for bucket in [ALL] + sorted(set(difficulty.tolist())):
                mask = torch.ones_like(difficulty, dtype=torch.bool) if bucket == ALL else difficulty == bucket
                row = {"policy": name, "param": "wording" if name == "auto" else "level", "urgency": u,
                       "task": label, "split": config.split, "difficulty": bucket}
                row.update(_summarise(scores_t[mask], pauses_t[mask], ms_t[mask], u, budget))
                rows.append(row)
    return rows


def _spearman(x: list, y: list) -> float | str:
    from scipy.stats import spearmanr

    if len(set(x)) < 2 or len(set(y)) < 2:
        return "constant"  # undefined when one side does not vary: said so, not NaN
    return float(spearmanr(x, y).statistic)


def spearman_urgency_pauses(rows: list[dict], task: str | None = None) -> float | str:
    """Spearman correlation of urgency and mean pauses of the learned controller (overall rows)."""
    sel = [r for r in rows if r["policy"] == "learned" and r["difficulty"] == ALL and (task is None or r["task"] == task)]
    return _spearman([r["urgency"] for r in sel], [r["mean_pauses"] for r in sel])


def controller_summary(rows: list[dict], task: str, reference_u: float = 0.5) -> dict:
    """The learned controller against the fixed-k baseline on one task, from the overall rows.

    - `spearman_urgency_pauses`: urgency vs the controller's mean pauses over the swept urgencies ("constant"
      when the mean pauses do not vary: a correlation is then undefined, not zero);
    - at u = 0: its accuracy (with its 95% interval) and mean pauses beside the best fixed k, `accuracy_gap`
      in points (controller minus best fixed k) and `pause_ratio` (its mean pauses over the best fixed k's).
      The best fixed k is the smallest k whose accuracy is within noise of the most accurate fixed k
      (`within_noise`: a two-proportion z test at 95%), so a noise-level winner with more pauses is not the
      reference; `most_accurate_fixed_k` is reported beside it;
    - `spearman_difficulty_pauses` per instance at `reference_u`.
    Values are None where the sweep lacks what they need (no u = 0, no fixed k, ...).
    """
    overall = [r for r in rows if r["task"] == task and r["difficulty"] == ALL]
    learned = {r["urgency"]: r for r in overall if r["policy"] == "learned"}
    # fixed k ignores urgency: its accuracy and pauses are the same at every swept urgency; take one of them
    fixed_all = [r for r in overall if r["policy"] == "fixed"]
    first_u = min((r["urgency"] for r in fixed_all), default=0.0)
    fixed = sorted((r for r in fixed_all if r["urgency"] == first_u), key=lambda r: int(r["param"]))
    out = {"task": task, "spearman_urgency_pauses": spearman_urgency_pauses(rows, task),
           "accuracy_u0": None, "accuracy_u0_low": None, "accuracy_u0_high": None, "mean_pauses_u0": None,
           "best_fixed_k": None, "best_fixed_accuracy": None, "best_fixed_mean_pauses": None,
           "most_accurate_fixed_k": None, "accuracy_gap": None, "pause_ratio": None,
           "reference_urgency": reference_u,
           "spearman_difficulty_pauses": learned[reference_u]["spearman_difficulty_pauses"]
           if reference_u in learned else None}
    if fixed:
        top = max(fixed, key=lambda r: (r["accuracy"], -r["mean_pauses"]))
        best = next(r for r in fixed if within_noise(r["accuracy"], top["accuracy"], min(r["n"], top["n"])))
        out.update(best_fixed_k=int(best["param"]), best_fixed_accuracy=best["accuracy"],
                   best_fixed_mean_pauses=best["mean_pauses"], most_accurate_fixed_k=int(top["param"]))
    if 0.0 in learned:
        row = learned[0.0]
        out.update(accuracy_u0=row["accuracy"], accuracy_u0_low=row["accuracy_low"],
                   accuracy_u0_high=row["accuracy_high"], mean_pauses_u0=row["mean_pauses"])
        if fixed:
            out["accuracy_gap"] = 100 * (out["accuracy_u0"] - out["best_fixed_accuracy"])
            if out["best_fixed_mean_pauses"] > 0:
                out["pause_ratio"] = out["mean_pauses_u0"] / out["best_fixed_mean_pauses"]
    return out


def _fmt(value, spec: str) -> str:
    """A summary figure: "constant" / "n/a" for what is not a number, else formatted."""
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, spec)


def format_summary(summary: dict) -> str:
    """One line per task: `controller: task=... spearman_urgency_pauses=... ...`."""
    s = summary
    interval = (f"[{_fmt(s['accuracy_u0_low'], '.3f')},{_fmt(s['accuracy_u0_high'], '.3f')}]"
                if s["accuracy_u0_low"] is not None else "")
    return (f"controller: task={s['task']} spearman_urgency_pauses={_fmt(s['spearman_urgency_pauses'], '.3f')} "
            f"accuracy_u0={_fmt(s['accuracy_u0'], '.3f')}{interval} best_fixed_k={s['best_fixed_k']} "
            f"best_fixed_accuracy={_fmt(s['best_fixed_accuracy'], '.3f')} "
            f"accuracy_gap_points={_fmt(s['accuracy_gap'], '+.1f')} pause_ratio={_fmt(s['pause_ratio'], '.2f')} "
            f"spearman_difficulty_pauses@u{s['reference_urgency']:g}="
            f"{_fmt(s['spearman_difficulty_pauses'], '.3f')}")


def format_table(rows: list[dict]) -> str:
    """The overall (all-difficulty) rows, one line per policy and urgency."""
    head = ["task", "policy", "param", "u", "accuracy", "mean_pauses", "p50", "p95", "meta_reward", "ms/answer",
            "rho(d,pauses)"]
    body = []
    for r in rows:
        if r["difficulty"] != ALL:
            continue
        if r["policy"] in ("fixed", "random") and r["urgency"] not in (0.0, 0.5, 1.0):
            continue  # their decisions ignore urgency; a few urgencies show the meta-reward trade-off
        body.append([r["task"], r["policy"], r["param"], f"{r['urgency']:.2f}", f"{r['accuracy']:.3f}",
                     f"{r['mean_pauses']:.2f}", f"{r['p50_pauses']:.0f}", f"{r['p95_pauses']:.0f}",
                     f"{r['meta_reward']:+.3f}", f"{r['ms_per_answer']:.1f}",
                     "" if r["spearman_difficulty_pauses"] is None else _fmt(r["spearman_difficulty_pauses"], "+.2f")])
    return markdown_table(head, body)


def write_outputs(rows: list[dict], config: SweepConfig) -> dict:
    if not rows:
        raise ValueError("sweep: no policy to sweep (learned false, no fixed_ks, confidence_high < 0, no random_ps)")
    out_dir = Path(config.output_dir) if config.output_dir else Path(config.run_dir) / "sweep"
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "sweep.csv.tmp").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / "sweep.csv.tmp").replace(out_dir / "sweep.csv")
    spearman = spearman_urgency_pauses(rows)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    summaries = [controller_summary(rows, t) for t in tasks] if any(r["policy"] == "learned" for r in rows) else []
    write_json_atomic({"run_dir": config.run_dir, "split": config.split, "held_out": config.split != "train",
                       "spearman_urgency_pauses": spearman, "controller": summaries,
                       "rows": rows}, out_dir / "sweep.json")
    pareto, by_difficulty = plot(rows, out_dir)
    return {"dir": out_dir, "pareto": pareto, "by_difficulty": by_difficulty, "spearman": spearman,
            "controller": summaries}


def main(argv: list[str] | None = None) -> int:
    config = parse_cli(SweepConfig, argv, positional=("run_dir",), prog="adaptive-pause sweep")
    rows = run_sweep(config)
    outputs = write_outputs(rows, config)
    print(format_table(rows))
    kind_rows = [r for r in rows if r["accuracy_by_kind"] and r["policy"] != "random"]
    if kind_rows:  # accuracy per interruption variant, on the overall rows
        kinds = sorted({k for r in kind_rows for k in r["accuracy_by_kind"]})
        print(markdown_table(["task", "policy", "param", "u"] + kinds, [
            [r["task"], r["policy"], r["param"], f"{r['urgency']:.2f}"]
            + [f"{r['accuracy_by_kind'].get(k, float('nan')):.3f}" for k in kinds] for r in kind_rows]))
    print(f"plots: {outputs['pareto']} {outputs['by_difficulty']}")
    for summary in outputs["controller"]:
        print(format_summary(summary))
    print(f"sweep: split={config.split} spearman_urgency_pauses={_fmt(outputs['spearman'], '.3f')} "
          f"csv={outputs['dir'] / 'sweep.csv'}")
    return 0
