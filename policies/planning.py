"""The planning controller: before an answer token, choose how many pauses to take (a count k in 0..K).

Owns: `PausePlanningHead`, a categorical head over k on the same features as the per-step head (the LM's
hidden state, optionally the prompt summary, urgency, pauses spent, top_prob) with a value output. Its action
is a count, not pause/emit (`plans = True`): the decode loop prefills the k pauses in one forward pass and then
emits; PPO trains it with the same clipped update on categorical log-probs.

Must not: import `adaptive_pause`, know about decoding, or save files (`policies/io.py`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import ControllerInputs, Decision
from .head import PauseControllerHead


class PausePlanningHead(PauseControllerHead):
    """MLP over the per-step head's features -> (K + 1 logits over the pause count, value).

    max_count: K, the largest count (the decode loop's `max_pauses`; counts beyond a cap are cut there).
    initial_pause_prob p: the untrained head's counts follow P(k) ~ p^k, the count distribution of a per-step
    head that pauses with probability p at each step (a near-uniform start over 17 counts, mean 8 pauses, collapsed
    onto k <= 1 in PPO on the demo: docs/results.md). The other arguments are `PauseControllerHead`'s.
    """

    plans = True

    def __init__(self, hidden_size: int, max_count: int, width: int = 64, pause_scale: float = 8.0,
                 use_top_prob: bool = True, detach_features: bool = True, prompt_summary: bool = False,
                 initial_pause_prob: float = 0.5):
        if not (isinstance(max_count, int) and max_count >= 1):
            raise ValueError(f"max_count: must be an integer >= 1, got {max_count!r}")
        super().__init__(hidden_size, width=width, pause_scale=pause_scale, use_top_prob=use_top_prob,
                         detach_features=detach_features, prompt_summary=prompt_summary,
                         initial_pause_prob=initial_pause_prob)
        self.max_count = max_count
        self.out = nn.Linear(width, max_count + 2)  # rows 0..K: count logits, row K+1: value
        with torch.no_grad():  # CleanRL's init: a small-std policy output keeps the first policy near its bias
            nn.init.orthogonal_(self.out.weight[:-1], 0.01)
            nn.init.orthogonal_(self.out.weight[-1:], 1.0)
            self.out.bias.zero_()
            self.out.bias[:-1] = torch.arange(max_count + 1) * math.log(initial_pause_prob)  # P(k) ~ p^k

    def forward(self, inputs: ControllerInputs) -> tuple[torch.Tensor, torch.Tensor]:  # (batch, K+1), (batch,)
        out = self.out(self.trunk(inputs)).float()
        return out[:, :-1], out[:, -1]

    def action_logits(self, inputs: ControllerInputs) -> torch.Tensor:
        raise ValueError("PausePlanningHead chooses a pause count (a categorical action), not pause/emit: "
                         "use decide/evaluate (the decode loop runs it as a planner)")

    def value(self, inputs: ControllerInputs) -> torch.Tensor:
        return self(inputs)[1]

    def decide(self, inputs: ControllerInputs, greedy: bool = False,
               generator: torch.Generator | None = None) -> Decision:
        logits, value = self(inputs)
        log_probs = logits.log_softmax(-1)  # (batch, K+1)
        if greedy:
            count = log_probs.argmax(-1)
        else:
            count = torch.multinomial(log_probs.exp(), 1, generator=generator).squeeze(-1)
        return Decision(count, log_probs.gather(-1, count[:, None]).squeeze(-1), value)

    def evaluate(self, inputs: ControllerInputs, actions: torch.Tensor):
        logits, value = self(inputs)
        dist = torch.distributions.Categorical(logits=logits)
        return dist.log_prob(actions.long()), dist.entropy(), value

    def config(self) -> dict:
        return {"hidden_size": self.hidden_size, "max_count": self.max_count, "width": self.width,
                "pause_scale": self.pause_scale, "use_top_prob": self.use_top_prob,
                "detach_features": self.detach_features, "prompt_summary": self.prompt_summary,
                "initial_pause_prob": self.initial_pause_prob}
