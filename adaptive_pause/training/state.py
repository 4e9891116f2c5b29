"""Periodic checkpoints of the supervised stages: `state/` of a pretrain or finetune run directory.

Owns: writing the trainable tensors (all weights in pretraining, the adapter's in finetuning, by parameter
name), the optimizer (`checkpoint.optimizer_state`), the LR schedule's counters, every process's torch RNG
and the step with the loss history, atomically (safetensors + JSON, sha256 sidecar), and restoring them for
an exact `--resume`. Data and pause placement are pure functions of (seed, step), so nothing else is needed.

Must not: run the training loop (`loop.py`) or decide when to save.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

from ..checkpoint import atomic_dir, load_optimizer_state, optimizer_state, verify_checksums

STATE_DIR = "state"
FILES = ("trainer.json", "trainable.safetensors", "optimizer.safetensors", "optimizer.json", "rng.safetensors")


def _trainable_names(model) -> list[str]:
    return [name for name, param in model.named_parameters() if param.requires_grad]


def _rng_rows(accelerator) -> dict[str, torch.Tensor]:
    """Every process's torch RNG state, one row per process (a collective: every rank calls it)."""
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state()
    return {k: accelerator.gather(v[None].to(accelerator.device)).cpu() for k, v in states.items()}


def save_train_state(output_dir: Path, model, optimizer, scheduler, accelerator, step: int,
                     history: list[dict]) -> None:
    """Write output_dir/state/ for the model after `step` optimizer steps (every rank calls it)."""
    inner = accelerator.unwrap_model(model)
    full = accelerator.get_state_dict(model)  # collective under FSDP
    opt_tensors, opt_meta = optimizer_state(model, optimizer)
    rng = _rng_rows(accelerator)
    if accelerator.is_main_process:
        trainable = {name: full[name].detach().cpu().contiguous() for name in _trainable_names(inner)}
        trainer = {"step": step, "num_processes": accelerator.num_processes, "history": history,
                   "scheduler": scheduler.state_dict()}
        with atomic_dir(output_dir / STATE_DIR) as tmp:
            save_file(trainable, str(tmp / "trainable.safetensors"))
            save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
            (tmp / "optimizer.json").write_text(json.dumps(opt_meta, indent=2) + "\n")
            save_file(rng, str(tmp / "rng.safetensors"))
            (tmp / "trainer.json").write_text(json.dumps(trainer, indent=2) + "\n")
    accelerator.wait_for_everyone()


def load_train_state(output_dir: Path, model, optimizer, scheduler, accelerator, max_steps: int) -> tuple[int, list]:
    """Restore what `save_train_state` wrote; (step, history). Every problem is a ValueError naming the file."""
    state = output_dir / STATE_DIR
    missing = [name for name in FILES if not (state / name).is_file()]
    if missing:
        raise ValueError(f"resume: {state} is missing {missing}; nothing to resume from")
    verify_checksums(state)
    try:
        trainer = json.loads((state / "trainer.json").read_text())
        step, history, world = int(trainer["step"]), list(trainer["history"]), int(trainer["num_processes"])
        scheduler_state = dict(trainer["scheduler"])
        trainable = load_file(str(state / "trainable.safetensors"))
        opt_tensors = load_file(str(state / "optimizer.safetensors"))
        opt_meta = json.loads((state / "optimizer.json").read_text())
        rng = load_file(str(state / "rng.safetensors"))
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as err:
        raise ValueError(f"resume: {state} is corrupt ({type(err).__name__}: {err})") from None
    if not 0 <= step <= max_steps:
        raise ValueError(f"resume: {state / 'trainer.json'}: step {step} is outside [0, max_steps={max_steps}]")
    if world != accelerator.num_processes:
        raise ValueError(f"resume: {state} was written by {world} processes, this run has "
                         f"{accelerator.num_processes}; an exact resume needs the same number")
    inner = accelerator.unwrap_model(model)
    names = set(_trainable_names(inner))
    if set(trainable) != names:
        raise ValueError(f"resume: {state / 'trainable.safetensors'} holds other tensors than the model's trainable "
                         f"ones (differing: {sorted(set(trainable) ^ names)[:5]}); was it written by another model?")
    params = dict(inner.named_parameters())
    for name, value in trainable.items():
        if params[name].shape != value.shape:
            raise ValueError(f"resume: {state / 'trainable.safetensors'}: {name} has shape {tuple(value.shape)}, "
                             f"the model's is {tuple(params[name].shape)}")
    # torch's distributed state-dict API, as for the optimizer: under FSDP the parameters are shards (DTensors)
    # that each take their part of the full tensor; elsewhere it is a plain copy.
    set_model_state_dict(model, trainable, options=StateDictOptions(full_state_dict=True, strict=False))
    try:
        load_optimizer_state(model, optimizer, opt_tensors, opt_meta)
        scheduler.load_state_dict(scheduler_state)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"resume: {state / 'optimizer.json'} does not fit this run's optimizer "
                         f"({type(err).__name__}: {err})") from None
    rank = accelerator.process_index
    # clone: a row of the saved table is a view at an offset, and torch 2.13's set_rng_state crashes the process
    # (SIGSEGV) on such a view, so every rank but 0 died on resume.
    torch.set_rng_state(rng["torch"][rank].clone())
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"][rank].clone())
    return step, history
