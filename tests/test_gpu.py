"""On a CUDA GPU: the decode loop gives the CPU's tokens, and the stages run under the repo's GPU accelerate configs.

Skipped where torch sees no CUDA device (CI, this project's CPU machines); `scripts/gpu_check.sh` runs them on a
GPU machine. The tiny models here are launch-bound on a GPU: these check placement and equivalence, not speed.
"""

import copy
import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import PROMPTS, REPO, decisive_head, opinionated_model
from safetensors.torch import load_file

from adaptive_pause.decoding import DecodeConfig, decode
from policies import ConfidenceThreshold, FixedPauses

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _decode(model, policy, seed=None):
    s = model.settings
    return decode(model.lm, model.tokenizer, model.encode(PROMPTS), policy, [0.0, 0.3, 0.7, 1.0],
                  DecodeConfig(max_new_tokens=8, max_pauses=6), s.pause_id, s.numbering, s.pause_slots, seed=seed)


@pytest.mark.parametrize("numbering", ["contiguous", "slotted"])
@pytest.mark.parametrize("policy", ["fixed", "confidence", "controller"])
def test_gpu_decode_gives_the_cpu_tokens(numbering, policy):
    """Greedy answers and pause counts on cuda equal the CPU's (fp32; the opinionated model keeps the argmax far
    from ties, so kernel-order rounding cannot flip a token)."""
    model = opinionated_model(numbering)
    make = {"fixed": lambda: FixedPauses(3), "confidence": lambda: ConfidenceThreshold(0.5),
            "controller": lambda: decisive_head(model.hidden_size)}[policy]
    cpu_policy = make()
    cpu = _decode(model, cpu_policy)
    model.to("cuda")
    gpu_policy = copy.deepcopy(cpu_policy).to("cuda")
    gpu = _decode(model, gpu_policy)
    assert gpu.sequences.device.type == "cuda"
    assert gpu.answer_ids == cpu.answer_ids
    assert gpu.pauses_total.cpu().tolist() == cpu.pauses_total.tolist()


def _launch(config: str, args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    # the configs for several GPUs name 8 processes; here, one per visible GPU
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(REPO / "scripts" / "accelerate" / config), "--num_processes", str(torch.cuda.device_count()),
               "-m", "adaptive_pause.cli", *args]
    out = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    if out.returncode != 0:  # the launcher's own traceback hides the process's: show the process's first
        out.stderr = "\n".join(line for line in out.stderr.splitlines() if line.startswith("[rank0]")
                               )[-4000:] + "\n" + out.stderr[-1000:]
    return out


STEPS = ["--max_steps", "6", "--batch_size", "16", "--warmup_steps", "1", "--log_every", "3", "--progress", "false",
         "--checkpoint_every", "3"]
TINY_FLAGS = ["--model.hidden_size", "32", "--model.num_layers", "2", "--model.num_heads", "2",
              "--model.intermediate_size", "64", "--model.pause_slots", "8"]


# FSDP (v2, one GPU, torch 2.11 / accelerate 1.15 on the lent H200) stopped in pretrain with "aten.eq.Tensor got
# mixed torch.Tensor and DTensor" (docs/benchmarks.md, "On a GPU"). Session 20 located it on CPU processes with
# FSDP2 turned on (tests/training/test_fsdp.py) and fixed it with the other FSDP2 problems it hid; a GPU run (bf16,
# NCCL) has not confirmed it yet, so the case stays a non-strict expected failure until one does.
FSDP_KNOWN = pytest.mark.xfail(reason="FSDP on a GPU: fixed on CPU processes, unconfirmed on a GPU", strict=False)


@pytest.mark.parametrize("config", ["gpu_1.yaml", pytest.param("fsdp.yaml", marks=FSDP_KNOWN)])
def test_stages_run_on_the_gpu_configs(tmp_path, config):
    """pretrain -> finetune -> train-controller under the config; the model really trained on cuda (history says
    so) and the saved run loads back on the CPU."""
    pre, ft, ctl = tmp_path / "pre", tmp_path / "ft", tmp_path / "ctl"
    out = _launch(config, ["pretrain", "--output_dir", str(pre), "--tasks", "addition", *STEPS, *TINY_FLAGS])
    assert out.returncode == 0, out.stderr[-3000:]
    out = _launch(config, ["finetune", "--output_dir", str(ft), "--base_model", str(pre), "--tasks", "addition",
                           "--max_pauses", "3", "--lora_r", "4", *STEPS])
    assert out.returncode == 0, out.stderr[-3000:]
    history = json.loads((ft / "history.json").read_text())
    assert all(row["loss"] == row["loss"] for row in history)
    out = _launch(config, ["train-controller", "--env", "lm", "--model_run_dir", str(ft), "--output_dir", str(ctl),
                           "--iterations", "3", "--episodes_per_iteration", "16", "--max_pauses", "6",
                           "--progress", "false"])
    assert out.returncode == 0, out.stderr[-3000:]
    from adaptive_pause.modeling import AdaptivePauseModel

    model = AdaptivePauseModel.from_pretrained(ctl)
    assert model.policy is not None


def test_a_gpu_run_is_reproducible(tmp_path):
    """The same pretrain config twice on cuda: identical weights (seeds reach the device's generator)."""
    args = ["--tasks", "addition", *STEPS, *TINY_FLAGS]
    for name in ("a", "b"):
        out = _launch("gpu_1.yaml", ["pretrain", "--output_dir", str(tmp_path / name), *args])
        assert out.returncode == 0, out.stderr[-3000:]
    a = load_file(str(next((tmp_path / "a" / "model").glob("*.safetensors"))))
    b = load_file(str(next((tmp_path / "b" / "model").glob("*.safetensors"))))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
