"""Collators: text examples -> padded tensors with pauses, labels and position ids.

Owns: where pauses go in training sequences and which targets carry loss. `PretrainCollator`: `<pause>` at
random positions of the whole sequence; loss on every real token, never on a pause target. `FinetuneCollator`:
prompt, then k pauses (k ~ a distribution over [0, K], `check_k_weights`) before the answer, optionally before
every answer token; loss on answer tokens (and EOS) only; an interrupted example (`tasks.InterruptedExample`) gets
its interruption where it arrives at decode time (inside the pause run or after the answer prefix already
written), framed by the interruption markers, without loss, then pauses and the expected answer. Position ids come
from `positions.position_ids`, the decode loop's rule; countdown values (a model with `pause_countdown`) from
`countdown.countdown_values`, the whole-sequence rule the decode loop reproduces for fixed k. Pause placement
draws from its own generator, separate from the task streams, so a no-pause control sees exactly the same examples.

Must not: sample examples (tasks do) or run models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ..config import check
from ..countdown import countdown_values, lm_inputs
from ..positions import position_ids
from ..tasks import Example, InterruptedExample
from ..tokens import encode_prompts, encode_text, interrupt_token_ids


def check_k_weights(k_weights: Optional[list[float]], max_pauses: int) -> None:
    """k_weights: the relative weight of each pause count k in 0..max_pauses (None: uniform)."""
    if k_weights is None:
        return
    check(len(k_weights) == max_pauses + 1, "k_weights",
           f"needs max_pauses + 1 = {max_pauses + 1} numbers, got {len(k_weights)}")
    check(all(w >= 0 and math.isfinite(w) for w in k_weights) and sum(k_weights) > 0,
           "k_weights", "must be non-negative and not all zero")


IGNORE_INDEX = -100


@dataclass
class TokenBatch:
    input_ids: torch.Tensor  # (batch, seq) long, right-padded
    attention_mask: torch.Tensor  # (batch, seq) long
    position_ids: torch.Tensor  # (batch, seq) long
    labels: torch.Tensor  # (batch, seq) long, IGNORE_INDEX where no loss
    countdown: torch.Tensor  # (batch, seq) long: pauses still to come at each pause (countdown.py), else 0

    def _fields(self) -> tuple:
        return self.input_ids, self.attention_mask, self.position_ids, self.labels, self.countdown

    def rows(self, start: int, stop: int) -> "TokenBatch":
        return TokenBatch(*(t[start:stop] for t in self._fields()))

    def to(self, device) -> "TokenBatch":
        return TokenBatch(*(t.to(device) for t in self._fields()))

    def model_inputs(self, model) -> dict:
        """`model`'s forward arguments: token ids (or, for a model with a countdown, their embeddings plus the
        countdown's), mask and positions."""
        return {**lm_inputs(model, self.input_ids, self.countdown), "attention_mask": self.attention_mask,
                "position_ids": self.position_ids}

    @property
    def num_targets(self) -> int:
        """Tokens that carry loss (after HF's one-position shift)."""
        return int((self.labels[:, 1:] != IGNORE_INDEX).sum())


class _Collator:
    def __init__(self, tokenizer, pause_id: int, numbering: str, pause_slots: int, max_length: int):
        self.tokenizer = tokenizer
        self.pause_id = pause_id
        self.numbering = numbering
        self.pause_slots = pause_slots
        self.max_length = max_length
        self.pad_id = tokenizer.pad_token_id
        self.eos_id = tokenizer.eos_token_id
        if self.eos_id is None:
            raise ValueError("tokenizer has no EOS token; answers must end in one so the model learns to stop")

    def encode(self, example: Example) -> tuple[list[int], list[int]]:
        if not example.prompt:
            raise ValueError(f"empty prompt in task {example.task!r}")
        where = f"task {example.task!r}"
        prompt = encode_prompts(self.tokenizer, [example.prompt])[0]
        answer = encode_text(self.tokenizer, example.answer, what=f"{where} answer") + [self.eos_id]
        # as one text (random pause placement): prefix, interruption, answer
        if isinstance(example, InterruptedExample):
            answer = (encode_text(self.tokenizer, example.emitted, what=f"{where} answer")
                      + self.framed(example) + answer)
        return prompt, answer

    def framed(self, example: InterruptedExample) -> list[int]:
        """`<interrupt>` + the interruption's tokens + `</interrupt>`, as `DecodeSession.interrupt` appends them."""
        opening, closing = interrupt_token_ids(self.tokenizer)
        return [opening] + encode_text(self.tokenizer, example.interruption,
                                       what=f"task {example.task!r} interruption") + [closing]

    def pad(self, sequences: list[list[int]], labels: list[list[int]]) -> TokenBatch:
        longest = max(len(s) for s in sequences)
        if longest > self.max_length:
            raise ValueError(f"a training sequence has {longest} tokens, more than max_length={self.max_length}")
        n = len(sequences)
        input_ids = torch.full((n, longest), self.pad_id, dtype=torch.long)
        label_ids = torch.full((n, longest), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((n, longest), dtype=torch.long)
        for row, (seq, lab) in enumerate(zip(sequences, labels)):
            input_ids[row, : len(seq)] = torch.tensor(seq)
            label_ids[row, : len(lab)] = torch.tensor(lab)
            attention_mask[row, : len(seq)] = 1
        positions = position_ids(input_ids, attention_mask, self.pause_id, self.numbering, self.pause_slots)
        countdown = countdown_values(input_ids, attention_mask, self.pause_id, max(self.pause_slots, 1))
        return TokenBatch(input_ids, attention_mask, positions, label_ids, countdown)


class PretrainCollator(_Collator):
    """Random pause insertion over the whole sequence; `pause_rate` pauses per token on average."""

    def __init__(self, tokenizer, pause_id, numbering, pause_slots, pause_rate: float, max_length: int = 4096):
        super().__init__(tokenizer, pause_id, numbering, pause_slots, max_length)
        if pause_rate < 0:
            raise ValueError(f"pause_rate must be >= 0, got {pause_rate}")
        self.pause_rate = pause_rate

    def __call__(self, examples: Sequence[Example], generator: torch.Generator) -> TokenBatch:
        sequences, labels = [], []
        for example in examples:
            prompt, answer = self.encode(example)
            tokens = prompt + answer
            # Pauses per gap (before tokens 1..L-1: never before the first token, which has no
            # context to think about) ~ Poisson(rate), capped by the slots a run may use.
            counts = torch.poisson(torch.full((len(tokens),), float(self.pause_rate)), generator=generator).long()
            counts[0] = 0
            if self.numbering == "slotted":
                counts.clamp_(max=self.pause_slots)
            seq = []
            for token, count in zip(tokens, counts.tolist()):
                seq += [self.pause_id] * count + [token]
            sequences.append(seq)
            labels.append([IGNORE_INDEX if t == self.pause_id else t for t in seq])
        return self.pad(sequences, labels)


class FinetuneCollator(_Collator):
    """k pauses between prompt and answer (and, optionally, before every answer token)."""

    def __init__(self, tokenizer, pause_id, numbering, pause_slots, max_pauses: int,
                 k_weights: Sequence[float] | None = None, pauses_before_each_answer_token: bool = False,
                 max_length: int = 4096):
        super().__init__(tokenizer, pause_id, numbering, pause_slots, max_length)
        if max_pauses < 0:
            raise ValueError(f"max_pauses (K) must be >= 0, got {max_pauses}")
        if numbering == "slotted" and max_pauses > pause_slots:
            raise ValueError(f"max_pauses={max_pauses} exceeds the model's pause_slots={pause_slots}")
        weights = torch.ones(max_pauses + 1) if k_weights is None else torch.tensor(k_weights, dtype=torch.float)
        if weights.numel() != max_pauses + 1 or bool((weights < 0).any()) or float(weights.sum()) <= 0:
            raise ValueError(f"k_weights needs {max_pauses + 1} non-negative numbers, not all zero; got {k_weights}")
        self.max_pauses = max_pauses
        self.k_probs = weights / weights.sum()
        self.before_each = pauses_before_each_answer_token

    def build(self, example: Example, k: int) -> tuple[list[int], list[int]]:
        """One sequence with exactly k pauses before the answer (before each answer token if so configured)."""
        prompt, answer = self.encode(example)
        seq = list(prompt)
        lab = [IGNORE_INDEX] * len(prompt)
        for i, token in enumerate(answer):
            if i == 0 or self.before_each:
                seq += [self.pause_id] * k
                lab += [IGNORE_INDEX] * k
            seq.append(token)
            lab.append(token)
        return seq, lab

    def build_interrupted(self, example: InterruptedExample, k: int, arrival: int, k_after: int
                          ) -> tuple[list[int], list[int]]:
        """prompt, k pauses, the answer prefix already written (loss on it), the framed interruption (no loss:
        the user's words), k_after pauses, the expected answer and EOS (loss). With no prefix written the
        interruption arrives inside the pause run, after `arrival` of its pauses."""
        prompt = encode_prompts(self.tokenizer, [example.prompt])[0]
        where = f"task {example.task!r} answer"
        emitted = encode_text(self.tokenizer, example.emitted, what=where)
        answer = encode_text(self.tokenizer, example.answer, what=where) + [self.eos_id]
        seq, lab = list(prompt), [IGNORE_INDEX] * len(prompt)
        if not emitted:
            seq += [self.pause_id] * arrival
            lab += [IGNORE_INDEX] * arrival
        for part, pauses, loss in ((emitted, k, True), (self.framed(example), 0, False), (answer, k_after, True)):
            for i, token in enumerate(part):
                if pauses and (i == 0 or self.before_each):
                    seq += [self.pause_id] * pauses
                    lab += [IGNORE_INDEX] * pauses
                seq.append(token)
                lab.append(token if loss else IGNORE_INDEX)
        return seq, lab

    def __call__(self, examples: Sequence[Example], generator: torch.Generator, k: int | None = None) -> TokenBatch:
        """`k` fixes the pauses for every row (evaluation; an interruption without a written prefix then arrives
        after k // 2 of them, and k pauses follow it); otherwise k is drawn per example."""
        n = len(examples)
        if k is None:
            ks = torch.multinomial(self.k_probs, n, replacement=True, generator=generator).tolist()
            if any(isinstance(e, InterruptedExample) for e in examples):  # drawn after ks: other batches unchanged
                arrivals = [int(torch.randint(ki + 1, (1,), generator=generator)) for ki in ks]
                after = torch.multinomial(self.k_probs, n, replacement=True, generator=generator).tolist()
        else:
            ks = [k] * n
        if not any(isinstance(e, InterruptedExample) for e in examples):
            built = [self.build(e, ki) for e, ki in zip(examples, ks)]
        elif k is not None:
            built = [self.build_interrupted(e, k, k // 2, k) if isinstance(e, InterruptedExample) else self.build(e, k)
                     for e in examples]
        else:
            built = [self.build_interrupted(e, ki, ai, bi) if isinstance(e, InterruptedExample) else self.build(e, ki)
                     for e, ki, ai, bi in zip(examples, ks, arrivals, after)]
        return self.pad([s for s, _ in built], [lab for _, lab in built])
