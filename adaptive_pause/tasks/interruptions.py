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
        "{come on|hey}, {speed it up|move it}", "{no time|we have no time}, answer now", "{ASAP|asap} please",
        "{hurry|hurry it up}, {please|now}", "{quick|quick quick}, {answer|reply} {now|right away}",
        "{speed up|go faster}, {please|thanks}", "{we are|I am} {out of|short on} time",
        "{faster|quicker}, {faster|come on}", "{be quick|make it quick} {about it|now}",
        "{no|not much} time {left|to waste}, {hurry|be fast}", "{I|we} {need|want} it {now|right now|this second}",
        "{get a move on|step on it}{| please}", "{rush|rush it}, {please|it's urgent}",
        "{urgent|it's urgent} now, {answer|reply} {fast|quickly}", "{chop chop|snap to it}",
        "{don't|do not} {dawdle|take long|keep me waiting}",
        "{time is up|time is running out}, {answer|reply} {now|quickly}", "{sooner|faster} {please|would be better}",
        "{pick up|speed up} the pace", "{immediately|right now}, {please|no delay}",
        "{I'm|I am} in a {hurry|rush}, {go|be} {fast|quick}"],
    "slow": ["take your time", "no rush{| at all}", "{think|go} {slowly|carefully}, {no hurry|there is time}",
        "{relax|easy}, {there's|there is} plenty of time", "{whenever|when} you are ready",
        "{be careful|be thorough}, time is no object", "no {hurry|rush}, {take|use} {all the time you need|your time}",
        "{slow down|slowly}, {please|no rush}", "{take|use} {as long as|all the time} you {need|like}",
        "{there's|there is} no {hurry|rush|deadline}",
        "{think it through|think it over}, {no|there is no} {hurry|rush}", "{easy does it|gently}, {no|not a} rush",
        "{we|I} can wait{| a while}", "{don't|do not} {rush|hurry}{| on my account}",
        "{relax|calm down}, {there's|there is} no deadline", "{it|this} can wait{| until later}",
        "{at|in} your own pace{| please}", "{be|stay} {careful|accurate} rather than fast",
        "{no need|there's no need} to {hurry|rush}", "{time|speed} {doesn't|does not} matter{| now}",
        "{plenty of|lots of} time{| left}", "{whenever|any time} is fine", "{we have|I have} all day",
        "{accuracy|getting it right} matters more than speed"],
    "cancel": ["never mind", "{forget it|skip it}, {I|we} {don't|do not} need it", "{cancel|stop} {that|this}",
        "{no need|don't bother} anymore", "{scratch that|drop it}, {nothing else|that's all}",
        "{actually|oh}, {never mind|forget about it}", "{stop|halt}{| please}",
        "{cancel|abort} {it|the request|the question}", "{forget|never mind} the question",
        "{I|we} {don't|do not} {need|want} {it|an answer} {anymore|any more}",
        "{drop|skip} {it|the question}{| please}", "{no|not} {answer|reply} needed{| anymore}",
        "{stop|quit} {answering|working on it}", "{call it off|abort}{| now}", "{never mind|nevermind}, {stop|cancel}",
        "{leave it|let it go}, {no need|not needed}", "{forget about it|forget it} entirely",
        "{that's|that is} {no longer|not} needed", "{I|we} {changed|have changed} {my|our} mind, {stop|cancel}",
        "{don't|do not} {bother|answer}", "{no more|enough}, {stop|stop here}", "{ignore|disregard} {my|the} question",
        "{cancel that|cancel this}{| please}", "{abort|stop}, {abort|stop}"],
    "replace": ["forget that, {new}", "{scratch|drop} that, {do|solve} {new} instead",
        "{actually|wait}, {I meant|what is} {new}", "{instead|rather}, {new}",
        "{no|sorry}, {the question is|it should be} {new}", "{change of plan|new question}: {new}",
        "{never mind|forget it}, {what's|what is} {new}", "{sorry|oops}, {I meant|make that} {new}",
        "{new|different} {question|request}: {new}", "{do|solve|answer} {new} {instead|now}", "{not that|no}, {new}",
        "{replace|swap} {it|that} with {new}", "{my mistake|typo}, {it's|it is} {new}",
        "{wait|hold on}, {new} {instead|please}", "{ignore|forget} {that|the question}, {new}",
        "{let's do|try} {new} {instead|now}", "{change it|switch} to {new}", "{correction|update}: {new}",
        "{the real question|what I want} is {new}", "{instead of that|in its place}, {new}",
        "{skip|drop} {it|that}, {what about|how about} {new}", "{oh|wait}, {new}{| instead}",
        "{rather|better}, {compute|do} {new}", "{start over|restart} with {new}"],
    "reverse": ["the answer should be in reverse", "{reverse|flip} the digits", "{backwards|back to front}, please",
        "{oh|and}, {write|say} it {backwards|reversed}", "last digit first{| please}",
        "{read|spell} it {right to left|in reverse}", "{reverse|invert} {it|the answer|the order}",
        "{give|write} {the digits|it} in reverse order", "{backward|backwards}{| please}",
        "{turn|flip} {it|the answer} {around|back to front}", "{reversed|in reverse}, please",
        "{oh|and}, reverse the {answer|digits}", "{from|start from} the last digit",
        "{right to left|end to start}, {please|thanks}", "{read|write} {it|the number} {backward|backwards}",
        "{mirror|flip} the {digits|number}", "the {digits|answer} {reversed|backwards}",
        "{swap|invert} the order of the digits", "{answer|write} in reverse{| order}",
        "{can you|please} reverse {it|that}", "{put|write} the digits {backwards|in reverse}",
        "{and|oh} {flip|reverse} it{| too}", "{reverse|backwards} {order|digits}, {please|ok}",
        "{last|final} digit {first|at the front}"],
    "plus_one": ["add one more", "{plus|and} one more", "{oh|and}, {add|increase it by} one",
        "one more {than that|on top}", "{make it|give me} one {higher|bigger|larger}", "{increment|bump} it by one",
        "{add|plus} one{| please}", "{one more|one extra}, {please|thanks}", "{increase|raise} {it|the answer} by one",
        "{add one|plus one} to {it|the answer|the sum}", "{make|let} it one {more|higher}", "{oh|and}, {plus|add} one",
        "{go|count} one {higher|up}", "the answer {plus|and} one", "{one|exactly one} more than the sum",
        "{bump|raise} it {up |}by one", "{add|put} one {on top|extra}", "{increment|raise} the {answer|sum} by one",
        "{plus|add} one {to the result|at the end}", "{give|write} the sum plus one", "{and|oh}, one more{| please}",
        "{then|also} add one", "{the next number|one above it}, please", "{add|plus} one {extra|more}, {thanks|ok}"],
    "irrelevant": ["while you think, I am {enjoying|having} a {nice|hot} cup of tea",
        "{the weather|it} is {lovely|rainy|cold} today", "{my cat|the dog} {says hi|is asleep}",
        "{by the way|btw}, {I like|nice} {your work|this}", "{hmm|ok|right}, {carry on|go on}",
        "{I just|we just} {had lunch|got back}", "{it's|it is} {sunny|windy|snowing} {outside|here}",
        "{I am|we are} {eating|having} {lunch|dinner|a sandwich}", "{the|my} {coffee|tea} is {getting cold|too hot}",
        "{my|our} {neighbour|friend} {says hello|just called}", "{I|we} {love|like} {music|gardening|this song}",
        "{ok|okay|alright}, {I'm|I am} {listening|here}", "{the birds|my kids} are {singing|noisy} today",
        "{oh|hmm}, {nice|interesting}", "{I'm|I am} {sitting|waiting} {by the window|in the garden}",
        "{what a|such a} {lovely|long} day", "{sorry|excuse me}, {just|I was} {sneezing|yawning}",
        "{the|our} {train|bus} is {late|on time} again", "{I|we} {watched|saw} a {film|movie} yesterday",
        "{just so you know|fyi}, {I'm|I am} {at home|at work}", "{my|the} {phone|doorbell} {rang|is ringing}",
        "{keep going|go ahead}, {I'm|I am} {fine|here}", "{it smells|that smells} {nice|good} in here",
        "{we|I} {went|walked} to the {park|shop} {today|earlier}"],
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
    """{template split: {variant: templates}}: per variant a sixth of the templates (at least one) for validation,
    as many for test, the rest for training."""
    out = {name: {} for name in ("train", "validation", "test")}
    for variant, group in TEMPLATES.items():
        group = list(group)
        random.Random(f"interrupt-split:{seed}:{variant}").shuffle(group)
        n = max(1, round(len(group) / 6))
        out["validation"][variant], out["test"][variant], out["train"][variant] = (group[:n], group[n:2 * n],
                                                                                group[2 * n:])
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
