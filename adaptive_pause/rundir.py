"""Run directories: the marker (kind, config fingerprint, finished or not), the one-writer lock, and the
refusal to overwrite what this run did not write.

Owns: `claim_run` (called by every training stage before it writes): it takes an exclusive `fcntl.flock` on
`.NAME.lock` beside the run directory (held for the process lifetime; the kernel drops it when the process
dies, so a dead writer's lock is stale by construction and is reported as such), recovers checkpoint
directories from a crash inside a replacement, and decides where the run writes: into `output_dir` (new,
empty, or this same config's unfinished run), or, with `overwrite`, into a staging sibling that replaces
`output_dir` only when `RunClaim.finish` is called. `run.json` is the marker.

Must not: know about training, models or checkpoints' contents.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import recover_dir, replace_dir, write_json_atomic

MARKER = "run.json"
CHECKPOINT_DIRS = ("state", "model", "adapter", "controller")
# Never part of a run's identity: where it lives, how it is shown, how often it saves.
NOT_IDENTITY = {"output_dir", "progress", "resume", "overwrite", "log_every", "checkpoint_every", "torch_threads",
                "eval_every"}
PATH_FIELDS = ("model_run_dir", "base_model")  # compared by what they point at, not by how they are spelled


def launched_main_process() -> bool:
    """Rank 0 of a launch (read from the launcher's environment: the claim comes before the accelerator)."""
    return int(os.environ.get("RANK", "0")) == 0


def identity(data: dict, ignore: set[str] = frozenset()) -> dict:
    """The config fields that make a run what it is (JSON-ready)."""
    kept = {k: v for k, v in data.items() if k not in NOT_IDENTITY | set(ignore)}
    for name in PATH_FIELDS:
        if isinstance(kept.get(name), str) and os.path.exists(kept[name]):
            kept[name] = os.path.realpath(kept[name])
    return json.loads(json.dumps(kept, default=str))


def fingerprint(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def _differences(saved: dict | None, now: dict) -> str:
    if not isinstance(saved, dict):
        return ""
    diffs = [f"{k}: saved={saved.get(k)!r}, now={now.get(k)!r}" for k in sorted(set(saved) | set(now))
             if saved.get(k) != now.get(k)]
    return " (" + "; ".join(diffs) + ")" if diffs else ""


def read_marker(path: str | os.PathLike) -> dict | None:
    try:
        marker = json.loads((Path(path) / MARKER).read_text())
        return marker if isinstance(marker, dict) else None
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as err:
        return err.errno == errno.EPERM
    return True


class _Lock:
    def __init__(self, path: Path, kind: str):
        self.path = path.with_name(f".{path.name}.lock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(self.fd)
            raise ValueError(f"output_dir: {path} is being written by another process ({holder}); one writer per "
                             "run directory: wait for it to end or choose another output_dir") from None
        previous = os.pread(self.fd, 200, 0).decode(errors="replace").split()
        if previous and previous[0].startswith("pid=") and previous[0][4:].isdigit() \
                and not _alive(int(previous[0][4:])):
            print(f"{kind}: {self.path}: stale lock of a dead process ({previous[0]}) taken over", flush=True)
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"pid={os.getpid()} kind={kind}\n".encode(), 0)
        atexit.register(self.release)

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


@dataclass
class RunClaim:
    path: Path  # the output_dir the user named
    work: Path  # where this run writes: `path`, or a staging sibling that replaces it at `finish`
    kind: str
    fingerprint: str
    lock: _Lock | None

    def finish(self) -> None:
        """Mark the run finished and, when overwriting, put it in place of the old one (old kept until then)."""
        if self.lock is None:
            return
        marker = read_marker(self.work) or {}
        write_json_atomic({**marker, "kind": self.kind, "fingerprint": self.fingerprint, "finished": True},
                          self.work / MARKER)
        if self.work != self.path:
            replace_dir(self.work, self.path)
        self.release()

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()


def _staging(path: Path) -> Path:
    return path.with_name(f".{path.name}.staging")


def _checkpointed(path: Path) -> bool:
    """Whether a run directory holds a training checkpoint (what `--resume` continues from)."""
    return any((path / name).is_dir() for name in CHECKPOINT_DIRS)


def claim_run(output_dir: str | os.PathLike, kind: str, config: dict, resume: bool = False,
              overwrite: bool = False, main_process: bool | None = None) -> RunClaim:
    """Lock `output_dir` for this run and say where it writes; a ValueError naming output_dir when it holds
    another kind of run or another config (unless `overwrite`), or nothing to `resume`.

    Only the main process locks and writes the marker; the others compute the same answer from the disk."""
    path = Path(output_dir)
    print_ = fingerprint(config)
    main_process = launched_main_process() if main_process is None else main_process
    if resume and overwrite:
        raise ValueError("overwrite: cannot be combined with resume (resume continues the run, overwrite replaces it)")
    lock = _Lock(path, kind) if main_process else None
    try:
        if main_process:
            recover_dir(path)  # a crash between the renames of a replaced run directory
            for name in CHECKPOINT_DIRS:
                recover_dir(path / name)
        marker = read_marker(path)
        # (the marker's own temporary file is not content: another process may be writing the marker right now)
        has_content = path.is_dir() and any(not p.name.startswith(f".{MARKER}.") for p in path.iterdir())
        same = marker is not None and marker.get("kind") == kind and marker.get("fingerprint") == print_
        if resume:
            if marker is None:
                raise ValueError(f"resume: {path} holds no {MARKER} marker; nothing to resume from")
            if not same:
                raise ValueError(f"resume: {path} holds a {marker.get('kind')!r} run of another config"
                                 f"{_differences(marker.get('config'), config)}; resume needs the same config "
                                 "(only output_dir, progress, logging and checkpoint intervals may change)")
            work = path
        elif marker is None and has_content:  # never replaced, --overwrite or not: we did not write it
            raise ValueError(f"output_dir: {path} already holds files not written by an adaptive-pause run (no "
                             f"{MARKER}); choose another output_dir (nothing there is replaced or deleted)")
        elif same and not marker.get("finished") and _checkpointed(path) and not overwrite:
            raise ValueError(f"output_dir: {path} holds this config's unfinished run with a checkpoint (state/); "
                             "pass --resume true to continue it, or --overwrite true to start it again")
        elif not has_content or (not marker.get("finished") and marker.get("kind") == kind
                                 and (same or not _checkpointed(path))):
            # new, empty, or an unfinished run of this kind started afresh: this config's own (without
            # --resume), or one that stopped before its first checkpoint (e.g. a rejected path), so the corrected
            # command can run where the failed one claimed
            work = path
        elif not overwrite:
            what = ("a finished run of this same config" if same else
                    f"a {marker.get('kind')!r} run of another config{_differences(marker.get('config'), config)}")
            raise ValueError(f"output_dir: {path} already holds {what}; pass --overwrite true to replace it (the old "
                             "one is kept until the new run completes), or choose another output_dir")
        else:
            work = _staging(path)
            if main_process and work.exists():
                shutil.rmtree(work)  # a crashed earlier overwrite: only ever written by us
        if main_process:
            work.mkdir(parents=True, exist_ok=True)
            marker = read_marker(work) if resume else None
            write_json_atomic({**(marker or {}), "kind": kind, "fingerprint": print_, "finished": False,
                               "config": config}, work / MARKER)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return RunClaim(path, work, kind, print_, lock)
