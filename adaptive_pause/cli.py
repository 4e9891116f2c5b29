"""`adaptive-pause` subcommands.

Owns: the command table and dispatch. Each subcommand lives in its stage's
module as `main(argv)`; this file only routes to it (imported lazily so that
`adaptive-pause --help` is fast).

Must not: implement any stage.
"""

from __future__ import annotations

import importlib
import os
import sys

# name -> (module, function, one-line help). Add a stage by adding one line.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "pretrain": ("adaptive_pause.training.pretrain", "main", "pause-pretraining of a base LM (random <pause> insertion)"),
    "finetune": ("adaptive_pause.training.finetune", "main", "LoRA pause-finetuning with k pauses before answers"),
    "eval-pauses": ("adaptive_pause.eval.eval_pauses", "main", "exact-match accuracy at fixed k pauses, per difficulty"),
    "train-urgency": ("adaptive_pause.training.urgency", "main",
                      "the urgency estimator: a head reading phrased prompts through the frozen LM"),
    "train-controller": ("adaptive_pause.ppo.trainer", "main", "PPO for the pause controller (--env analytic: exact test bench)"),
    "generate": ("adaptive_pause.generate", "main", "answer prompts under an urgency with a run's LM and controller"),
    "sweep": ("adaptive_pause.eval.sweep", "main", "urgency sweep of the controller vs fixed-k, confidence and random baselines"),
    "import-gguf": ("adaptive_pause.gguf", "main", "turn a GGUF file into a plain HF model directory (dequantized fp32)"),
    "serve": ("adaptive_pause.serving.command", "main", "an OpenAI-compatible HTTP server with per-request urgency and continuous batching"),
    "demo": ("adaptive_pause.demo", "main", "the whole pipeline on the embedded default: pretrain, finetune, PPO, sweep"),
}
# The training stages: one global batch split over `accelerate launch`'s processes. Every other command runs the
# whole job in each process it is given (two sweeps racing for one output file), so it refuses several.
MULTI_PROCESS = ("pretrain", "finetune", "train-urgency", "train-controller")


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: adaptive-pause COMMAND [--config FILE.yaml] [--field value ...]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "`adaptive-pause COMMAND --help` lists a command's fields."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"adaptive-pause: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module, function, _ = COMMANDS[name]
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1 and name not in MULTI_PROCESS:
        print(f"adaptive-pause {name}: error: launched as {world} processes, but {name} runs in one: start it "
              f"without `accelerate launch` (the stages that train across processes: {', '.join(MULTI_PROCESS)})",
              file=sys.stderr)
        return 2
    try:
        result = getattr(importlib.import_module(module), function)(rest)
    except ValueError as err:
        # Bad input: our errors name the field, so the message is the whole story; no traceback.
        print(f"adaptive-pause {name}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a path the user gave cannot be read or written; the message names it
        print(f"adaptive-pause {name}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"adaptive-pause {name}: interrupted (a training stage continues from its last checkpoint with "
              "--resume true)", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
