"""The synthetic interruption task: additions interrupted mid-answer, with a phrase bank split by phrasing.

Owns: the kinds and their exact expected answers (after the interruption the answer restarts, see
`decoding/interrupt.py`): urgency (`hurry`, `slow`: the same answer), `cancel` (no answer: EOS at once),
`replace` (a new addition, whose answer is expected), modifications (`reverse`: the digits reversed;
`plus_one`: a+b+1, zero-padded as addition's answers), `irrelevant` (the same answer); where the
interruption arrives (`emitted`: the answer prefix already written; empty = during the pauses before the first
answer token, the collator then places it inside the pause run); the phrase bank (several templates per
variant with inline alternatives, split by template: a held-out template never occurs in training; dev reads
the validation templates, test the test templates). Difficulty: the addition's digits.

Must not: know about tokenizers, models or pauses (the collators place the interruption in token space).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .base import Example
from .synthetic import Addition
from .urgency_phrases import render

# variant -> kind (what the interruption does to the answer); the variant is what an evaluation reports.
VARIANTS = {"hurry": "urgency", "slow": "urgency", "cancel": "cancel", "replace": "replace",
            "reverse": "modify", "plus_one": "modify", "irrelevant": "irrelevant"}
KINDS = ("urgency", "cancel", "replace", "modify", "irrelevant")
# The caller-supplied urgency an urgency interruption stands for (when no estimator reads it).
VARIANT_URGENCY = {"hurry": 1.0, "slow": 0.0}

# {new} is the replacing request ("12+34"); every template is printable ASCII without digits of its own.
TEMPLATES: dict[str, list[str]] = {
    "hurry": ["hurry up", "{quick|quickly}, please", "{faster|be faster}, {I am|we are} in a rush",
              "{come on|hey}, {speed it up|move it}", "{no time|we have no time}, answer now", "{ASAP|asap} please"],
    "slow": ["take your time", "no rush{| at all}", "{think|go} {slowly|carefully}, {no hurry|there is time}",
             "{relax|easy}, {there's|there is} plenty of time", "{whenever|when} you are ready",
             "{be careful|be thorough}, time is no object"],
    "cancel": ["never mind", "{forget it|skip it}, {I|we} {don't|do not} need it", "{cancel|stop} {that|this}",
               "{no need|don't bother} anymore", "{scratch that|drop it}, {nothing else|that's all}",
               "{actually|oh}, {never mind|forget about it}"],
    "replace": ["forget that, {new}", "{scratch|drop} that, {do|solve} {new} instead", "{actually|wait}, {I meant|what is} {new}",
                "{instead|rather}, {new}", "{no|sorry}, {the question is|it should be} {new}",
                "{change of plan|new question}: {new}"],
    "reverse": ["the answer should be in reverse", "{reverse|flip} the digits", "{backwards|back to front}, please",
                "{oh|and}, {write|say} it {backwards|reversed}", "last digit first{| please}",
                "{read|spell} it {right to left|in reverse}"],
    "plus_one": ["add one more", "{plus|and} one more", "{oh|and}, {add|increase it by} one",
                 "one more {than that|on top}", "{make it|give me} one {higher|bigger|larger}",
                 "{increment|bump} it by one"],
    "irrelevant": ["while you think, I am {enjoying|having} a {nice|hot} cup of tea",
                   "{the weather|it} is {lovely|rainy|cold} today", "{my cat|the dog} {says hi|is asleep}",
                   "{by the way|btw}, {I like|nice} {your work|this}", "{hmm|ok|right}, {carry on|go on}",
                   "{I just|we just} {had lunch|got back}"],
}
# Task splits -> template splits: dev reads the held-out validation phrasings, test the held-out test ones.
TEMPLATE_SPLIT = {"train": "train", "dev": "validation", "test": "test"}


@dataclass(frozen=True)
class InterruptedExample(Example):
    """An `Example` whose answer is interrupted: `answer` is what is expected after the interruption."""

    emitted: str  # the original answer's prefix written before the interruption arrived ("" = during the pauses)
    interruption: str  # the rendered phrase
    variant: str  # a key of VARIANTS
    kind: str  # VARIANTS[variant]
    template: str
    original_answer: str  # the uninterrupted request's answer
    new_prompt: str  # the request the answer is for: the replacing one for `replace`, else the prompt


def split_templates(seed: int = 0) -> dict[str, dict[str, list[str]]]:
    """{template split: {variant: templates}}: per variant one validation, one test template, the rest train."""
    out = {name: {} for name in ("train", "validation", "test")}
    for variant, group in TEMPLATES.items():
        group = list(group)
        random.Random(f"interrupt-split:{seed}:{variant}").shuffle(group)
        out["validation"][variant], out["test"][variant], out["train"][variant] = group[:1], group[1:2], group[2:]
    return out


def expected_answer(variant: str, a: int, b: int, digits: int) -> str:
    """The answer expected after an interruption of `variant` to a+b (n-digit operands)."""
    answer = f"{a + b:0{digits + 1}d}"
    if variant in ("hurry", "slow", "irrelevant"):
        return answer
    if variant == "cancel":
        return ""
    if variant == "reverse":
        return answer[::-1]
    if variant == "plus_one":
        return f"{a + b + 1:0{digits + 1}d}"  # a + b + 1 < 10 ** (digits + 1): the width holds
    raise ValueError(f"variant: {variant!r} has no fixed answer (replace answers its new request)")


class InterruptionTask(Addition):
    """`interrupt[:LO-HI]`: an n-digit addition (n in LO..HI) with one interruption of a uniformly drawn
    variant, arriving after a uniformly drawn number of answer characters (0: during the pauses)."""

    name = "interrupt"
    default_range = (1, 2)

    def __init__(self, lo: int | None = None, hi: int | None = None, variants: tuple[str, ...] = tuple(VARIANTS),
                 phrase_seed: int = 0):
        super().__init__(lo, hi)
        unknown = sorted(set(variants) - set(VARIANTS))
        if unknown or not variants:
            raise ValueError(f"variants: must be a non-empty subset of {list(VARIANTS)}, got {list(variants)}")
        self.variants = tuple(variants)
        self.templates = split_templates(phrase_seed)

    def sample(self, rng: random.Random, split: str = "train") -> InterruptedExample:
        n = self._difficulty(rng)
        a, b = rng.randrange(10**n), rng.randrange(10**n)
        prompt, original = f"{a:0{n}d}+{b:0{n}d}=", f"{a + b:0{n + 1}d}"
        variant = rng.choice(self.variants)
        return self.interrupt(rng, split, prompt, original, a, b, n, variant)

    def interrupt(self, rng: random.Random, split: str, prompt: str, original: str, a: int, b: int, n: int,
                  variant: str) -> InterruptedExample:
        """The example a+b= interrupted by a phrase of `variant` from `split`'s templates."""
        template = rng.choice(self.templates[TEMPLATE_SPLIT[split]][variant])
        new_prompt, answer = prompt, None
        if variant == "replace":
            c, d = rng.randrange(10**n), rng.randrange(10**n)
            new_prompt, answer = f"{c:0{n}d}+{d:0{n}d}", f"{c + d:0{n + 1}d}"
        phrase = render(template.replace("{new}", new_prompt), rng)
        if answer is None:
            answer = expected_answer(variant, a, b, n)
        emitted = original[: rng.randrange(len(original))]  # 0 .. len-1 characters already written
        return InterruptedExample(prompt, answer, n, self.name, emitted, phrase, variant, VARIANTS[variant],
                                  template, original, new_prompt)
