"""Finetune under `accelerate launch` with 2 CPU processes follows the 1-process loss curve."""

import json
import os
import subprocess
import sys

import pytest

from adaptive_pause.config import PretrainConfig
from adaptive_pause.pretrain import run_pretrain

TINY = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, pause_slots=8)
# Float reductions differ in order between 1 and 2 processes (a sum split in two halves, then
# all-reduced); over 8 steps that stays far below 1e-4 relative.
REL_TOL = 1e-4


def _launch(num_processes: int, out, base) -> list[dict]:
    args = ["--output_dir", str(out), "--base_model", str(base), "--tasks", "addition", "parity",
            "--max_steps", "8", "--batch_size", "16", "--warmup_steps", "2", "--log_every", "4",
            "--progress", "false", "--max_pauses", "4"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no"]
    if num_processes > 1:
        # On a machine without GPUs this starts `num_processes` CPU processes talking over gloo.
        launch += ["--multi_gpu", "--num_processes", str(num_processes)]
    else:
        launch += ["--num_processes", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(launch + ["-m", "adaptive_pause.cli", "finetune"] + args, capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "history.json").read_text())


def test_two_processes_match_one(tmp_path):
    base = tmp_path / "pre"
    run_pretrain(PretrainConfig(output_dir=str(base), tasks=["addition", "parity"], max_steps=3, batch_size=16,
                                progress=False, **TINY))
    one = _launch(1, tmp_path / "one", base)
    two = _launch(2, tmp_path / "two", base)
    assert {r["num_processes"] for r in one} == {1}
    assert {r["num_processes"] for r in two} == {2}  # really two processes, not a silent single one
    assert len(one) == len(two) == 8
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=REL_TOL), (a, b)
    assert one[-1]["loss"] < one[0]["loss"]  # and it is a real, decreasing training curve
