"""The urgency estimator: a small head that reads a prompt's hidden states and outputs an urgency in [0, 1].

Owns: `UrgencyEstimator`, three heads over the states of one layer or several (concatenated
along the hidden axis): "mean" (masked mean over the prompt, standardised per feature with
statistics of the training prompts -> linear), "meanmax" (masked mean + max -> LayerNorm ->
MLP) and "conv" (LayerNorm -> a 1-D convolution over positions -> masked max -> linear: a
learned n-gram detector); each ends in one logit (sigmoid: the urgency) or, with `classes`,
one logit per urgency level (the urgency is the expected level under their softmax); what it
reads (hidden size, which layers) and the facts of the LM it was trained on (vocab size,
`<pause>` id), checked by
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
POOLINGS = ("mean", "meanmax", "conv")


class UrgencyEstimator(nn.Module):
    """Prompt states (batch, seq, hidden) + mask (batch, seq) -> urgency (batch,) in [0, 1].

    hidden_size: the LM's hidden size. layer: which of the LM's hidden states it reads (an index into
    `output_hidden_states`, -1 = the last), or a list of them, read side by side. vocab_size, pause_id: the
    tokenizer it was trained with (None: not checked). width, dropout: the MLP (or the convolution's
    channels; the "mean" head is linear and has no width). pooling: "mean", "meanmax" or "conv"; kernel: the
    convolution's width in positions (tokens). classes: None for one logit (urgency = its sigmoid), or the
    number of urgency levels K >= 2 (level j stands for j / (K - 1); urgency = the expected level's value
    under the softmax of K logits, trained as a classifier).
    """

    def __init__(self, hidden_size: int, width: int = 128, layer: int | list[int] = -1, dropout: float = 0.1,
                 vocab_size: int | None = None, pause_id: int | None = None, pooling: str = "meanmax",
                 kernel: int = 5, classes: int | None = None):
        super().__init__()
        for name, value in (("hidden_size", hidden_size), ("width", width)):
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")
        layers = [layer] if isinstance(layer, int) and not isinstance(layer, bool) else layer
        if not (isinstance(layers, (list, tuple)) and layers
                and all(isinstance(x, int) and not isinstance(x, bool) for x in layers)):
            raise ValueError(f"layer: must be an integer or a non-empty list of integers (indices into the LM's "
                             f"hidden states), got {layer!r}")
        if len(set(layers)) != len(layers):
            raise ValueError(f"layer: lists a hidden state twice: {list(layers)}")
        if classes is not None and not (isinstance(classes, int) and not isinstance(classes, bool) and classes >= 2):
            raise ValueError(f"classes: must be None (one logit) or an integer >= 2 (urgency levels), got {classes!r}")
        if not (0.0 <= dropout < 1.0):
            raise ValueError(f"dropout: must be in [0, 1), got {dropout}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling: must be one of {POOLINGS}, got {pooling!r}")
        if not (isinstance(kernel, int) and not isinstance(kernel, bool) and kernel >= 1 and kernel % 2 == 1):
            raise ValueError(f"kernel: must be an odd integer >= 1, got {kernel!r}")
        self.hidden_size = hidden_size
        self.width = width
        self.layers = tuple(layers)
        self.input_size = hidden_size * len(layers)  # the states the head reads: the listed layers side by side
        self.classes = classes
        outputs = 1 if classes is None else classes
        self.dropout = float(dropout)
        self.vocab_size = None if vocab_size is None else int(vocab_size)
        self.pause_id = None if pause_id is None else int(pause_id)
        self.pooling = pooling
        self.kernel = kernel
        size = self.input_size
        if pooling == "mean":
            # A linear read of a pretrained LM's mean state (a probe). Standardised per feature, not per row: a
            # few dimensions of a pretrained LM's states are orders of magnitude larger than the rest, and a
            # per-row LayerNorm lets them drown the others (SmolLM2, phrasings written apart from the
            # bank: Spearman 0.91 with a LayerNorm, 0.95 standardised; docs/results.md).
            # The statistics come from the training prompts (`standardize`) and are saved with the weights.
            self.register_buffer("center", torch.zeros(size))
            self.register_buffer("scale", torch.ones(size))
            self.linear = nn.Sequential(nn.Dropout(self.dropout), nn.Linear(size, outputs))
        elif pooling == "meanmax":
            # The mean says what the prompt is about overall; the max keeps a short cue ("ASAP") that a long task
            # text would average away.
            self.mlp = nn.Sequential(nn.LayerNorm(2 * size), nn.Linear(2 * size, width), nn.GELU(),
                                     nn.Dropout(self.dropout), nn.Linear(width, outputs))
        else:
            # A cue is a few neighbouring tokens ("no rush", "chop chop"); mean pooling of a model that never read
            # English blurs them, a convolution then a max over positions detects them wherever they sit.
            self.norm = nn.LayerNorm(size)
            self.conv = nn.Conv1d(size, width, kernel, padding=kernel // 2)
            self.out = nn.Sequential(nn.GELU(), nn.Dropout(self.dropout), nn.Linear(width, outputs))

    @staticmethod
    def pool(states: torch.Tensor, mask: torch.Tensor, peak: bool = True) -> torch.Tensor:  # (batch, 2 * hidden)
        """Masked mean and max (`peak`; else the mean alone) over the prompt's positions; padding never counts."""
        keep = mask.bool()[..., None]  # (batch, seq, 1)
        states = states.float()
        count = keep.sum(1).clamp(min=1)  # (batch, 1)
        mean = (states * keep).sum(1) / count
        if not peak:
            return mean
        peak = states.masked_fill(~keep, float("-inf")).amax(1)
        return torch.cat([mean, peak], dim=-1)

    def select(self, hidden_states) -> torch.Tensor:  # (batch, seq, input_size)
        """The listed layers of an LM's `output_hidden_states` (embeddings first), side by side."""
        n = len(hidden_states)
        for layer in self.layers:
            if not -n <= layer < n:
                raise ValueError(f"layer: the LM has {n} hidden states (embeddings + each layer), got layer {layer}")
        return torch.cat([hidden_states[layer] for layer in self.layers], dim=-1)

    def features(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """What the trainable part reads, without parameters (so a frozen LM's can be cached). `states`: the
        listed layers side by side (`select`). mean: (batch, input). meanmax: (batch, 2 * input). conv: (batch,
        seq, input + 1), the states zeroed at padding and the mask as the last channel; rows of different widths
        are joined by left-padding with zeros (`pad_features`)."""
        if states.shape[-1] != self.input_size:
            raise ValueError(f"states: expected {self.input_size} features (hidden size {self.hidden_size} x "
                             f"{len(self.layers)} layers), got {states.shape[-1]}")
        if self.pooling == "mean":
            return self.pool(states, mask, peak=False)
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

    @torch.no_grad()
    def standardize(self, features: torch.Tensor) -> None:
        """"mean" head: set the per-feature centre and scale from (training) `features` (batch, input)."""
        if self.pooling != "mean":
            raise ValueError(f"standardize: only the 'mean' head standardises its features (pooling is "
                             f"{self.pooling!r})")
        features = features.to(self.center.device, torch.float64)
        self.center.copy_(features.mean(0))
        self.scale.copy_(features.std(0).nan_to_num(0.0) + 1e-6)

    def logits_from_features(self, features: torch.Tensor) -> torch.Tensor:  # (batch,) or (batch, classes)
        if self.pooling == "mean":
            if features.shape[-1] != self.input_size:
                raise ValueError(f"features: expected last dimension {self.input_size} (the mean of the LM's "
                                 f"states), got {features.shape[-1]}")
            z = (features.to(self.center.dtype) - self.center) / self.scale
            return self._shaped(self.linear(z.to(self.linear[1].weight.dtype)))
        if self.pooling == "meanmax":
            if features.shape[-1] != 2 * self.input_size:
                raise ValueError(f"features: expected last dimension 2 x {self.input_size} (mean and max of the "
                                 f"LM's states), got {features.shape[-1]}")
            return self._shaped(self.mlp(features.to(self.mlp[1].weight.dtype)))
        if features.dim() != 3 or features.shape[-1] != self.input_size + 1:
            raise ValueError(f"features: expected (batch, seq, {self.input_size} + 1) (states and mask), got "
                             f"{tuple(features.shape)}")
        features = features.to(self.conv.weight.dtype)
        states, keep = features[..., :-1], features[..., -1:]  # (batch, seq, hidden), (batch, seq, 1)
        # Padding is zero after the norm too, exactly as the convolution's own zero padding at the edges:
        # a row's output does not depend on how far its batch was padded.
        normed = self.norm(states) * keep
        detected = self.conv(normed.transpose(1, 2)).transpose(1, 2)  # (batch, seq, width)
        peak = detected.masked_fill(keep <= 0, float("-inf")).amax(1)
        return self._shaped(self.out(peak))

    def _shaped(self, logits: torch.Tensor) -> torch.Tensor:
        return (logits.squeeze(-1) if self.classes is None else logits).float()

    def urgency_from_logits(self, logits: torch.Tensor) -> torch.Tensor:  # (batch,) in [0, 1]
        """One logit: its sigmoid. `classes` logits: the expected level's urgency under their softmax."""
        if self.classes is None:
            return torch.sigmoid(logits)
        values = torch.linspace(0.0, 1.0, self.classes, device=logits.device)
        return (logits.softmax(-1) * values).sum(-1).clamp(0.0, 1.0)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # (batch,) in [0, 1]
        return self.urgency_from_logits(self.logits_from_features(self.features(states, mask)))

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
        return {"hidden_size": self.hidden_size, "width": self.width, "dropout": self.dropout,
                "layer": self.layers[0] if len(self.layers) == 1 else list(self.layers),
                "vocab_size": self.vocab_size, "pause_id": self.pause_id, "pooling": self.pooling,
                "kernel": self.kernel, "classes": self.classes}


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
