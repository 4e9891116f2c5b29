"""kill -9 and `--resume`: each training stage, killed by SIGKILL once a checkpoint is on disk, resumes to final
weights equal bit for bit to an uninterrupted run's; a kill between the two renames of a checkpoint replacement
still resumes (docs/reliability.md).

The CLI runs in a forked child (`adaptive_pause.cli.main`, the code `python -m adaptive_pause.cli` runs): a real
process, really killed, without the 10-30 s of a fresh interpreter's imports per run on a loaded 2-core machine.
The slow test at the end does the same through `python -m adaptive_pause.cli` subprocesses.
"""

import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
import torch
from helpers import REPO, TINY
from safetensors.torch import load_file

TINY_FLAGS = [flag for key, value in TINY.items() for flag in (f"--model.{key}", str(value))]
SUPERVISED = ["--tasks", "addition:1-2", "--batch_size", "16", "--warmup_steps", "1", "--log_every", "100",
              "--progress", "false", "--checkpoint_every", "2"]


def stage_args(stage: str, out: Path, base: Path | None = None) -> list[str]:
    if stage == "pretrain":
        return ["pretrain", "--output_dir", str(out), "--max_steps", "14", *SUPERVISED, *TINY_FLAGS]
    if stage == "finetune":
        return ["finetune", "--output_dir", str(out), "--base_model", str(base), "--max_steps", "14",
                "--max_pauses", "2", "--lora_r", "4", *SUPERVISED]
    return ["train-controller", "--output_dir", str(out), "--iterations", "12", "--episodes_per_iteration", "32",
            "--update_epochs", "1", "--num_minibatches", "2", "--anneal_lr", "false", "--checkpoint_every", "1",
            "--eval_every", "100", "--progress", "false", "--analytic.max_pauses", "4", "--analytic.levels", "3"]


# the tensors that make up each stage's result, and its checkpoint's (all must match an uninterrupted run)
FINAL = {"pretrain": ["model/model.safetensors", "state/trainable.safetensors", "state/optimizer.safetensors"],
         "finetune": ["adapter/adapter_model.safetensors", "state/trainable.safetensors",
                      "state/optimizer.safetensors"],
         "train-controller": ["controller/controller.safetensors", "state/policy.safetensors",
                              "state/optimizer.safetensors", "state/rng_0.safetensors"]}


def start_cli(args: list[str], log: Path, kill_between_renames_of: str | None = None) -> int:
    """Fork a child that runs `adaptive-pause ARGS` (output to `log`); returns its pid.

    With `kill_between_renames_of` NAME, the child SIGKILLs itself inside its first replacement of an existing
    NAME/ (its second checkpoint), right after the old copy was moved aside and before the new one is moved in
    (policies/io.replace_dir)."""
    pid = os.fork()
    if pid:
        return pid
    code = 70
    try:
        sys.stdout = sys.stderr = open(log, "w", buffering=1)  # noqa: SIM115 - open until os._exit
        os.dup2(sys.stdout.fileno(), 1)
        os.dup2(sys.stdout.fileno(), 2)
        if kill_between_renames_of:
            _arm_kill_between_renames(kill_between_renames_of)
        from adaptive_pause.cli import main

        code = main(args)
    except BaseException:  # noqa: BLE001 - the child reports anything in its log and exits 70
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        os._exit(code)  # never the parent's atexit handlers or pytest's teardown


def _arm_kill_between_renames(name: str) -> None:
    replace = os.replace

    def replace_then_maybe_die(src, dst, *args, **kwargs):
        replace(src, dst, *args, **kwargs)
        if Path(dst).name == f".{name}.old":  # the old copy is aside; the new one still at .NAME.new
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace_then_maybe_die


def wait(pid: int, log: Path, timeout: float = 240) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"the child did not end within {timeout} s; its log:\n{log.read_text()}")


def run_cli(args: list[str], log: Path) -> None:
    code = wait(start_cli(args, log), log)
    assert code == 0, log.read_text()


def kill_once_checkpointed(args: list[str], out: Path, log: Path, timeout: float = 240) -> int:
    """Start the stage, poll until a complete checkpoint is on disk, SIGKILL it there; it must die by the kill.
    Returns the step (iteration) of the checkpoint the kill left."""
    pid = start_cli(args, log)
    deadline = time.time() + timeout
    while not (out / "state" / "trainer.json").is_file():
        done, _ = os.waitpid(pid, os.WNOHANG)
        assert not done, f"the run ended before its first checkpoint:\n{log.read_text()}"
        assert time.time() < deadline, f"no checkpoint within {timeout} s:\n{log.read_text()}"
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, \
        f"the run finished before the kill landed:\n{log.read_text()}"
    # the kill may have landed inside a replacement: the newest complete copy, as the resume will find it
    newest = next(d for d in (out / "state", out / ".state.new", out / ".state.old") if (d / "trainer.json").is_file())
    trainer = json.loads((newest / "trainer.json").read_text())
    return trainer.get("step", trainer.get("iteration"))


def assert_same_weights(straight: Path, resumed: Path, names: list[str]) -> None:
    for name in names:
        a, b = load_file(str(straight / name)), load_file(str(resumed / name))
        assert a.keys() == b.keys(), name
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}: {key} differs from the uninterrupted run's"


@pytest.fixture(scope="module")
def straight_runs(tmp_path_factory, tiny_run):
    """Uninterrupted runs of each stage, made on demand: {stage: run directory}."""
    root = tmp_path_factory.mktemp("straight")
    made = {}

    def get(stage: str) -> Path:
        if stage not in made:
            out = root / stage
            run_cli(stage_args(stage, out, tiny_run / "pre"), root / f"{stage}.log")
            made[stage] = out
        return made[stage]

    return get


@pytest.mark.parametrize("stage", ["pretrain", "finetune", "train-controller"])
def test_kill_9_once_checkpointed_then_resume_equals_an_uninterrupted_run(stage, straight_runs, tiny_run, tmp_path):
    out = tmp_path / "run"
    args = stage_args(stage, out, tiny_run / "pre")
    killed_at = kill_once_checkpointed(args, out, tmp_path / "killed.log")
    run_cli(args + ["--resume", "true"], tmp_path / "resumed.log")
    assert f"resuming from {out / 'state'} at {'iteration' if stage == 'train-controller' else 'step'} " \
           f"{killed_at}" in (tmp_path / "resumed.log").read_text()
    assert_same_weights(straight_runs(stage), out, FINAL[stage])


@pytest.mark.parametrize("stage", ["train-controller", pytest.param("pretrain", marks=pytest.mark.slow),
                                   pytest.param("finetune", marks=pytest.mark.slow)])
def test_a_kill_between_the_renames_of_a_checkpoint_replacement_still_resumes(stage, straight_runs, tiny_run,
                                                                            tmp_path):
    out = tmp_path / "run"
    args = stage_args(stage, out, tiny_run / "pre")
    pid = start_cli(args, tmp_path / "killed.log", kill_between_renames_of="state")
    assert wait(pid, tmp_path / "killed.log") == -signal.SIGKILL
    # the moment the replacement guards: no state/, the old copy aside, the new one complete beside it
    assert not (out / "state").exists()
    assert (out / ".state.old" / "trainer.json").is_file() and (out / ".state.new" / "trainer.json").is_file()
    run_cli(args + ["--resume", "true"], tmp_path / "resumed.log")
    second = "iteration 2" if stage == "train-controller" else "step 4"  # the copy that was at .state.new
    assert f"resuming from {out / 'state'} at {second}" in (tmp_path / "resumed.log").read_text()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".state")) == []
    assert_same_weights(straight_runs(stage), out, FINAL[stage])


@pytest.mark.slow  # three fresh interpreters per stage (10-30 s of imports each on a loaded 2-core machine)
@pytest.mark.parametrize("stage", ["pretrain", "train-controller"])
def test_kill_9_of_the_installed_command_then_resume(stage, tiny_run, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

    def command(out, *extra):
        return [sys.executable, "-m", "adaptive_pause.cli", *stage_args(stage, out, tiny_run / "pre"), *extra,
                *(["--torch_threads", "1"] if stage == "train-controller" else [])]

    subprocess.run(command(tmp_path / "straight"), env=env, cwd=REPO, check=True, capture_output=True, timeout=600)
    out = tmp_path / "run"
    child = subprocess.Popen(command(out), env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while not (out / "state" / "trainer.json").is_file():
        assert child.poll() is None, child.stderr.read()
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    resumed = subprocess.run(command(out, "--resume", "true"), env=env, cwd=REPO, capture_output=True, text=True,
                             timeout=600, check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(tmp_path / "straight", out, FINAL[stage])
