"""Finetune under `accelerate launch` with 2 CPU processes follows the 1-process loss curve."""

import json

import pytest

from adaptive_pause.training.pretrain import PretrainConfig
from adaptive_pause.training.pretrain import run_pretrain
from helpers import accelerate_launch, tiny_model

# Float reductions differ in order between 1 and 2 processes (a sum split in two halves, then
# all-reduced); over 8 steps that stays far below 1e-4 relative.
REL_TOL = 1e-4


def _launch(num_processes: int, out, base) -> list[dict]:
    result = accelerate_launch(["finetune", "--output_dir", str(out), "--base_model", str(base), "--tasks", "addition",
                                "parity", "--max_steps", "8", "--batch_size", "16", "--warmup_steps", "2",
                                "--log_every", "4", "--progress", "false", "--max_pauses", "4"], num_processes)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "history.json").read_text())


def test_two_processes_match_one(tmp_path):
    base = tmp_path / "pre"
    run_pretrain(PretrainConfig(output_dir=str(base), tasks=["addition", "parity"], max_steps=3, batch_size=16,
                                progress=False, model=tiny_model()))
    one = _launch(1, tmp_path / "one", base)
    two = _launch(2, tmp_path / "two", base)
    assert {r["num_processes"] for r in one} == {1}
    assert {r["num_processes"] for r in two} == {2}  # really two processes, not a silent single one
    assert len(one) == len(two) == 8
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=REL_TOL), (a, b)
    assert one[-1]["loss"] < one[0]["loss"]  # and it is a real, decreasing training curve
