"""The urgency sweep on a tiny run: tables, plots, and clear errors."""

import csv
import json

import pytest
import torch

from adaptive_pause.eval.sweep import SweepConfig, format_table, run_sweep, write_outputs
from policies import RandomPauses, save_policy

FAST = dict(max_steps=4, batch_size=16, warmup_steps=1, progress=False)


@pytest.fixture
def run_dir(tiny_run):
    return tiny_run / "ft"


def test_sweep_writes_tables_and_plots(run_dir, tmp_path):
    torch.manual_seed(0)
    controlled = tmp_path / "run"
    import shutil

    shutil.copytree(run_dir, controlled)
    # the run's "learned" controller here: random pauses (seeded), so the per-instance Spearman is a real number
    save_policy(RandomPauses(0.5), controlled / "controller")
    config = SweepConfig(run_dir=str(controlled), tasks=["parity:2-4"], urgencies=[0.0, 0.5, 1.0], num_examples=24,
                         fixed_ks=[0, 2], max_pauses=4, max_pauses_total=4, progress=False,
                         output_dir=str(tmp_path / "out"))
    rows = run_sweep(config)
    outputs = write_outputs(rows, config)
    policies = {(r["policy"], r["param"]) for r in rows}
    assert policies == {("learned", ""), ("fixed", "0"), ("fixed", "2"), ("confidence", "0.95"), ("random", "0.5")}
    overall = {(r["policy"], r["param"], r["urgency"]): r for r in rows if r["difficulty"] == "all"}
    assert len(overall) == 5 * 3  # every policy at every urgency
    assert overall[("fixed", "2", 0.0)]["mean_pauses"] == 2.0 and overall[("fixed", "0", 1.0)]["mean_pauses"] == 0.0
    # meta-reward = (1 - u) * accuracy - u * pauses / budget, per row (here exactly, the mean of a linear map)
    r = overall[("fixed", "2", 0.5)]
    assert r["meta_reward"] == pytest.approx(0.5 * r["accuracy"] - 0.5 * 2 / 4)
    # the per-instance Spearman stored on the learned rows is recomputed here from a fresh decode
    from adaptive_pause.modeling import AdaptivePauseModel
    from adaptive_pause.eval.sweep import _spearman
    from adaptive_pause.tasks import get_task

    examples = get_task("parity:2-4").examples(24, config.seed)
    model = AdaptivePauseModel.from_pretrained(controlled)
    out = model.generate([e.prompt for e in examples], urgency=0.5, max_new_tokens=2, max_pauses=4,
                         max_pauses_total=4, seed=config.seed)
    expected = _spearman([e.difficulty for e in examples], out.pauses)
    got = overall[("learned", "", 0.5)]["spearman_difficulty_pauses"]
    assert expected == expected and got == pytest.approx(expected)  # a real correlation, not NaN == NaN
    buckets = {r["difficulty"] for r in rows}
    assert buckets == {"all", 2, 3, 4}
    with open(tmp_path / "out" / "sweep.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    data = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert "spearman_urgency_pauses" in data and len(data["rows"]) == len(rows)
    for png in (outputs["pareto"], outputs["by_difficulty"]):
        assert png.stat().st_size > 10_000
    assert "| parity" in format_table(rows)


def test_sweep_without_controller_is_a_clear_error(run_dir):
    with pytest.raises(ValueError, match="has no controller/ to sweep; train one with `adaptive-pause train-controller`"):
        run_sweep(SweepConfig(run_dir=str(run_dir), urgencies=[0.0], num_examples=4, progress=False))


def test_bad_urgency_list():
    with pytest.raises(ValueError, match=r"urgencies: every urgency must be a number in \[0, 1\], got 1.5"):
        SweepConfig(run_dir="x", urgencies=[0.0, 1.5])
    with pytest.raises(ValueError, match="urgencies: every urgency must be a number in \\[0, 1\\], got nan"):
        SweepConfig(run_dir="x", urgencies=[float("nan")])
    with pytest.raises(ValueError, match="urgencies: needs at least one urgency"):
        SweepConfig(run_dir="x", urgencies=[])


def _row(policy, param, u, accuracy, pauses, rho=None):
    return {"policy": policy, "param": param, "urgency": u, "task": "t", "difficulty": "all", "accuracy": accuracy,
            "accuracy_low": accuracy - 0.03, "accuracy_high": accuracy + 0.03, "n": 500, "mean_pauses": pauses,
            "spearman_difficulty_pauses": rho}


def test_controller_summary_against_the_best_fixed_k():
    from adaptive_pause.eval.sweep import controller_summary, format_summary

    rows = [_row("learned", "", 0.0, 0.80, 1.5), _row("learned", "", 0.5, 0.70, 0.5, rho=0.6),
            _row("learned", "", 1.0, 0.60, 0.0),
            # k = 4 and k = 8 tie on accuracy: the reference is the cheaper one
            _row("fixed", "0", 0.0, 0.50, 0.0), _row("fixed", "4", 0.0, 0.81, 4.0), _row("fixed", "8", 0.0, 0.81, 8.0),
            _row("fixed", "4", 0.5, 0.81, 4.0),  # fixed rows at other urgencies are not the reference
            {**_row("fixed", "16", 0.0, 0.99, 16.0), "difficulty": 3}]  # a bucket row is not either
    s = controller_summary(rows, "t")
    assert s["best_fixed_k"] == 4 and s["best_fixed_accuracy"] == 0.81
    assert s["accuracy_gap"] == pytest.approx(-1.0) and s["pause_ratio"] == pytest.approx(1.5 / 4)
    assert s["spearman_urgency_pauses"] == pytest.approx(-1.0) and s["spearman_difficulty_pauses"] == 0.6
    line = format_summary(s)
    assert line.startswith("controller: task=t ") and "best_fixed_k=4" in line and "pause_ratio=0.38" in line
    # fixed k ignores urgency: a sweep without u = 0 still has its reference
    later = [dict(r, urgency=0.5) for r in rows if r["policy"] == "fixed" and r["urgency"] == 0.0]
    assert controller_summary(rows[:3] + later, "t")["best_fixed_k"] == 4
    # nothing to compare against: None (null in JSON), not an error
    lonely = controller_summary([_row("learned", "", 0.3, 0.7, 1.0)], "t")
    assert lonely["best_fixed_k"] is None and lonely["accuracy_gap"] is None
    assert "accuracy_gap_points=n/a" in format_summary(lonely)


def test_sweep_reports_accuracy_per_interruption_kind(interrupt_run, tmp_path):
    """The interruption task in a sweep: its examples are interrupted for real, accuracy is reported per variant
    on the overall rows, and the variants' accuracies weighted by their counts give the overall accuracy."""
    import shutil

    from adaptive_pause.tasks import get_task

    controlled = tmp_path / "run"
    shutil.copytree(interrupt_run / "ft", controlled)
    save_policy(RandomPauses(0.5), controlled / "controller")
    config = SweepConfig(run_dir=str(controlled), tasks=["interrupt:1-1"], urgencies=[0.5], num_examples=28,
                         fixed_ks=[2], confidence_high=-1.0, random_ps=[], max_pauses=2, max_pauses_total=2,
                         progress=False, output_dir=str(tmp_path / "out"))
    rows = run_sweep(config)
    write_outputs(rows, config)
    examples = get_task("interrupt:1-1").examples(28, config.seed, "test")
    counts = {v: sum(e.variant == v for e in examples) for v in {e.variant for e in examples}}
    for row in (r for r in rows if r["difficulty"] == "all"):
        by_kind = row["accuracy_by_kind"]
        assert set(by_kind) == set(counts)
        assert sum(by_kind[v] * n for v, n in counts.items()) / 28 == pytest.approx(row["accuracy"])
    assert all(r["accuracy_by_kind"] is None for r in rows if r["difficulty"] != "all")
