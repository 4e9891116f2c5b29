"""`adaptive-pause generate RUN_DIR PROMPT...`: the command-line face of `AdaptivePauseModel.generate`.

Owns: the command's flags (every `DecodeConfig` field, derived from the dataclass), policy specs
(`fixed:K`, `confidence:HIGH[:LOW]`, ...) and the printed answers.

Must not: decode (that is `decoding/`) or load models by itself (that is `modeling.py`).
"""

from __future__ import annotations

import argparse
import json

from policies import ConfidenceThreshold, FixedPauses, PausePolicy, RandomPauses

from .config import add_arguments, from_dict, given_values
from .decoding import DecodeConfig
from .modeling import AdaptivePauseModel


def parse_policy(spec: str) -> PausePolicy | None:
    """CLI policy spec: 'saved' (None: the run's controller), 'fixed:K', 'fixed-each:K', 'confidence:HIGH[:LOW]',
    'random:P'."""
    name, _, arg = spec.partition(":")
    try:
        if name == "saved" and not arg:
            return None
        if name == "fixed":
            return FixedPauses(int(arg))
        if name == "fixed-each":
            return FixedPauses(int(arg), every_token=True)
        if name == "confidence":
            high, _, low = arg.partition(":")
            return ConfidenceThreshold(float(high), float(low) if low else 0.0)
        if name == "random":
            return RandomPauses(float(arg))
    except ValueError as err:
        raise ValueError(f"--policy {spec!r}: {err}") from None
    raise ValueError(f"--policy {spec!r}: expected saved, fixed:K, fixed-each:K, confidence:HIGH[:LOW] or random:P")


def main(argv: list[str] | None = None) -> int:
    """`adaptive-pause generate RUN_DIR --urgency 0.2 "prompt" ...`: print each answer with its pause count."""
    parser = argparse.ArgumentParser(prog="adaptive-pause generate", argument_default=argparse.SUPPRESS,
                                     description="Answer prompts with a run's LM and pause controller.")
    parser.add_argument("run_dir", help="run directory (model/, optional adapter/ and controller/)")
    parser.add_argument("prompts", nargs="+", help="prompt texts")
    # One value per flag so that `--urgency 0.2 "prompt" ...` leaves the prompts to the positional list.
    parser.add_argument("--urgency", default="0.3",
                        help="one urgency in [0, 1] or 'auto' (estimated from the prompt) for all prompts, or one "
                             "per prompt, comma-separated (0.1,auto,0.9)")
    parser.add_argument("--urgency_adjust", default=None,
                        help="turn estimates into the controller's urgency: comma-separated steps scale:X, offset:X, "
                             "max:X (at least X), min:X (at most X), clamp:LOW:HIGH (applied in that order)")
    parser.add_argument("--policy", default="saved",
                        help="saved (the run's controller), fixed:K, fixed-each:K, confidence:HIGH[:LOW], random:P")
    parser.add_argument("--seed", type=int, default=None, help="seed for sampled tokens and controller actions")
    # Every DecodeConfig field, derived from the dataclass (booleans as --flag/--no-flag, lists one item per flag,
    # so no option swallows a prompt).
    add_arguments(parser, DecodeConfig, skip=("record_features", "prompt_summary"), beside_positionals=True)
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: where the model loads)")
    parser.add_argument("--json", action="store_true", default=False, help="print one JSON object per prompt instead of text")
    args = parser.parse_args(argv)
    try:
        values = [v.strip() if v.strip() == "auto" else float(v) for v in args.urgency.split(",")]
    except ValueError:
        raise ValueError(f"urgency: expected a number or 'auto', or comma-separated ones, got {args.urgency!r}") \
            from None
    urgency = values[0] if len(values) == 1 else values
    # Only the flags given override the run's trained decode settings (decode.yaml) and the defaults.
    given = given_values(args, DecodeConfig)
    typed = from_dict(DecodeConfig, given)
    overrides = {name: getattr(typed, name) for name in given}
    model = AdaptivePauseModel.from_pretrained(args.run_dir, device=args.device)
    out = model.generate(args.prompts, urgency=urgency, policy=parse_policy(args.policy), seed=args.seed,
                         urgency_adjust=args.urgency_adjust, **overrides)
    for i, prompt in enumerate(args.prompts):
        if args.json:
            print(json.dumps({"prompt": prompt, "answer": out.texts[i], "pauses": out.pauses[i],
                              "pauses_per_token": out.pauses_per_token[i], "steps": out.steps[i],
                              "finish_reason": out.finish_reasons[i], "urgency_estimated": out.urgency_estimated[i],
                              "urgency_used": out.urgency_used[i]}))
        else:
            estimate = "" if out.urgency_estimated[i] is None else f"urgency_estimated={out.urgency_estimated[i]:.3f} "
            print(f"{prompt}{out.texts[i]}\t[pauses={out.pauses[i]} per_token={out.pauses_per_token[i]} "
                  f"{estimate}urgency={out.urgency_used[i]:.3f} finish={out.finish_reasons[i]}]")
    return 0
