"""The synthetic tasks shipped with the project. Each has a difficulty knob whose range is configurable.

Prompts are short ASCII strings ending in "=" or "?" so that the character tokenizer keeps them a few dozen
tokens long; answers have a fixed format per task so exact match is meaningful.

Must not: know about tokenizers, models or pauses.
"""

from __future__ import annotations

import itertools
import random

from .base import Example, Task


class _RangedTask(Task):
    default_range: tuple[int, int] = (1, 1)
    min_allowed: int = 1

    def __init__(self, lo: int | None = None, hi: int | None = None):
        lo = self.default_range[0] if lo is None else lo
        hi = self.default_range[1] if hi is None else hi
        if not self.min_allowed <= lo <= hi:
            raise ValueError(
                f"task {self.name!r}: difficulty range must satisfy {self.min_allowed} <= lo <= hi, got {lo}-{hi}"
            )
        self.lo, self.hi = lo, hi
        self.difficulties = tuple(range(lo, hi + 1))

    def _difficulty(self, rng: random.Random) -> int:
        return rng.randint(self.lo, self.hi)

    def __repr__(self) -> str:
        return f"{self.name}:{self.lo}-{self.hi}"


class Addition(_RangedTask):
    """a+b with both operands n digits; the answer zero-padded to n+1 digits, most significant first."""

    name = "addition"
    default_range = (1, 3)

    def sample(self, rng, split="train"):
        n = self._difficulty(rng)
        a, b = rng.randrange(10**n), rng.randrange(10**n)
        return Example(f"{a:0{n}d}+{b:0{n}d}=", f"{a + b:0{n + 1}d}", n, self.name)


class Parity(_RangedTask):
    """Parity of n bits (London & Kanade: a 2-layer transformer needs pauses for it)."""

    name = "parity"
    default_range = (2, 8)

    def sample(self, rng, split="train"):
        n = self._difficulty(rng)
        bits = [rng.randrange(2) for _ in range(n)]
        return Example(f"par{''.join(map(str, bits))}=", str(sum(bits) % 2), n, self.name)


class SumMod10(_RangedTask):
    """The last digit of the sum of n digits."""

    name = "sum_mod10"
    default_range = (2, 8)

    def sample(self, rng, split="train"):
        n = self._difficulty(rng)
        digits = [rng.randrange(10) for _ in range(n)]
        return Example(f"sum{''.join(map(str, digits))}=", str(sum(digits) % 10), n, self.name)


class MultiHop(_RangedTask):
    """Variable lookup through `hops` assignments, with one distractor chain, statements shuffled."""

    name = "multihop"
    default_range = (1, 4)

    def sample(self, rng, split="train"):
        hops = self._difficulty(rng)
        distractor_hops = rng.randint(1, self.hi)
        names = rng.sample("abcdefghijklmnopqrstuvwxyz", hops + 1 + distractor_hops + 1)
        chain, distractor = names[: hops + 1], names[hops + 1 :]
        value = rng.randrange(10)
        statements = [f"{chain[0]}={value}"] + [f"{chain[i]}={chain[i - 1]}" for i in range(1, len(chain))]
        statements += [f"{distractor[0]}={rng.randrange(10)}"]
        statements += [f"{distractor[i]}={distractor[i - 1]}" for i in range(1, len(distractor))]
        rng.shuffle(statements)
        return Example(",".join(statements) + f";{chain[-1]}?", str(value), hops, self.name)


class ThreeSum(_RangedTask):
    """3SUM over Z_10^2 (Pfau et al., "Let's think dot by dot"): is there i<j<k with x_i+x_j+x_k = 0 mod 10?

    Difficulty is the number of vectors; labels are balanced 50/50.
    """

    name = "threesum"
    default_range = (3, 8)
    min_allowed = 3
    dim = 2

    @staticmethod
    def _has_triple(xs):
        return any(
            all((a + b + c) % 10 == 0 for a, b, c in zip(x, y, z)) for x, y, z in itertools.combinations(xs, 3)
        )

    def sample(self, rng, split="train"):
        n = self._difficulty(rng)
        positive = rng.random() < 0.5
        while True:
            xs = [tuple(rng.randrange(10) for _ in range(self.dim)) for _ in range(n)]
            if positive:
                i, j, k = sorted(rng.sample(range(n), 3))
                xs[k] = tuple((-a - b) % 10 for a, b in zip(xs[i], xs[j]))
                break
            if not self._has_triple(xs):
                break
        prompt = "3s" + ",".join("".join(map(str, x)) for x in xs) + "="
        return Example(prompt, "1" if positive else "0", n, self.name)


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


class PrimeDigitSum(_RangedTask):
    """Digit sum mod 7 of the first n primes after p (the seed example). Prompt "pr<p>,<n>="."""

    name = "primes"
    default_range = (1, 4)

    def sample(self, rng, split="train"):
        n = self._difficulty(rng)
        p = rng.randrange(2, 100)
        primes, q = [], p + 1
        while len(primes) < n:
            if _is_prime(q):
                primes.append(q)
            q += 1
        digit_sum = sum(int(d) for prime in primes for d in str(prime))
        return Example(f"pr{p},{n}=", str(digit_sum % 7), n, self.name)


SYNTHETIC_TASKS = {cls.name: cls for cls in (Addition, Parity, SumMod10, MultiHop, ThreeSum, PrimeDigitSum)}
