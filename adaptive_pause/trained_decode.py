"""The pause settings a controller was trained under, kept beside it (RUN_DIR/decode.yaml).

Owns: writing and reading `decode.yaml` (written by train-controller: max_pauses, max_pauses_total,
first_token_pauses_only), and the warning when a caller decodes a controller outside them. `generate`, the
sweep (and the server, through `generate`'s defaults) decode a run as it was trained.

Must not: decode, or load models.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import yaml

from .config import from_dict, read_yaml
from .decoding import DecodeConfig

TRAINED_DECODE = "decode.yaml"
TRAINED_FIELDS = ("max_pauses", "max_pauses_total", "first_token_pauses_only")


def write_trained_decode(run_dir: str | os.PathLike, settings: dict) -> None:
    """RUN_DIR/decode.yaml: the pause settings a controller was trained under (written atomically)."""
    path = Path(run_dir) / TRAINED_DECODE
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(yaml.safe_dump({k: settings[k] for k in TRAINED_FIELDS if k in settings}, sort_keys=False))
    os.replace(tmp, path)


def read_trained_decode(run_dir: str | os.PathLike) -> dict:
    """The settings of RUN_DIR/decode.yaml ({} when the run has none), checked as DecodeConfig fields."""
    path = Path(run_dir) / TRAINED_DECODE
    if not path.is_file():
        return {}
    data = read_yaml(path, TRAINED_DECODE)
    unknown = sorted(set(data) - set(TRAINED_FIELDS))
    if unknown:
        raise ValueError(f"{path}: unknown field {unknown[0]!r}; expected some of {TRAINED_FIELDS}")
    from_dict(DecodeConfig, data)  # types and ranges, with errors that name the field
    return data


def warn_outside_training(config: DecodeConfig, trained: dict) -> None:
    """A warning (not an error: a caller may mean it) when `config` lets the controller decide where it was
    never trained: pausing after the first answer token, or more pauses than it was trained with."""
    if not trained:
        return
    problems = []
    if trained.get("first_token_pauses_only") and not config.first_token_pauses_only:
        problems.append("first_token_pauses_only=False (trained with True: no pauses after the first token)")
    if config.max_pauses > trained.get("max_pauses", config.max_pauses):
        problems.append(f"max_pauses={config.max_pauses} (trained with {trained['max_pauses']})")
    budget, trained_budget = config.max_pauses_total, trained.get("max_pauses_total")
    if trained_budget is not None and (budget is None or budget > trained_budget):
        problems.append(f"max_pauses_total={budget} (trained with {trained_budget})")
    if problems:
        warnings.warn("decoding outside the settings the controller was trained under: " + "; ".join(problems),
                      stacklevel=3)
