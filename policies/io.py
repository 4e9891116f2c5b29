"""Saving and loading controllers: `controller.safetensors` + `config.json` in one directory.

Owns: the on-disk format of `run_dir/controller/` and the registry of policy
types by name, and the hidden-size check at load time (a `ValueError` saying
both sizes).

Must not: import `adaptive_pause` (so it writes plainly, not through
`checkpoint.atomic_dir`: it writes to a temporary sibling and renames).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .base import PausePolicy
from .baselines import ConfidenceThreshold, FixedPauses, RandomPauses
from .head import PauseControllerHead

POLICY_TYPES: dict[str, type[PausePolicy]] = {
    "PauseControllerHead": PauseControllerHead,
    "FixedPauses": FixedPauses,
    "ConfidenceThreshold": ConfidenceThreshold,
    "RandomPauses": RandomPauses,
}
WEIGHTS_NAME = "controller.safetensors"
CONFIG_NAME = "config.json"


def _current_names(config: dict) -> dict:
    """Constructor arguments under today's names: controllers saved before the head's arguments were renamed
    (`feature_dim` -> `hidden_size`, `joint` -> `detach_features`, its negation) still load."""
    config = dict(config)
    if "feature_dim" in config:
        config["hidden_size"] = config.pop("feature_dim")
    if "joint" in config:
        config["detach_features"] = not config.pop("joint")
    return config


def save_policy(policy: PausePolicy, path: str | os.PathLike) -> None:
    """Write `path/config.json` ({"type": ..., "config": {...}}) and, if it has any, `path/controller.safetensors`."""
    name = type(policy).__name__
    if name not in POLICY_TYPES:
        raise ValueError(f"policy: {name} is not a registered type; known: {sorted(POLICY_TYPES)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        (tmp / CONFIG_NAME).write_text(json.dumps({"type": name, "config": policy.config()}, indent=2) + "\n")
        state = {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}
        if state:
            save_file(state, str(tmp / WEIGHTS_NAME))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Move the old directory aside before the rename, so a crash never leaves no controller at all.
    old = path.with_name(f".{path.name}.old-{os.getpid()}") if path.exists() else None
    if old is not None:
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def load_policy(path: str | os.PathLike, hidden_size: int | None = None,
                map_location: str | torch.device = "cpu") -> PausePolicy:
    """Load a policy saved by `save_policy`; with `hidden_size`, check it matches the policy's feature size."""
    path = Path(path)
    config_file = path / CONFIG_NAME
    if not config_file.is_file():
        raise ValueError(f"policy path {path}: no {CONFIG_NAME} (expected a directory written by save_policy)")
    try:
        data = json.loads(config_file.read_text())
        name = data.get("type")
        if name not in POLICY_TYPES:
            raise ValueError(f"unknown policy type {name!r}; known: {sorted(POLICY_TYPES)}")
        policy = POLICY_TYPES[name](**_current_names(data.get("config", {})))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError) as err:
        raise ValueError(f"{config_file}: corrupt or mismatched controller config: {err}") from err
    if hidden_size is not None:
        policy.check_hidden_size(hidden_size)
    weights = path / WEIGHTS_NAME
    expected = policy.state_dict()
    if expected:
        if not weights.is_file():
            raise ValueError(f"policy path {path}: {name} has parameters but {WEIGHTS_NAME} is missing")
        try:
            policy.load_state_dict(load_file(str(weights), device=str(map_location)))
        except Exception as err:  # noqa: BLE001 - safetensors and torch raise several types; re-raised with the path
            raise ValueError(f"{weights}: corrupt or mismatched controller weights: {type(err).__name__}: {err}") \
                from err
    return policy
