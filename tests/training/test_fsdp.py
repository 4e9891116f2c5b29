"""Two-process runs under FSDP2 and DDP: pretrain, finetune and train-controller (joint LoRA) under FSDP2 (turned on
over gloo CPU processes by tests/fsdp_cpu.py, as Accelerate does over NCCL on GPUs) follow the same stages under
DDP, and a two-process run killed with SIGKILL once a checkpoint is on disk resumes to the weights of an
uninterrupted run."""

import json
import re
import subprocess
import time

import psutil
import pytest
import torch
from safetensors.torch import load_file

from adaptive_pause.modeling import ModelConfig, load_lm
from adaptive_pause.training.pretrain import PretrainConfig, run_pretrain
from helpers import REPO, TINY, accelerate_launch, launch_command, tiny_model

pytestmark = pytest.mark.slow  # every test launches 2-process runs (about 10 s each on 2 cores)

TINY_FLAGS = [flag for key, value in TINY.items() for flag in (f"--model.{key}", str(value))]
COMMON = ["--tasks", "addition:1-2", "--batch_size", "16", "--warmup_steps", "1", "--progress", "false",
          "--log_every", "1"]


def pretrain_args(out, steps: int = 8, every: int = 4) -> list[str]:
    return ["pretrain", "--output_dir", str(out), "--max_steps", str(steps), "--checkpoint_every", str(every),
            *COMMON, *TINY_FLAGS]


def finetune_args(out, base, steps: int = 6, every: int = 3, *extra: str) -> list[str]:
    return ["finetune", "--output_dir", str(out), "--base_model", str(base), "--max_steps", str(steps),
            "--checkpoint_every", str(every), "--max_pauses", "2", "--lora_r", "4", *COMMON, *extra]


def run(args: list[str], fsdp: bool) -> None:
    done = accelerate_launch(args, processes=2, fsdp=fsdp)
    assert done.returncode == 0, done.stderr[-4000:]
    if fsdp:  # really sharded (tests/fsdp_cpu.py reports it), not a silent DDP run
        assert re.search(r"fsdp_cpu: [1-9][0-9]* parameters sharded", done.stdout), done.stdout[-2000:]


def losses(out) -> list[float]:
    history = json.loads((out / "history.json").read_text())
    assert {row["num_processes"] for row in history} == {2}  # really two processes
    return [row["loss"] for row in history]


def assert_close(a: dict, b: dict, atol: float) -> None:
    assert set(a) == set(b)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=0, msg=name)


def test_fsdp2_pretrain_and_finetune_follow_ddp(tmp_path):
    for kind in ("ddp", "fsdp"):
        run(pretrain_args(tmp_path / f"pre_{kind}"), fsdp=kind == "fsdp")
    # FSDP2 reduce-scatters where DDP all-reduces: the same sums in another order
    assert losses(tmp_path / "pre_fsdp") == pytest.approx(losses(tmp_path / "pre_ddp"), rel=1e-5)
    assert_close(load_file(tmp_path / "pre_fsdp" / "model" / "model.safetensors"),
                 load_file(tmp_path / "pre_ddp" / "model" / "model.safetensors"), atol=1e-5)  # no second lm_head
    lm, _ = load_lm(ModelConfig(name_or_path=str(tmp_path / "pre_fsdp")))
    assert lm.get_output_embeddings().weight is lm.get_input_embeddings().weight  # saved tied, loads tied

    # LoRA with the <pause> and interruption-marker rows (added to the tied embeddings) trained through peft's
    # wrappers of both
    mix = ("--tasks", "addition:1-2", "interrupt:1-1")
    for kind in ("ddp", "fsdp"):
        run(finetune_args(tmp_path / f"ft_{kind}", tmp_path / "pre_ddp", 6, 3, *mix), fsdp=kind == "fsdp")
    assert losses(tmp_path / "ft_fsdp") == pytest.approx(losses(tmp_path / "ft_ddp"), rel=1e-5)
    adapter = [load_file(tmp_path / f"ft_{kind}" / "adapter" / "adapter_model.safetensors") for kind in ("ddp", "fsdp")]
    assert any("trainable_tokens" in name for name in adapter[0])
    assert_close(adapter[1], adapter[0], atol=1e-6)
    assert_close(load_file(tmp_path / "ft_fsdp" / "model" / "model.safetensors"),
                 load_file(tmp_path / "ft_ddp" / "model" / "model.safetensors"), atol=0)  # the resized base

    # the countdown is added to the embeddings outside the forward: refused by name under FSDP2
    done = accelerate_launch(finetune_args(tmp_path / "ft_countdown", tmp_path / "pre_ddp", 6, 3,
                                           "--pause_countdown", "true"), processes=2, fsdp=True)
    assert done.returncode != 0 and "pause_countdown: not under FSDP" in done.stderr
    assert "[rank0]: Traceback" not in done.stderr


def controller_args(out, model_run_dir, iterations: int = 3, every: int = 3, tasks: str = "addition:1-2") -> list[str]:
    return ["train-controller", "--env", "lm", "--model_run_dir", str(model_run_dir), "--tasks", tasks,
            "--train_adapter", "true", "--iterations", str(iterations), "--episodes_per_iteration", "16",
            "--update_epochs", "1", "--num_minibatches", "2", "--max_pauses", "2", "--max_pauses_total", "4",
            "--checkpoint_every", str(every), "--eval_every", "100", "--progress", "false", "--output_dir", str(out)]


def tiny_finetune(root):
    base = root / "pre"
    run_pretrain(PretrainConfig(output_dir=str(base), tasks=["addition:1-2"], max_steps=3, batch_size=16,
                                progress=False, model=tiny_model()))
    run(finetune_args(root / "ft", base, steps=3), fsdp=False)
    return root / "ft"


def test_fsdp2_joint_controller_training_follows_ddp_and_refusals(tmp_path):
    """Rollouts run the sharded LM and head through the decode loop (gathered for it); the run directory is saved
    from gathered weights and loads as the DDP run's does."""
    finetuned = tiny_finetune(tmp_path)
    for kind in ("ddp", "fsdp"):
        run(controller_args(tmp_path / f"ppo_{kind}", finetuned), fsdp=kind == "fsdp")
    results = [json.loads((tmp_path / f"ppo_{kind}" / "result.json").read_text()) for kind in ("ddp", "fsdp")]
    assert results[1]["num_processes"] == 2 and results[1]["replicas_in_sync"]
    for key, value in results[0]["metrics"].items():
        if not key.startswith("charts/"):  # timings
            assert results[1]["metrics"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    for part in ("controller/controller.safetensors", "adapter/adapter_model.safetensors", "model/model.safetensors"):
        assert_close(load_file(tmp_path / "ppo_fsdp" / part), load_file(tmp_path / "ppo_ddp" / part), atol=1e-5)

    # train-urgency: a small head over a frozen LM, nothing for FSDP to shard: refused by name, nothing written
    done = accelerate_launch(["train-urgency", str(tmp_path / "ppo_fsdp"), "--max_steps", "2"], processes=2,
                             fsdp=True)
    # the launcher prints its own traceback of the failed workers; the workers print the error alone
    assert done.returncode != 0 and "not FSDP" in done.stderr and "[rank0]: Traceback" not in done.stderr
    assert not (tmp_path / "ppo_fsdp" / "urgency_train").exists()


def kill_once_checkpointed(args: list[str], out, fsdp: bool) -> int:
    """Start the run, SIGKILL the launcher and both workers once state/ holds a checkpoint; its step."""
    command, env = launch_command(args, processes=2, fsdp=fsdp)
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trainer, deadline = out / "state" / "trainer.json", time.time() + 300
    while not trainer.is_file() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    for proc in psutil.Process(process.pid).children(recursive=True) + [psutil.Process(process.pid)]:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    process.wait()
    counters = json.loads(trainer.read_text())
    return counters.get("step", counters.get("iteration"))


@pytest.mark.parametrize("stage, fsdp", [("pretrain", False), ("finetune", True), ("train-controller", False),
                                         ("train-controller", True)],
                         ids=["ddp-pretrain", "fsdp2-finetune", "ddp-joint-controller", "fsdp2-joint-controller"])
def test_a_killed_two_process_run_resumes_exactly(stage, fsdp, tmp_path):
    """DDP: every rank restores its own RNG row (rank 1 once crashed there). FSDP2: the sharded parameters and
    optimizer take their parts of the saved full tensors."""
    steps = 120
    if stage == "pretrain":
        args = lambda out: pretrain_args(out, steps=steps, every=10)  # noqa: E731
        weights = ["model/model.safetensors"]
    elif stage == "finetune":
        base = tmp_path / "pre"
        run_pretrain(PretrainConfig(output_dir=str(base), tasks=["addition:1-2"], max_steps=3, batch_size=16,
                                    progress=False, model=tiny_model()))
        args = lambda out: finetune_args(out, base, steps=steps, every=10)  # noqa: E731
        weights = ["adapter/adapter_model.safetensors"]
    else:
        steps, finetuned = 24, tiny_finetune(tmp_path)
        # a file-backed task, so that data.json lists the examples drawn: 40,000 prompts, about 4,000 in dev
        task = tmp_path / "sums.jsonl"
        task.write_text("".join(json.dumps({"prompt": f"{a}+{b}=", "answer": str(a + b)}) + "\n"
                                for a in range(200) for b in range(200)))
        args = lambda out: controller_args(out, finetuned, iterations=steps, every=3, tasks=f"jsonl:{task}")  # noqa
        weights = ["controller/controller.safetensors", "adapter/adapter_model.safetensors", "data.json"]
    killed = kill_once_checkpointed(args(tmp_path / "killed"), tmp_path / "killed", fsdp)
    finished = "result.json" if stage == "train-controller" else "history.json"
    assert 0 < killed < steps and not (tmp_path / "killed" / finished).exists()  # killed mid-run
    run(args(tmp_path / "killed") + ["--resume", "true"], fsdp)
    run(args(tmp_path / "straight"), fsdp)
    if stage == "train-controller":  # the examples both processes drew, those before the kill included
        record = weights.pop()
        records = [json.loads((tmp_path / name / record).read_text())["tasks"]["sums"]["example_ids"]
                   for name in ("killed", "straight")]
        assert records[0] == records[1]
        # 24 x 16 draws from ~4,000 prompts: ~18 repeats expected; one process's half would give 192 at most
        assert len(records[1]) > 0.75 * steps * 16
    for part in weights:
        resumed, straight = (load_file(tmp_path / name / part) for name in ("killed", "straight"))
        assert set(resumed) == set(straight)
        for name in straight:
            assert torch.equal(resumed[name], straight[name]), (part, name)
    if stage != "train-controller":
        assert losses(tmp_path / "killed") == losses(tmp_path / "straight")
