"""Saving and loading controllers: `controller.safetensors` + `config.json` in one directory.

Owns: the on-disk format of `run_dir/controller/` and the registry of policy
types by name, and the hidden-size check at load time (a `ValueError` saying
both sizes).

Also owns the one directory-replacement rule (`replace_dir`, `recover_dir`) and `file_sha256`, which
`adaptive_pause.checkpoint` re-exports: they live here because policies never import adaptive_pause.

Must not: import `adaptive_pause`.
"""

from __future__ import annotations

import contextlib
import hashlib
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
from .outcome import OutcomePlanner
from .planning import PausePlanningHead

POLICY_TYPES: dict[str, type[PausePolicy]] = {
    "PauseControllerHead": PauseControllerHead,
    "PausePlanningHead": PausePlanningHead,
    "OutcomePlanner": OutcomePlanner,
    "FixedPauses": FixedPauses,
    "ConfidenceThreshold": ConfidenceThreshold,
    "RandomPauses": RandomPauses,
}
WEIGHTS_NAME = "controller.safetensors"
CONFIG_NAME = "config.json"


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _siblings(path: Path) -> tuple[Path, Path]:
    """(complete new copy, previous copy): fixed names, so a later start finds them after a crash."""
    return path.with_name(f".{path.name}.new"), path.with_name(f".{path.name}.old")


def replace_dir(tmp: Path, path: Path) -> None:
    """Put the complete directory `tmp` at `path`, so that at every moment a complete copy exists on disk.

    tmp -> .NAME.new (complete, by name); path -> .NAME.old; .NAME.new -> path; remove .NAME.old. A crash
    between any two renames leaves .new or .old (or both) complete, and `recover_dir` puts one back.
    """
    recover_dir(path, keep=tmp)
    new, old = _siblings(path)
    os.replace(tmp, new)
    if path.exists():
        os.replace(path, old)
    os.replace(new, path)
    shutil.rmtree(old, ignore_errors=True)


def recover_dir(path: str | os.PathLike, keep: Path | None = None) -> str | None:
    """After a crash inside `replace_dir`: restore `path` from .NAME.new (newest complete copy) or
    .NAME.old, and remove half-written .NAME.tmp-* siblings (but `keep`, the one being written now).
    Returns what was done, or None. One writer at a time: the run directory's lock."""
    path = Path(path)
    if not path.parent.is_dir():
        return None
    new, old = _siblings(path)
    done = None
    if not path.exists():
        for source in (new, old):
            if source.is_dir():
                os.replace(source, path)
                done = f"restored {path} from {source.name}"
                break
    for leftover in [new, old, *path.parent.glob(f".{path.name}.tmp-*")]:
        if leftover.exists() and leftover != keep:
            shutil.rmtree(leftover, ignore_errors=True)
    return done


def _current_names(config: dict) -> dict:
    """Constructor arguments under today's names: controllers saved before the head's arguments were renamed
    (`feature_dim` -> `hidden_size`, `joint` -> `detach_features`, its negation) still load."""
    config = dict(config)
    if "feature_dim" in config:
        config["hidden_size"] = config.pop("feature_dim")
    if "joint" in config:
        config["detach_features"] = not config.pop("joint")
    return config


def _config_sha256(meta: dict) -> str:
    """sha256 of a controller's type and config: a flipped digit there would load as another controller."""
    return hashlib.sha256(json.dumps([meta["type"], meta["config"]], sort_keys=True).encode()).hexdigest()


def _check_record(data) -> dict:
    """The checksums of config.json (empty for controllers saved before checksums); ValueError when corrupt."""
    if not isinstance(data, dict) or set(data) - {"type", "config", "sha256"}:
        raise ValueError("expected a mapping of type, config and sha256")
    sums = data.get("sha256", {})
    if not isinstance(sums, dict) or not set(sums) <= {"config", WEIGHTS_NAME}:
        raise ValueError(f"corrupt checksum record {sums!r}")
    if "config" in sums and sums["config"] != _config_sha256(data):
        raise ValueError("the sha256 of type and config differs from the one recorded; the file is corrupt")
    return sums


def save_policy(policy: PausePolicy, path: str | os.PathLike, state_dict: dict | None = None) -> None:
    """Write `path/config.json` ({"type": ..., "config": {...}}) and, if it has any, `path/controller.safetensors`.

    `state_dict`: the weights to write instead of `policy.state_dict()`, when the policy's own are shards (FSDP)."""
    name = type(policy).__name__
    if name not in POLICY_TYPES:
        raise ValueError(f"policy: {name} is not a registered type; known: {sorted(POLICY_TYPES)}")
    with atomic_directory(path) as tmp:
        meta = {"type": name, "config": policy.config()}
        state = {k: v.detach().cpu().contiguous()
                 for k, v in (policy.state_dict() if state_dict is None else state_dict).items()}
        meta["sha256"] = {"config": _config_sha256(meta)}  # checked by load_policy, as the weights' below
        if state:
            save_file(state, str(tmp / WEIGHTS_NAME))
            meta["sha256"][WEIGHTS_NAME] = file_sha256(tmp / WEIGHTS_NAME)
        (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike):
    """Yield a temporary sibling directory that replaces `path` (by `replace_dir`, which always keeps a complete
    copy) only when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, path)


def load_policy(path: str | os.PathLike, hidden_size: int | None = None,
                map_location: str | torch.device = "cpu") -> PausePolicy:
    """Load a policy saved by `save_policy`; with `hidden_size`, check it matches the policy's feature size."""
    path = Path(path)
    config_file = path / CONFIG_NAME
    if not config_file.is_file():
        raise ValueError(f"policy path {path}: no {CONFIG_NAME} (expected a directory written by save_policy)")
    try:
        data = json.loads(config_file.read_text())
        sums = _check_record(data)
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
        recorded = sums.get(WEIGHTS_NAME)  # controllers saved before checksums have none
        if sums and recorded is None:
            raise ValueError(f"{config_file}: the checksum record has no {WEIGHTS_NAME}; the file is corrupt")
        if recorded is not None and file_sha256(weights) != recorded:
            raise ValueError(f"{weights}: sha256 differs from the one recorded in {config_file}; the file is corrupt")
        try:
            policy.load_state_dict(load_file(str(weights), device=str(map_location)))
        except Exception as err:  # noqa: BLE001 - safetensors and torch raise several types; re-raised with the path
            raise ValueError(f"{weights}: corrupt or mismatched controller weights: {type(err).__name__}: {err}") \
                from err
    return policy
