"""Lean run directories: a run's `model/` may refer to a large base directory instead of copying its weights.

Owns: the decision (the base's weight files exceed `ADAPTIVE_PAUSE_REFER_BASE_OVER_MB`, default 50 MB), the
reference (`base.json`: the base's absolute path and the sha256 of each weight file; `added_rows.safetensors`:
the embedding rows added to the base, e.g. `<pause>`; the tokenizer and config.json as usual), and loading it
back with the fingerprint checked, failing with an error that names what was expected.

Must not: train, decode, or decide pause settings (they travel in the saved config.json like any other run).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

REFERENCE_FILE = "base.json"
ROWS_FILE = "added_rows.safetensors"
THRESHOLD_ENV = "ADAPTIVE_PAUSE_REFER_BASE_OVER_MB"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
BASE_ATTR = "_adaptive_pause_base_dir"  # set on a loaded model: the plain HF directory its weights came from


def threshold_bytes() -> int:
    raw = os.environ.get(THRESHOLD_ENV, "50")
    try:
        return int(float(raw) * 2**20)
    except ValueError:
        raise ValueError(f"{THRESHOLD_ENV}: expected a number of MB, got {raw!r}") from None


def weight_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def fingerprint(directory: Path) -> dict[str, str]:
    """{weight file name: sha256} of a model directory."""
    out = {}
    for path in weight_files(directory):
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        out[path.name] = digest.hexdigest()
    return out


def should_refer(model) -> Path | None:
    """The base directory to refer to, when `model` came from a local base whose weights exceed the threshold."""
    base = getattr(model, BASE_ATTR, None)
    if base is None or not Path(base).is_dir():
        return None
    size = sum(p.stat().st_size for p in weight_files(Path(base)))
    return Path(base) if size > threshold_bytes() else None


def _embedding_rows(model, base_rows: int) -> dict[str, torch.Tensor]:
    rows = {"input": model.get_input_embeddings().weight[base_rows:].detach().cpu().contiguous()}
    output = model.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr():
        rows["output"] = output.weight[base_rows:].detach().cpu().contiguous()
    return rows


def write_reference(model, tokenizer, base: Path, directory: Path) -> None:
    """Write into `directory` a model/ that refers to `base` (which holds the weights of `model` except added
    embedding rows). `model` must be the plain base LM (no adapter)."""
    base_config = json.loads((base / "config.json").read_text())
    base_rows = int(base_config.get("vocab_size") or model.config.vocab_size)
    model.config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    save_file(_embedding_rows(model, base_rows), str(directory / ROWS_FILE))
    reference = {"path": str(base.resolve()), "vocab_size": base_rows, "fingerprint": fingerprint(base)}
    (directory / REFERENCE_FILE).write_text(json.dumps(reference, indent=2) + "\n")


def is_reference(directory: Path) -> bool:
    return (Path(directory) / REFERENCE_FILE).is_file()


def load_reference(directory: Path):
    """(model, tokenizer) from a model/ written by `write_reference`; the base's fingerprint must match."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    directory = Path(directory)
    reference = json.loads((directory / REFERENCE_FILE).read_text())
    base = Path(reference["path"])
    if not base.is_dir():
        raise ValueError(f"{directory / REFERENCE_FILE}: the base model directory {base} is missing "
                         "(moved or deleted?); restore it there or re-run on a copy")
    found = fingerprint(base)
    if found != reference["fingerprint"]:
        changed = sorted(set(found.items()) ^ set(reference["fingerprint"].items()))
        raise ValueError(f"{directory / REFERENCE_FILE}: the base model {base} changed since this run was "
                         f"written: expected weight files {reference['fingerprint']}, found {found} "
                         f"(differing: {sorted({name for name, _ in changed})})")
    saved = AutoConfig.from_pretrained(str(directory))
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    model = AutoModelForCausalLM.from_pretrained(str(base))
    base_rows = int(reference["vocab_size"])
    if saved.vocab_size > base_rows:
        model.resize_token_embeddings(saved.vocab_size, mean_resizing=False)
    rows = load_file(str(directory / ROWS_FILE))
    with torch.no_grad():
        model.get_input_embeddings().weight[base_rows:] = rows["input"]
        if "output" in rows:
            model.get_output_embeddings().weight[base_rows:] = rows["output"]
    for key, value in saved.to_diff_dict().items():  # pause settings, pad id, ... as the run saved them
        if key.startswith("pause_") or key in ("pad_token_id",):
            setattr(model.config, key, value)
    setattr(model, BASE_ATTR, base)
    return model, tokenizer
