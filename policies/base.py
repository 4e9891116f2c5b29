"""The one interface every pause controller implements.

A controller is asked, for every row of a batch, before each answer token:
pause again (action 1) or emit (action 0)? It sees a `ControllerInputs`: the
LM's last hidden state (or any feature vector: the analytic env uses its own
observation), the urgency, the pauses spent before this token and in total,
and the LM's top answer-token probability (for confidence baselines).

Must not: import `adaptive_pause` (policies are a small torch-only library the
core plugs in).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

EMIT = 0
PAUSE = 1


@dataclass
class ControllerInputs:
    features: torch.Tensor  # (batch, feature width) float: the LM's last hidden state (+ prompt summary), or env features
    urgency: torch.Tensor  # (batch,) float in [0, 1]
    pauses_before_token: torch.Tensor  # (batch,) long: pauses already spent before the next answer token
    pauses_total: torch.Tensor  # (batch,) long: pauses spent on this answer so far
    top_prob: torch.Tensor | None = None  # (batch,) float: max answer-token probability (<pause> masked out)

    def index(self, idx) -> "ControllerInputs":
        return ControllerInputs(
            self.features[idx], self.urgency[idx], self.pauses_before_token[idx], self.pauses_total[idx],
            None if self.top_prob is None else self.top_prob[idx],
        )

    def to(self, device) -> "ControllerInputs":
        return ControllerInputs(
            self.features.to(device), self.urgency.to(device), self.pauses_before_token.to(device),
            self.pauses_total.to(device), None if self.top_prob is None else self.top_prob.to(device),
        )


@dataclass
class Decision:
    action: torch.Tensor  # (batch,) long: 1 = pause, 0 = emit
    log_prob: torch.Tensor  # (batch,) float: log-probability of `action` under the policy
    value: torch.Tensor  # (batch,) float: state-value estimate (zeros for untrained baselines)


class PausePolicy(nn.Module):
    """Base class: subclasses implement `action_logits` (and `value` if they learn one).

    The pause probability is `sigmoid(logit)`; deterministic baselines return
    +/- a large logit so that `decide` and `evaluate` stay well defined.
    """

    # What the policy reads, declared so the decode loop and loaders can check it (not guessed):
    hidden_size: int | None = None  # the LM hidden size its features come from; None: it reads no features
    prompt_summary: bool = False  # its features are [hidden state, mean prompt state] (2 x hidden_size)
    plans: bool = False  # its action is a pause count chosen before an answer token (planning), not pause/emit

    def action_logits(self, inputs: ControllerInputs) -> torch.Tensor:  # (batch,)
        raise NotImplementedError

    def value(self, inputs: ControllerInputs) -> torch.Tensor:  # (batch,)
        return torch.zeros_like(inputs.urgency, dtype=torch.float32)

    def distribution(self, inputs: ControllerInputs) -> torch.distributions.Bernoulli:
        return torch.distributions.Bernoulli(logits=self.action_logits(inputs).float())

    def decide(self, inputs: ControllerInputs, greedy: bool = False,
               generator: torch.Generator | None = None) -> Decision:
        logits = self.action_logits(inputs).float()
        if greedy:
            action = (logits > 0).long()
        else:
            uniform = torch.rand(logits.shape, generator=generator, device=logits.device)
            action = (uniform < torch.sigmoid(logits)).long()
        # log p(a) for a Bernoulli with logit l: a * logsigmoid(l) + (1 - a) * logsigmoid(-l)
        log_prob = torch.where(action.bool(), nn.functional.logsigmoid(logits), nn.functional.logsigmoid(-logits))
        return Decision(action, log_prob, self.value(inputs).float())

    def evaluate(self, inputs: ControllerInputs, actions: torch.Tensor):
        """(log_prob, entropy, value) of given `actions` (batch,): what the PPO update needs."""
        dist = self.distribution(inputs)
        return dist.log_prob(actions.float()), dist.entropy(), self.value(inputs).float()

    def plan_pauses(self, inputs: ControllerInputs) -> torch.Tensor | None:  # (batch,) long, or None
        """Pauses the policy commits to *now*, before seeing their hidden states (None: no plan).

        A deterministic policy that already knows it will pause m more times
        (e.g. `FixedPauses`) returns m per row; the decode loop may then prefill
        those m known pauses in one forward pass (`chunk_pauses`). Policies
        that decide from each new hidden state return None (the default).
        """
        return None

    def config(self) -> dict:
        """JSON-serialisable constructor arguments (saved beside the weights by `policies.save_policy`)."""
        return {}

    def check_hidden_size(self, hidden_size: int) -> None:
        if self.hidden_size is not None and self.hidden_size != hidden_size:
            raise ValueError(
                f"policy {type(self).__name__} expects hidden size {self.hidden_size} but the model's hidden size "
                f"is {hidden_size}"
            )
