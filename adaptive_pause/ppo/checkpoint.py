"""Controller PPO's checkpoints: `controller/` and `state/` of a run directory, safetensors + JSON only.

Owns: writing the head, the optimizer, every process's RNG state and the trainer counters (and, in joint
training, the LM's trainable tensors and the peft adapter/) atomically; restoring them for an exact
`--resume`; and which config fields may change on resume.

Must not: run training or decide when to checkpoint (`trainer.py`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, set_model_state_dict

from policies import PausePolicy, save_policy

from ..checkpoint import atomic_dir, load_optimizer_state, optimizer_state, verify_checksums
from .config import PPOConfig

STATE_FILES = ("trainer.json", "policy.safetensors", "optimizer.safetensors", "optimizer.json")
ADAPTER_STATE = "adapter.safetensors"  # joint LoRA training: the LM's trainable tensors, by parameter name


def _adapter_names(lm: nn.Module | None) -> list[str]:
    """Names of the LM's trainable tensors (named_parameters: a tied tensor appears once)."""
    return [] if lm is None else [name for name, param in lm.named_parameters() if param.requires_grad]


def save_checkpoint(run_dir: Path, policy: PausePolicy, evaluator: nn.Module, optimizer,
                    generators: dict[str, torch.Generator], trainer: dict, accelerator, lm=None) -> None:
    """Write run_dir/{controller/, state/} atomically; every process's RNG goes to state/rng_<rank>.safetensors.

    With `lm` (joint LoRA training) also state/adapter.safetensors (exact resume) and the peft adapter/.
    """
    # Joint: the evaluator holds the whole LM; its frozen base is not part of the training state.
    full = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=lm is not None)
    state_dict = get_model_state_dict(evaluator, options=full)  # collective under FSDP: every rank calls it
    policy_state = {k.removeprefix("policy."): v for k, v in state_dict.items() if k.startswith("policy.")}
    adapter_state = {name: state_dict[f"lm.{name}"].contiguous() for name in _adapter_names(lm)
                     if f"lm.{name}" in state_dict}  # with cpu_offload only rank 0 holds the tensors
    optimizer_tensors, optimizer_meta = optimizer_state(evaluator, optimizer)
    rng = {name: g.get_state() for name, g in generators.items()}
    rng["torch_global"] = torch.get_rng_state()
    if torch.cuda.is_available():  # policy sampling on a GPU draws from the device's generator
        rng["cuda"] = torch.cuda.get_rng_state()
    staging = run_dir / ".rng-staging"
    if accelerator.is_main_process:
        staging.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    save_file(rng, str(staging / f"rng_{accelerator.process_index}.safetensors"))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with atomic_dir(run_dir / "controller") as tmp:
            save_policy(policy, tmp, policy_state)  # the gathered weights: under FSDP the policy's are shards
        with atomic_dir(run_dir / "state") as tmp:
            save_file({k: v.contiguous() for k, v in policy_state.items()}, str(tmp / "policy.safetensors"))
            save_file(optimizer_tensors, str(tmp / "optimizer.safetensors"))
            (tmp / "optimizer.json").write_text(json.dumps(optimizer_meta, indent=2) + "\n")
            for rank in range(accelerator.num_processes):
                name = f"rng_{rank}.safetensors"
                save_file(load_file(str(staging / name)), str(tmp / name))
            (tmp / "trainer.json").write_text(json.dumps(trainer, indent=2) + "\n")
            if lm is not None:
                save_file(adapter_state, str(tmp / ADAPTER_STATE))
        if lm is not None:  # the peft adapter as it stands: loadable with the run's model/ at any checkpoint
            with atomic_dir(run_dir / "adapter") as tmp:
                # from the gathered tensors: under FSDP the LM's own are shards
                lm.save_pretrained(tmp, save_embedding_layers=False, state_dict=adapter_state)
        for path in staging.iterdir():
            path.unlink()
        staging.rmdir()
    accelerator.wait_for_everyone()


def load_checkpoint(run_dir: Path, policy: PausePolicy, evaluator: nn.Module, optimizer,
                    generators: dict[str, torch.Generator], accelerator, lm=None) -> dict:
    """Restore weights (with `lm`: its trainable tensors too), optimizer, this process's RNG; return
    trainer.json (iteration, counters)."""
    state = run_dir / "state"
    wanted = STATE_FILES + ((ADAPTER_STATE,) if lm is not None else ())
    missing = [name for name in wanted if not (state / name).is_file()]
    if missing:
        raise ValueError(f"resume: {state} is missing {missing}; nothing to resume from")
    verify_checksums(state)
    try:
        return _load(state, policy, evaluator, optimizer, generators, accelerator, lm)
    except (OSError, KeyError, TypeError, RuntimeError, SafetensorError, json.JSONDecodeError) as err:
        raise ValueError(f"resume: {state} is corrupt or does not fit this run ({type(err).__name__}: {err})") \
            from None


TRAINER_COUNTERS = ("iteration", "episodes", "decisions", "num_processes", "last_good_iteration")


def _load(state: Path, policy, evaluator, optimizer, generators, accelerator, lm) -> dict:
    trainer = json.loads((state / "trainer.json").read_text())
    bad = [k for k in TRAINER_COUNTERS if not isinstance(trainer.get(k), int) or isinstance(trainer.get(k), bool)
           or trainer[k] < 0]
    if bad or not isinstance(trainer.get("elapsed_s"), (int, float)):
        raise ValueError(f"resume: {state / 'trainer.json'}: counters {bad or ['elapsed_s']} must be integers >= 0")
    if trainer["num_processes"] != accelerator.num_processes:
        raise ValueError(f"resume: the checkpoint was written by {trainer['num_processes']} processes, this run has "
                         f"{accelerator.num_processes}; an exact resume needs the same number")
    policy_state = load_file(str(state / "policy.safetensors"))
    if set(policy_state) != set(policy.state_dict()):
        raise ValueError(f"resume: {state / 'policy.safetensors'} holds other tensors than the controller's "
                         f"(differing: {sorted(set(policy_state) ^ set(policy.state_dict()))[:5]})")
    weights = {f"policy.{name}": value for name, value in policy_state.items()}
    if lm is not None:
        saved = load_file(str(state / ADAPTER_STATE))
        names = set(_adapter_names(lm))
        if set(saved) != names:
            raise ValueError(f"resume: {state / ADAPTER_STATE} holds {sorted(set(saved) ^ names)} where the model's "
                             "trainable adapter tensors differ; was the run trained on another model_run_dir?")
        weights.update({f"lm.{name}": value for name, value in saved.items()})
    # torch's distributed state-dict API, as for the optimizer: under FSDP each shard takes its part
    set_model_state_dict(evaluator, weights, options=StateDictOptions(full_state_dict=True, strict=False))
    load_optimizer_state(evaluator, optimizer, load_file(str(state / "optimizer.safetensors")),
                          json.loads((state / "optimizer.json").read_text()))
    rng = load_file(str(state / f"rng_{accelerator.process_index}.safetensors"))
    for name, generator in generators.items():
        generator.set_state(rng[name])
    torch.set_rng_state(rng["torch_global"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    return trainer


# The fields that may change between a run and its resumption; any other difference is refused.
# output_dir: a moved run resumes (where it lives is not its identity); model_run_dir: compared by what it names.
RESUMABLE_CHANGES = {"iterations", "resume", "progress", "eval_every", "checkpoint_every", "torch_threads",
                     "output_dir", "overwrite"}


def _same_path(a, b) -> bool:
    return a == b or (isinstance(a, str) and isinstance(b, str) and os.path.realpath(a) == os.path.realpath(b))


def check_resumable(saved: PPOConfig, config: PPOConfig) -> None:
    diffs = [f"{f.name}: saved={getattr(saved, f.name)!r}, now={getattr(config, f.name)!r}"
             for f in dataclasses.fields(PPOConfig)
             if f.name not in RESUMABLE_CHANGES and not (
                 f.name == "model_run_dir" and _same_path(saved.model_run_dir, config.model_run_dir))
             and getattr(saved, f.name) != getattr(config, f.name)]
    if diffs:
        raise ValueError("resume: the config differs from the run's config.yaml: " + "; ".join(diffs))
