"""The stage runner the demo and the presets share: skip a finished stage, resume or replace one of ours.

Owns: a stage's fingerprint (its resolved config + the fingerprint of the stage it builds on), the `.done`
marker, the packaged stage YAMLs (`configs/<recipe>_<stage>.yaml`), and `StageRunner`: a stage directory is
replaced only when it carries the demo's own marker (`.done`, or `.demo-started` for a sweep), and only once
the new stage completes; a directory the demo did not write is refused.

Must not: implement any stage, or know the order of a recipe's stages (demo.py, smollm2.py).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from importlib import resources
from pathlib import Path
from typing import Optional

import yaml

from .config import read_yaml, to_dict
from .rundir import fingerprint as run_fingerprint
from .rundir import identity, read_marker

DEMO_STARTED = ".demo-started"  # the sweep directory is the demo's from its first write


def fresh_stage_dir(stage_dir: Path, overwrite: bool) -> Path:
    """Prepare a stage directory whose writer has no run lock of its own (a sweep, the urgency stage's outputs):
    with `overwrite` (the runner has checked the directory carries our marker) empty it; then create it and
    mark it ours from the first write, so an interrupted stage is still recognised as the demo's."""
    if overwrite:
        shutil.rmtree(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    (stage_dir / DEMO_STARTED).write_text("")
    return stage_dir


def _stage_yaml(path: Optional[str], stage: str, recipe: str = "demo") -> dict:
    if path:
        return read_yaml(path, f"{stage}_config")
    data = yaml.safe_load(resources.files("adaptive_pause").joinpath(f"configs/{recipe}_{stage}.yaml").read_text())
    return data or {}


def _fingerprint(data: dict, upstream: str = "") -> str:
    """A stage's identity: its resolved config and the fingerprint of the stage it builds on."""
    kept = {k: v for k, v in data.items() if k != "progress"}  # showing a progress bar changes no result
    text = json.dumps(kept, sort_keys=True, default=str) + upstream
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _done_fingerprint(stage_dir: Path) -> str | None:
    """The fingerprint a finished stage recorded; None if it never finished (or wrote an older marker)."""
    try:
        return json.loads((stage_dir / ".done").read_text()).get("config")
    except (OSError, ValueError, AttributeError):
        return None


def _mark_done(stage_dir: Path, seconds: float, fingerprint: str) -> None:
    (stage_dir / ".done").write_text(json.dumps({"seconds": round(seconds, 1), "config": fingerprint}) + "\n")


class StageRunner:
    """Runs one stage into its directory unless it finished before with the same fingerprint (the demo's
    skip / resume / replace rules); records each run stage's seconds in `timings`. Shared by the presets."""

    def __init__(self, force: bool = False):
        self.force = force
        self.timings: dict[str, float] = {}

    def __call__(self, name: str, stage_dir: Path, fn, fingerprint: str, run_config=None) -> None:
        """`fn(overwrite, resume)` runs the stage; `run_config`: the stage's config, for its run.json marker."""
        recorded = _done_fingerprint(stage_dir)
        if recorded == fingerprint and not self.force:
            print(f"demo: {name}: finished before in {stage_dir}, skipped")
            return
        ours = recorded is not None or (stage_dir / DEMO_STARTED).is_file()
        overwrite = resume = False
        if stage_dir.exists() and any(stage_dir.iterdir()):
            marker = read_marker(stage_dir)
            own_unfinished = (run_config is not None and marker is not None and not marker.get("finished")
                              and marker.get("fingerprint") == run_fingerprint(identity(to_dict(run_config))))
            if not (ours or own_unfinished):
                raise ValueError(f"out: {stage_dir} holds files the demo did not write (no .done marker); "
                                 "choose another --out, or move them away")
            why = ("--force" if recorded == fingerprint else "its config or an earlier stage changed"
                   if recorded else "it had not finished")
            print(f"demo: {name}: rerunning into {stage_dir} ({why}); the old one stays until the new one completes",
                  flush=True)
            # This config's own interrupted run continues from its checkpoint; anything else of ours is replaced.
            resume = own_unfinished and (stage_dir / "state").is_dir() and not self.force
            overwrite = not resume
        t0 = time.perf_counter()
        print(f"demo: {name} -> {stage_dir}" + (" (resuming)" if resume else ""), flush=True)
        fn(overwrite, resume)
        self.timings[name] = time.perf_counter() - t0
        stage_dir.mkdir(parents=True, exist_ok=True)
        _mark_done(stage_dir, self.timings[name], fingerprint)
        print(f"demo: {name}: {self.timings[name]:.0f} s", flush=True)
