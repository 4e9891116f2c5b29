"""The urgency estimator: a small head that reads a prompt's hidden states and outputs an urgency in [0, 1].

Owns: `UrgencyEstimator`, two heads over one layer's states: "meanmax" (masked mean + max
over the prompt -> LayerNorm -> MLP) and "conv" (LayerNorm -> a 1-D convolution over
positions -> masked max -> linear: a learned n-gram detector), -> sigmoid; what it reads
(hidden size, which layer)
and the facts of the LM it was trained on (vocab size, `<pause>` id), checked by
`check_base` with a `ValueError` saying what differs; and its on-disk format
(`run_dir/urgency/`: `config.json` + `urgency.safetensors`, written atomically).

`features` has no parameters, so a trainer with a frozen LM computes them once and trains
`logits_from_features` alone.

Must not: import `adaptive_pause`, run the LM or know about tasks (the caller
passes hidden states and the prompt mask).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .io import atomic_directory

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "urgency.safetensors"
TYPE_NAME = "UrgencyEstimator"
POOLINGS = ("meanmax", "conv")


class UrgencyEstimator(nn.Module):
    """Prompt states (batch, seq, hidden) + mask (batch, seq) -> urgency (batch,) in [0, 1].

    hidden_size: the LM's hidden size. layer: which of the LM's hidden states it reads (an index into
    `output_hidden_states`, -1 = the last). vocab_size, pause_id: the tokenizer it was trained with (None:
    not checked). width, dropout: the MLP (or the convolution's channels). pooling: "meanmax" or "conv";
    kernel: the convolution's width in positions (tokens).
    """

    def __init__(self, hidden_size: int, width: int = 128, layer: int = -1, dropout: float = 0.1,
                 vocab_size: int | None = None, pause_id: int | None = None, pooling: str = "meanmax",
                 kernel: int = 5):
        super().__init__()
        for name, value in (("hidden_size", hidden_size), ("width", width)):
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")
        if not (isinstance(layer, int) and not isinstance(layer, bool)):
            raise ValueError(f"layer: must be an integer (an index into the LM's hidden states), got {layer!r}")
        if not (0.0 <= dropout < 1.0):
            raise ValueError(f"dropout: must be in [0, 1), got {dropout}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling: must be one of {POOLINGS}, got {pooling!r}")
        if not (isinstance(kernel, int) and not isinstance(kernel, bool) and kernel >= 1 and kernel % 2 == 1):
            raise ValueError(f"kernel: must be an odd integer >= 1, got {kernel!r}")
        self.hidden_size = hidden_size
        self.width = width
        self.layer = layer
        self.dropout = float(dropout)
        self.vocab_size = None if vocab_size is None else int(vocab_size)
        self.pause_id = None if pause_id is None else int(pause_id)
        self.pooling = pooling
        self.kernel = kernel
        if pooling == "meanmax":
            # The mean says what the prompt is about overall; the max keeps a short cue ("ASAP") that a long task
            # text would average away.
            self.mlp = nn.Sequential(nn.LayerNorm(2 * hidden_size), nn.Linear(2 * hidden_size, width), nn.GELU(),
                                     nn.Dropout(self.dropout), nn.Linear(width, 1))
        else:
            # A cue is a few neighbouring tokens ("no rush", "chop chop"); mean pooling of a model that never read
            # English blurs them, a convolution then a max over positions detects them wherever they sit.
            self.norm = nn.LayerNorm(hidden_size)
            self.conv = nn.Conv1d(hidden_size, width, kernel, padding=kernel // 2)
            self.out = nn.Sequential(nn.GELU(), nn.Dropout(self.dropout), nn.Linear(width, 1))

    @staticmethod
    def pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # (batch, 2 * hidden)
        """Masked mean and max over the prompt's positions; padding (mask 0) never counts."""
        keep = mask.bool()[..., None]  # (batch, seq, 1)
        states = states.float()
        count = keep.sum(1).clamp(min=1)  # (batch, 1)
        mean = (states * keep).sum(1) / count
        peak = states.masked_fill(~keep, float("-inf")).amax(1)
        return torch.cat([mean, peak], dim=-1)

    def features(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """What the trainable part reads, without parameters (so a frozen LM's can be cached).
        meanmax: (batch, 2 * hidden). conv: (batch, seq, hidden + 1), the states zeroed at padding and the mask
        as the last channel; rows of different widths are joined by left-padding with zeros (`pad_features`)."""
        if states.shape[-1] != self.hidden_size:
            raise ValueError(f"states: expected hidden size {self.hidden_size}, got {states.shape[-1]}")
        if self.pooling == "meanmax":
            return self.pool(states, mask)
        keep = mask.to(states.device).float()[..., None]  # (batch, seq, 1)
        return torch.cat([states.float() * keep, keep], dim=-1)

    @staticmethod
    def pad_features(chunks: list[torch.Tensor]) -> torch.Tensor:
        """Join feature chunks along the batch; conv features of different widths are left-padded (mask 0)."""
        if chunks[0].dim() == 2:
            return torch.cat(chunks)
        width = max(c.shape[1] for c in chunks)
        return torch.cat([nn.functional.pad(c, (0, 0, width - c.shape[1], 0)) for c in chunks])

    def logits_from_features(self, features: torch.Tensor) -> torch.Tensor:  # (batch,)
        if self.pooling == "meanmax":
            if features.shape[-1] != 2 * self.hidden_size:
                raise ValueError(f"features: expected last dimension 2 x {self.hidden_size} (mean and max of the "
                                 f"LM's states), got {features.shape[-1]}")
            return self.mlp(features.to(self.mlp[1].weight.dtype)).squeeze(-1).float()
        if features.dim() != 3 or features.shape[-1] != self.hidden_size + 1:
            raise ValueError(f"features: expected (batch, seq, {self.hidden_size} + 1) (states and mask), got "
                             f"{tuple(features.shape)}")
        features = features.to(self.conv.weight.dtype)
        states, keep = features[..., :-1], features[..., -1:]  # (batch, seq, hidden), (batch, seq, 1)
        # Padding is zero after the norm too, exactly as the convolution's own zero padding at the edges:
        # a row's output does not depend on how far its batch was padded.
        normed = self.norm(states) * keep
        detected = self.conv(normed.transpose(1, 2)).transpose(1, 2)  # (batch, seq, width)
        peak = detected.masked_fill(keep <= 0, float("-inf")).amax(1)
        return self.out(peak).squeeze(-1).float()

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # (batch,) in [0, 1]
        return torch.sigmoid(self.logits_from_features(self.features(states, mask)))

    def check_base(self, hidden_size: int, vocab_size: int | None = None, pause_id: int | None = None) -> None:
        """Refuse an LM other than the one this estimator was trained on, naming every fact that differs."""
        problems = [f"hidden_size: estimator={self.hidden_size}, model={hidden_size}"] \
            if int(hidden_size) != self.hidden_size else []
        if vocab_size is not None and self.vocab_size is not None and int(vocab_size) != self.vocab_size:
            problems.append(f"tokenizer vocab size: estimator={self.vocab_size}, model={vocab_size}")
        if pause_id is not None and self.pause_id is not None and int(pause_id) != self.pause_id:
            problems.append(f"<pause> id: estimator={self.pause_id}, model={pause_id}")
        if problems:
            raise ValueError("urgency estimator was trained on another base: " + "; ".join(problems))

    def config(self) -> dict:
        return {"hidden_size": self.hidden_size, "width": self.width, "layer": self.layer, "dropout": self.dropout,
                "vocab_size": self.vocab_size, "pause_id": self.pause_id, "pooling": self.pooling,
                "kernel": self.kernel}


def save_estimator(estimator: UrgencyEstimator, path: str | os.PathLike, extra: dict | None = None) -> None:
    """Write `path/config.json` ({"type", "config", "extra"}) and `path/urgency.safetensors`, atomically.

    `extra`: JSON facts kept beside the config (e.g. the urgency levels it was trained on); not read back."""
    if not isinstance(estimator, UrgencyEstimator):
        raise ValueError(f"estimator: expected a UrgencyEstimator, got {type(estimator).__name__}")
    with atomic_directory(path) as tmp:
        data = {"type": TYPE_NAME, "config": estimator.config(), "extra": extra or {}}
        (tmp / CONFIG_NAME).write_text(json.dumps(data, indent=2) + "\n")
        state = {k: v.detach().cpu().contiguous() for k, v in estimator.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_NAME))


def load_estimator(path: str | os.PathLike, hidden_size: int | None = None, vocab_size: int | None = None,
                   pause_id: int | None = None, map_location: str | torch.device = "cpu") -> UrgencyEstimator:
    """Load what `save_estimator` wrote; with the LM's facts given, refuse an estimator trained on another base."""
    path = Path(path)
    config_file = path / CONFIG_NAME
    if not config_file.is_file():
        raise ValueError(f"urgency estimator path {path}: no {CONFIG_NAME} (expected a directory written by "
                         "save_estimator, e.g. RUN_DIR/urgency after `adaptive-pause train-urgency`)")
    try:
        data = json.loads(config_file.read_text())
        if data.get("type") != TYPE_NAME:
            raise ValueError(f"type is {data.get('type')!r}, expected {TYPE_NAME!r}")
        estimator = UrgencyEstimator(**data.get("config", {}))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError) as err:
        raise ValueError(f"{config_file}: corrupt or mismatched urgency estimator config: {err}") from err
    if hidden_size is not None:
        estimator.check_base(hidden_size, vocab_size, pause_id)
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise ValueError(f"urgency estimator path {path}: {WEIGHTS_NAME} is missing")
    try:
        estimator.load_state_dict(load_file(str(weights), device=str(map_location)))
    except Exception as err:  # noqa: BLE001 - safetensors and torch raise several types; re-raised with the path
        raise ValueError(f"{weights}: corrupt or mismatched urgency estimator weights: {type(err).__name__}: {err}") \
            from err
    return estimator.eval()
