"""Finetune under `accelerate launch` with 2 CPU processes follows the 1-process loss curve."""

import json

import pytest
import torch

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


@pytest.mark.slow
def test_train_urgency_on_two_processes_matches_one_with_dropout(tmp_path):
    """Each row's dropout mask is drawn as on one process (the head runs on the whole global batch under one
    seed), so the loss curve and the estimator do not depend on the process count."""
    import shutil

    from safetensors.torch import load_file

    from helpers import tiny_pipeline

    finetuned = tiny_pipeline(tmp_path / "pipe", ["addition:1-2"])
    runs = {}
    for processes in (1, 2):
        run_dir = tmp_path / f"run{processes}"
        shutil.copytree(finetuned, run_dir)
        done = accelerate_launch(["train-urgency", str(run_dir), "--tasks", "addition:1-2", "--num_train", "64",
                                  "--num_validation", "32", "--num_test", "32", "--max_steps", "30",
                                  "--batch_size", "16", "--width", "16", "--dropout", "0.3", "--eval_every", "15",
                                  "--progress", "false"], processes)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[processes] = run_dir
    one, two = (json.loads((runs[p] / "urgency_train" / "history.json").read_text()) for p in (1, 2))
    assert [r["loss"] for r in two] == pytest.approx([r["loss"] for r in one], rel=REL_TOL)
    weights = [load_file(runs[p] / "urgency" / "urgency.safetensors") for p in (1, 2)]
    for name, value in weights[0].items():
        assert torch.allclose(weights[1][name], value, atol=1e-5), name


@pytest.mark.parametrize("command", ["sweep", "eval-pauses", "demo", "generate", "serve", "import-gguf"])
def test_commands_that_run_in_one_process_refuse_several(command, monkeypatch, capsys, tmp_path):
    """Under `accelerate launch` every process would run the whole job (two sweeps racing for one output file):
    refused before anything is read or written."""
    from adaptive_pause.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.chdir(tmp_path)
    assert main([command, str(tmp_path / "run")]) == 2
    assert f"{command} runs in one" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
