"""Urgency phrasings with graded levels, combined with task prompts: the urgency estimator's data.

Owns: the phrase bank (7 levels from "take all the time you need" to "the reactor is about
to explode"; per level many templates in request wording and in context wording, each with
inline alternatives `{a|b|c}` and shared slots `{answer}`; the data are in
`urgency_templates.py`), its split *by template* into
train / validation / test (a held-out template's phrasings never occur in training; the
split is a pure function of the seed), and `PhrasedExample`s: a phrase rendered with a
random case and punctuation, placed before or after a task's prompt; and the task spec
`phrased:SPEC` (`PhrasedTask`): any task's examples carrying such phrases, so that the LM
learns to answer worded prompts. Level L of `LEVELS` stands for urgency L / (LEVELS - 1).

Must not: know about tokenizers or models. Only printable ASCII (the embedded character
tokenizer has no other characters and no newline).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Sequence

from .base import Example, Task
from .urgency_templates import BLOCKS, SLOTS, TEMPLATES, WRITTEN_APART  # noqa: F401 - the bank's data, re-exported

LEVELS = 7
SPLITS = ("train", "validation", "test")
PLACEMENTS = ("before", "after", "any")

_ALTERNATIVES = re.compile(r"\{([^{}]*)\}")
_SEPARATORS_BEFORE = (" ", ": ", ". ", ", ", " - ", "! ", "; ")
_ENDINGS = ("", ".", "!", "...", "?")


def level_urgency(level: int) -> float:
    """The urgency a level stands for: level / (LEVELS - 1)."""
    if not 0 <= level < LEVELS:
        raise ValueError(f"level: must be in 0..{LEVELS - 1}, got {level}")
    return level / (LEVELS - 1)


def render(template: str, rng: random.Random) -> str:
    """One surface form of `template`: each `{a|b}` picks an alternative, each `{slot}` a shared filler."""
    def pick(match: re.Match) -> str:
        body = match.group(1)
        options = SLOTS[body] if body in SLOTS else body.split("|")
        return rng.choice(options)

    return " ".join(_ALTERNATIVES.sub(pick, template).split())


@dataclass(frozen=True)
class Phrasing:
    level: int
    kind: str  # request | context
    template: str


@dataclass(frozen=True)
class PhrasedExample:
    prompt: str  # the task prompt with the phrase before or after it
    answer: str
    level: int
    urgency: float  # level / (LEVELS - 1)
    phrase: str  # the rendered phrase, as it appears in the prompt
    template: str  # the phrasing it was rendered from
    kind: str  # request | context
    placement: str  # before | after
    task_prompt: str
    difficulty: int
    task: str


class UrgencyPhraseBank:
    """The templates split by phrasing: per block and level, a seeded share goes to validation and to test.

    Every level keeps at least one template in every split, so each split covers the whole scale. Each block
    of `BLOCKS` is split on its own (the first block with the seed stream it always had), so a new block leaves
    the earlier blocks' splits unchanged; `blocks` picks some of them. `templates` replaces the bank with one
    block of your own.
    """

    def __init__(self, seed: int = 0, validation_fraction: float = 0.2, test_fraction: float = 0.2,
                 templates: Sequence[tuple[int, str, str]] | None = None, blocks: Sequence[str] | None = None):
        if not (0 < validation_fraction and 0 < test_fraction and validation_fraction + test_fraction < 1):
            raise ValueError(f"validation_fraction, test_fraction: need both > 0 and their sum < 1, got "
                             f"{validation_fraction}, {test_fraction}")
        if templates is not None and blocks is not None:
            raise ValueError("templates, blocks: give at most one (templates is a bank of its own)")
        if templates is not None:
            chosen = {"base": list(templates)}
        else:
            unknown = [b for b in (blocks or ()) if b not in BLOCKS]
            if unknown or (blocks is not None and not blocks):
                raise ValueError(f"blocks: must be a non-empty subset of {list(BLOCKS)}, got {blocks}")
            chosen = {b: BLOCKS[b] for b in (blocks or BLOCKS)}
        self.seed = seed
        self.splits: dict[str, list[Phrasing]] = {name: [] for name in SPLITS}
        for name, block in chosen.items():
            for level in range(LEVELS):
                group = [Phrasing(lv, kind, t) for lv, kind, t in block if lv == level]
                if len(group) < 3:
                    raise ValueError(f"templates: level {level} of block {name!r} needs at least 3 templates "
                                     f"(one per split), got {len(group)}")
                stream = f"urgency-split:{seed}:{level}" + ("" if name == "base" else f":{name}")
                random.Random(stream).shuffle(group)
                n_val = max(1, round(validation_fraction * len(group)))
                n_test = max(1, round(test_fraction * len(group)))
                self.splits["validation"] += group[:n_val]
                self.splits["test"] += group[n_val:n_val + n_test]
                self.splits["train"] += group[n_val + n_test:]

    def phrasings(self, split: str, level: int | None = None) -> list[Phrasing]:
        if split not in SPLITS:
            raise ValueError(f"split: must be one of {SPLITS}, got {split!r}")
        return [p for p in self.splits[split] if level is None or p.level == level]

    def sample(self, rng: random.Random, split: str, example: Example, level: int | None = None,
               placement: str = "any") -> PhrasedExample:
        """`example`'s prompt with a phrase of `split` (at `level`, else a uniform level) before or after it."""
        if placement not in PLACEMENTS:
            raise ValueError(f"placement: must be one of {PLACEMENTS}, got {placement!r}")
        level = rng.randrange(LEVELS) if level is None else level
        phrasing = rng.choice(self.phrasings(split, level))
        phrase = render(phrasing.template, rng)
        case = rng.random()
        # Case and punctuation are drawn the same way at every level: the estimator must read the words.
        if case < 0.15:
            phrase = phrase.upper()
        elif case < 0.3:
            phrase = phrase.lower()
        else:
            phrase = phrase[0].upper() + phrase[1:]
        side = rng.choice(("before", "after")) if placement == "any" else placement
        if side == "before":
            text = phrase + rng.choice(_SEPARATORS_BEFORE) + example.prompt
        else:
            text = example.prompt + " " + phrase + rng.choice(_ENDINGS)
        return PhrasedExample(text, example.answer, level, level_urgency(level), phrase, phrasing.template,
                              phrasing.kind, side, example.prompt, example.difficulty, example.task)

    def examples(self, tasks: Sequence[Task], split: str, n: int, seed: int, placement: str = "any",
                 levels: Sequence[int] | None = None) -> list[PhrasedExample]:
        """`n` phrased examples, a pure function of (bank seed, split, n, seed, placement, levels); levels cycle
        so that every level is equally represented. A `PhrasedTask` among `tasks` contributes its bare prompts."""
        if not tasks:
            raise ValueError("tasks: need at least one task")
        levels = list(range(LEVELS)) if levels is None else list(levels)
        rng = random.Random(f"urgency-examples:{self.seed}:{split}:{seed}:{placement}")
        out = []
        for i in range(n):
            task = tasks[rng.randrange(len(tasks))]
            task = task.inner if isinstance(task, PhrasedTask) else task  # one phrase per prompt: the bare task's
            out.append(self.sample(rng, split, task.sample(rng), levels[i % len(levels)], placement))
        return out


# Which phrasings a stage's task split carries: the training stages and PPO see only the bank's train
# phrasings (as the estimator does), evaluation its test phrasings, never seen by the LM or the estimator.
PHRASE_SPLIT_FOR = {"train": "train", "dev": "train", "test": "test"}


class PhrasedTask(Task):
    """Task spec `phrased[-before|-after][@SEED]:SPEC`: SPEC's examples, each with an urgency phrase of a
    uniform level before or after the prompt (`UrgencyPhraseBank.sample`; `-before`/`-after` fix the side,
    `@SEED` the bank's split seed, 0 by default). The answer, difficulty and scorer are SPEC's. Mixed with
    SPEC itself in a stage's `tasks`, it teaches the LM to answer prompts that carry urgency wording, which
    `generate(urgency="auto")` feeds it; the phrase's level is not the episode's urgency (PPO draws that as
    usual)."""

    def __init__(self, inner: Task, phrase_seed: int = 0, spec: str | None = None, placement: str = "any"):
        if placement not in PLACEMENTS:
            raise ValueError(f"placement: must be one of {PLACEMENTS}, got {placement!r}")
        self.inner = inner
        self.placement = placement
        # The first block only: this task teaches the LM that words may precede (or follow) the prompt. On the
        # embedded character model the composed block's longer, more varied phrases cost the demo's seed-0 LM
        # its 2-digit sums (docs/results.md, issue 14, session 11); the split is the full bank's, so held-out
        # phrasings stay held out.
        self.bank = UrgencyPhraseBank(phrase_seed, blocks=("base",))
        self.phrase_seed = phrase_seed
        self.name = f"phrased:{inner.name}" if spec is None else spec
        self.scorer = inner.scorer
        self.difficulties = inner.difficulties
        # what a run's data.json records: SPEC's own rule, and which phrasings each split carries
        self.split_rule = (f"{getattr(inner, 'split_rule', 'seed streams (generated task)')}; phrases: the "
                           f"bank's (seed {phrase_seed}) base-block train phrasings for train and dev, test "
                           f"phrasings for test")

    def sample(self, rng: random.Random, split: str = "train") -> Example:
        example = self.inner.sample(rng, split)
        phrased = self.bank.sample(rng, PHRASE_SPLIT_FOR[split], example, placement=self.placement)
        return Example(phrased.prompt, example.answer, example.difficulty, self.name)

    def score(self, prediction: str, answer: str) -> float:
        return self.inner.score(prediction, answer)
