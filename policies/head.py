"""The learned pause controller: a small MLP with a pause logit and a value output.

Owns: `PauseControllerHead`, its input features (the LM's last hidden state,
urgency features, pauses-spent features, optionally the top answer-token
probability) and its two outputs. One hidden layer serves both outputs, computed
once per call (`forward`), so `decide`/`evaluate` cost two small matmuls.

The hidden state is detached unless `detach_features=False` (joint LoRA +
controller training), so a PPO update on the controller never reaches into the
LM by accident.

Must not: import `adaptive_pause`, know about decoding, or save files (that is
`policies/io.py`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import ControllerInputs, Decision, PausePolicy


def _layer(linear: nn.Linear, std: float) -> nn.Linear:
    # CleanRL's orthogonal init: small std on the policy output keeps the initial policy near its bias.
    nn.init.orthogonal_(linear.weight, std)
    nn.init.zeros_(linear.bias)
    return linear


class PauseControllerHead(PausePolicy):
    """MLP over [LayerNorm(hidden)(, LayerNorm(prompt summary)), urgency, pauses spent(, top_prob)]
    -> (pause logit, value).

    hidden_size: the LM's hidden size. prompt_summary: the features also carry the mean of the LM's last
    hidden states over the prompt (the decode loop appends it, `DecodeConfig.prompt_summary`), so the
    head reads the whole prompt, not only the current position. The last position's state is shaped to
    predict the next token; it tells little about how hard the input is (docs/design-notes.md). pause_scale: pauses are fed as
    count / pause_scale, so counts of the order of
    `max_pauses` land in a sane range. initial_pause_prob sets the pause
    logit's bias, i.e. the untrained head's pause probability.
    """

    def __init__(self, hidden_size: int, width: int = 64, pause_scale: float = 8.0, use_top_prob: bool = True,
                 initial_pause_prob: float = 0.5, detach_features: bool = True, prompt_summary: bool = False):
        super().__init__()
        if not (isinstance(hidden_size, int) and hidden_size >= 1):
            raise ValueError(f"hidden_size: must be an integer >= 1, got {hidden_size!r}")
        if not (isinstance(width, int) and width >= 1):
            raise ValueError(f"width: must be an integer >= 1, got {width!r}")
        if not (math.isfinite(pause_scale) and pause_scale > 0):
            raise ValueError(f"pause_scale: must be > 0, got {pause_scale}")
        if not (0.0 < initial_pause_prob < 1.0):
            raise ValueError(f"initial_pause_prob: must be in (0, 1), got {initial_pause_prob}")
        self.hidden_size = hidden_size
        self.width = width
        self.pause_scale = float(pause_scale)
        self.use_top_prob = bool(use_top_prob)
        self.initial_pause_prob = float(initial_pause_prob)
        self.detach_features = bool(detach_features)
        self.prompt_summary = bool(prompt_summary)
        n_scalar = self.num_scalar_features
        # Two small matmuls per step (the controller must not slow decoding down): one hidden layer over
        # [LayerNorm(hidden state), scalar features], then the pause logit and the value together.
        self.norm = nn.LayerNorm(hidden_size)
        # The summary gets its own normalisation: a mean of states has a smaller scale than one state.
        self.summary_norm = nn.LayerNorm(hidden_size) if self.prompt_summary else None
        self.hidden_layer = _layer(nn.Linear(self.input_dim + n_scalar, width), math.sqrt(2))
        self.out = nn.Linear(width, 2)  # row 0: pause logit, row 1: value
        with torch.no_grad():
            nn.init.orthogonal_(self.out.weight[:1], 0.01)
            nn.init.orthogonal_(self.out.weight[1:], 1.0)
            self.out.bias.zero_()
            self.out.bias[0] = math.log(initial_pause_prob / (1 - initial_pause_prob))

    @property
    def input_dim(self) -> int:
        """Width of `ControllerInputs.features` this head reads: hidden (+ prompt summary)."""
        return self.hidden_size * (2 if self.prompt_summary else 1)

    @property
    def num_scalar_features(self) -> int:
        return 6 + int(self.use_top_prob)

    def scalar_features(self, inputs: ControllerInputs) -> torch.Tensor:  # (batch, num_scalar_features)
        """[u, 1 - u, before / scale, total / scale, log1p(before), log1p(total)(, top_prob)].

        The log counts are not decoration: with counts / scale alone, one tanh layer could not learn a
        stopping rule that depends on difficulty and urgency together (on the analytic env it gave up on the
        hardest levels at every urgency: 0.83 of the optimum instead of 0.99)."""
        counts = torch.stack([inputs.pauses_before_token, inputs.pauses_total], -1).float()  # (batch, 2)
        u = inputs.urgency.float()[:, None]
        columns = [u, 1 - u, counts * (1.0 / self.pause_scale), torch.log1p(counts)]
        if self.use_top_prob:
            if inputs.top_prob is None:
                raise ValueError("top_prob: this PauseControllerHead was built with use_top_prob=True, got None")
            columns.append(inputs.top_prob[:, None])
        return torch.cat(columns, dim=-1)

    def forward(self, inputs: ControllerInputs) -> tuple[torch.Tensor, torch.Tensor]:  # (batch,), (batch,)
        out = self.out(self.trunk(inputs))  # (batch, 2)
        if out.dtype != torch.float32:
            out = out.float()
        return out[:, 0], out[:, 1]

    def trunk(self, inputs: ControllerInputs) -> torch.Tensor:  # (batch, width)
        """The one hidden layer over the normalised features and the scalar features (shared by the outputs)."""
        features = inputs.features.detach() if self.detach_features else inputs.features
        if features.shape[-1] != self.input_dim:
            what = (f"2 x {self.hidden_size}: the hidden state and the prompt summary (decode with "
                    "DecodeConfig(prompt_summary=True))" if self.prompt_summary
                    else f"{self.hidden_size} (the head's hidden size)")
            raise ValueError(f"features: expected last dimension {self.input_dim}, {what}; got {features.shape[-1]}")
        dtype = self.out.weight.dtype
        if features.dtype != dtype:
            features = features.to(dtype)
        scalars = self.scalar_features(inputs)
        if self.prompt_summary:
            current, summary = features.split(self.hidden_size, dim=-1)
            normed = [self.norm(current), self.summary_norm(summary)]
        else:
            normed = [self.norm(features)]
        x = torch.cat(normed + [scalars if scalars.dtype == dtype else scalars.to(dtype)], dim=-1)
        return torch.tanh(self.hidden_layer(x))

    def action_logits(self, inputs: ControllerInputs) -> torch.Tensor:
        return self(inputs)[0]

    def value(self, inputs: ControllerInputs) -> torch.Tensor:
        return self(inputs)[1]

    def decide(self, inputs: ControllerInputs, greedy: bool = False,
               generator: torch.Generator | None = None) -> Decision:
        logits, value = self(inputs)
        if greedy:
            pause = logits > 0
            log_prob = nn.functional.logsigmoid(logits.abs())  # the argmax action: log sigmoid(|l|)
        else:
            pause = torch.rand(logits.shape, generator=generator, device=logits.device) < torch.sigmoid(logits)
            # log p(a) = logsigmoid(l) for a pause, logsigmoid(-l) for an emit
            log_prob = nn.functional.logsigmoid(torch.where(pause, logits, -logits))
        return Decision(pause.long(), log_prob, value)

    def evaluate(self, inputs: ControllerInputs, actions: torch.Tensor):
        logits, value = self(inputs)
        dist = torch.distributions.Bernoulli(logits=logits)
        return dist.log_prob(actions.float()), dist.entropy(), value

    def config(self) -> dict:
        return {"hidden_size": self.hidden_size, "width": self.width, "pause_scale": self.pause_scale,
                "use_top_prob": self.use_top_prob, "initial_pause_prob": self.initial_pause_prob,
                "detach_features": self.detach_features, "prompt_summary": self.prompt_summary}
