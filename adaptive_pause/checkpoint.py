"""Atomic run-directory writes, agreement checks between saved parts, and optimizer state as safetensors.

Owns: writing a directory (or file) to a temporary sibling and renaming it into place, so a crash never
leaves a half-written checkpoint; checking that a tokenizer, model and controller agree (vocab size,
hidden size, pause id), with a message that says exactly what differs; an optimizer's state as safetensors +
JSON (never a pickle); `NonFiniteLossError`, the stop that keeps the last good checkpoint; sha256 sidecars
(`checksums.json`) of a directory's tensor files, checked on load with an error naming the file. The
replacement rule itself (`replace_dir`, `recover_dir`) lives in policies/io.py (policies never import us).

Must not: know about training loops or decoding.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from policies.io import atomic_directory, file_sha256, recover_dir, replace_dir  # noqa: F401 - re-exported: one rule

CHECKSUMS = "checksums.json"


class NonFiniteLossError(RuntimeError):
    """A loss was NaN/inf: training stops; the last checkpoint on disk is left as it was."""


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temporary directory that replaces `path` only when the block succeeds, with a `checksums.json`
    of its files (the replacement rule itself is `policies.io.atomic_directory`'s: one rule for both)."""
    with atomic_directory(path) as tmp:
        yield tmp
        write_checksums(tmp)


def write_checksums(directory: str | os.PathLike) -> None:
    """directory/checksums.json: the sha256 of every tensor file (*.safetensors, *.bin) in it."""
    directory = Path(directory)
    sums = {f.name: file_sha256(f) for f in sorted(directory.iterdir())
            if f.is_file() and f.suffix in (".safetensors", ".bin")}
    if sums:
        (directory / CHECKSUMS).write_text(json.dumps(sums, indent=2) + "\n")


def verify_checksums(directory: str | os.PathLike) -> None:
    """Check directory's tensor files against checksums.json (directories written before sidecars: nothing
    to check); a ValueError naming the file that differs or is missing."""
    directory = Path(directory)
    sidecar = directory / CHECKSUMS
    if not sidecar.is_file():
        return
    try:
        sums = json.loads(sidecar.read_text())
        assert isinstance(sums, dict)
    except (ValueError, AssertionError):
        raise ValueError(f"{sidecar}: corrupt checksum sidecar") from None
    for name, recorded in sums.items():
        path = directory / str(name)
        if not path.is_file():
            raise ValueError(f"{path}: missing (listed in {sidecar})")
        if file_sha256(path) != recorded:
            raise ValueError(f"{path}: sha256 differs from the one recorded in {sidecar}; the file is corrupt")


def json_safe(data):
    """`data` with every NaN or infinite float replaced by None: JSON has no NaN (strict parsers refuse it)."""
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {key: json_safe(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_safe(value) for value in data]
    return data


def write_json_atomic(data, path: str | os.PathLike) -> None:
    """Valid JSON (NaN written as null), written to a temporary file and renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(json_safe(data), f, indent=2, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)  # ours; a failed write (a directory at `path`, a full disk) leaves nothing
        raise


def check_agreement(parts: dict[str, dict[str, int]]) -> None:
    """`parts` maps a part's name to the facts it records; all shared facts must agree.

    E.g. {"tokenizer": {"vocab_size": 105, "pause_id": 4}, "model": {"vocab_size": 100}}
    raises: "checkpoint parts disagree: vocab_size: tokenizer=105, model=100".
    """
    keys = sorted({k for facts in parts.values() for k in facts})
    problems = []
    for key in keys:
        seen = {name: facts[key] for name, facts in parts.items() if key in facts}
        if len(set(seen.values())) > 1:
            problems.append(f"{key}: " + ", ".join(f"{n}={v}" for n, v in seen.items()))
    if problems:
        raise ValueError("checkpoint parts disagree: " + "; ".join(problems))


def optimizer_state(model: nn.Module, optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, JSON metadata) of an optimizer's full state: safetensors + JSON, never a pickle.
    Works under DDP and FSDP (torch's distributed state-dict API); with cpu_offload only rank 0 gets it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    inner = getattr(optimizer, "optimizer", optimizer)
    state = get_optimizer_state_dict(model, inner,
                                     options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if "param_groups" not in state:  # with cpu_offload the full state lands on rank 0 only; others get {}
        return {}, {}
    tensors, meta = {}, {"param_groups": state["param_groups"], "state": {}}
    for name, slots in state["state"].items():
        meta["state"][name] = {}
        for slot, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{name}::{slot}"] = value.detach().cpu().contiguous()
                meta["state"][name][slot] = "tensor"
            else:
                meta["state"][name][slot] = value
    return tensors, meta


def load_optimizer_state(model: nn.Module, optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Restore what `optimizer_state` wrote."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    state = {name: {slot: tensors[f"{name}::{slot}"] if value == "tensor" else value
                    for slot, value in slots.items()} for name, slots in meta["state"].items()}
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
    inner = getattr(optimizer, "optimizer", optimizer)
    set_optimizer_state_dict(model, inner, {"state": state, "param_groups": groups},
                             options=StateDictOptions(full_state_dict=True))
