"""benchmarks/planning_accuracy_model.py: the planner's choice in closed form, its argument checks, and a short run
on the tiny shared run writing its JSON and final line. The full benchmark (a demo-scale LM) is not run here."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import planning_accuracy_model as pam  # noqa: E402


def test_plan_takes_the_best_expected_reward_and_the_fewest_pauses_within_delta():
    p = torch.tensor([[0.5, 0.9, 0.95, 0.96],   # more pauses keep helping a little
                      [1.0, 1.0, 1.0, 1.0]])    # right at any k: no pause is worth anything
    assert pam.plan(p, 0.0, 16, 0.0).tolist() == [3, 0]          # u = 0: the best k; ties go to the fewest
    assert pam.plan(p, 0.0, 16, 0.02).tolist() == [2, 0]         # within 0.02 of 0.96: 0.95 at k = 2
    # u = 0.5: value = 0.5 p - 0.5 k / 16 -> [0.25, 0.41875, 0.4125, 0.39]: k = 1
    assert pam.plan(p, 0.5, 16, 0.0).tolist() == [1, 0]
    assert pam.plan(p, 1.0, 16, 0.0).tolist() == [0, 0]          # u = 1: only the price counts
    ks = [pam.plan(p, u, 16, 0.0)[0].item() for u in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert ks == sorted(ks, reverse=True)                        # never more pauses at a higher urgency


@pytest.mark.parametrize("bad, field", [(["--delta", "-0.1"], "--delta"), (["--urgencies", "1.5"], "--urgencies"),
                                        (["--fixed_ks", "9", "--max_pauses", "4"], "--fixed_ks"),
                                        (["--steps", "0"], "--steps")])
def test_bad_arguments_are_usage_errors_naming_the_field(tiny_run, bad, field, capsys):
    with pytest.raises(SystemExit) as exit_info:
        pam.main([str(tiny_run / "ft"), *bad])
    assert exit_info.value.code == 2
    assert field in capsys.readouterr().err


def test_a_directory_without_a_model_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        pam.main([str(tmp_path)])
    assert "no model/" in capsys.readouterr().err


def test_short_run_writes_json_and_final_line(tiny_run, tmp_path, capsys):
    out = tmp_path / "pam.json"
    pam.main([str(tiny_run / "ft"), "--seeds", "0", "--num_train", "40", "--num_test", "20", "--max_pauses", "2",
              "--fixed_ks", "0", "1", "2", "--steps", "100", "--output", str(out)])
    payload = json.loads(out.read_text())
    assert set(payload["runs"]["0"]["curve"]) == {"0.0", "0.25", "0.5", "0.75", "1.0"}
    curve = payload["runs"]["0"]["curve"]
    assert all(0 <= s["accuracy"] <= 1 and 0 <= s["mean_pauses"] <= 2 for s in curve.values())
    assert curve["1.0"]["mean_pauses"] == 0.0  # at u = 1 a pause only costs
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("planning_accuracy_model: accuracy_gap_u0=")
