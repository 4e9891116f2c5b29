"""`train-controller` with `controller: outcome`: the outcome planner, fitted by supervision, not PPO.

Owns: collecting the decode loop's greedy outcome after every count k = 0..max_pauses (prefilled with its
countdown, as the planner's k would be) on `outcome_prompts` dev prompts, with the features the planner reads
at that decision (the same for every k: they are read before any pause), split over processes; caching them in
state/ (a killed run resumes without decoding again); fitting `policies.OutcomePlanner` to them
(`fit_outcome_head`, early stopping on a held-out tenth); and the held-out tenth's figures per min_gain. The run
directory matches a PPO run's: config.yaml, controller/, model/ + adapter/, state/, logs/ (the fit's curve),
result.json, data.json.

Must not: implement the head or its fit (`policies/outcome.py`), or decode by itself (`decoding/`).
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from policies import FixedPauses, OutcomePlanner, fit_outcome_head

from ..checkpoint import atomic_dir, verify_checksums, write_json_atomic
from ..config import save_yaml
from ..decoding import DecodeConfig, decode
from ..modeling import AdaptivePauseModel
from ..tasks import data_record, example_id, get_task
from .config import PPOConfig

OUTCOMES = "outcomes.safetensors"
MIN_GAINS = (0.0, 0.002, 0.005, 0.01, 0.02, 0.05)  # the held-out figures reported per min_gain (the config picks one)


def _prompts(config: PPOConfig, tasks: list) -> list:
    """The dev examples the outcomes are observed on, from the run's seed (the same on every process)."""
    rng = random.Random(config.seed)
    return [tasks[rng.randrange(len(tasks))].sample(rng, "dev") for _ in range(config.outcome_prompts)]


@torch.no_grad()
def observe(model: AdaptivePauseModel, tasks: list, examples: list, config: PPOConfig,
            batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (n, width) at the first decision, correct (n, K + 1)): each example answered greedily after
    k = 0..K prefilled pauses (FixedPauses(k) in the decode loop, countdown k, ..., 1 on a countdown model)."""
    by_name = {task.name: task for task in tasks}
    settings = model.settings
    correct, features = [], []
    for k in range(config.max_pauses + 1):
        decode_config = DecodeConfig(max_new_tokens=config.max_new_tokens, max_pauses=config.max_pauses,
                                     max_pauses_total=config.max_pauses_total, first_token_pauses_only=True,
                                     chunk_pauses=True, record_features=k == 0, prompt_summary=config.prompt_summary)
        column = []
        for start in range(0, len(examples), batch):
            chunk = examples[start:start + batch]
            result = decode(model.lm, model.tokenizer, model.encode([e.prompt for e in chunk]), FixedPauses(k),
                            torch.zeros(len(chunk), device=model.device), decode_config, settings.pause_id,
                            settings.numbering, settings.pause_slots)
            texts = model.tokenizer.batch_decode(result.answer_ids, skip_special_tokens=True)
            column += [float(by_name[e.task].score(t, e.answer)) for t, e in zip(texts, chunk)]
            if k == 0:
                features.append(result.trace.features[:, 0].float().cpu())
        correct.append(torch.tensor(column))
    return torch.cat(features), torch.stack(correct, 1)


def _observe_split(model, tasks, examples, config, accelerator) -> tuple[torch.Tensor, torch.Tensor]:
    """`observe` with the examples split over processes (rank r takes rows r, r + world, ...), gathered back
    in the examples' order on every process."""
    world, rank = accelerator.num_processes, accelerator.process_index
    per = math.ceil(len(examples) / world)
    mine = examples[rank::world]
    mine = mine + [examples[0]] * (per - len(mine))  # equal shapes for the gather; the padding is dropped
    features, correct = observe(model, tasks, mine, config)
    both = torch.cat([features, correct], 1).to(accelerator.device)
    gathered = accelerator.gather(both).cpu().view(world, per, -1)  # rank-major
    rows = gathered.transpose(0, 1).reshape(world * per, -1)[:len(examples)]  # back to row r + j * world order
    width = features.shape[1]
    return rows[:, :width], rows[:, width:]


def train_outcome(config: PPOConfig, accelerator, run_dir: Path) -> dict:
    """Observe (or read back from state/), fit, evaluate on the held-out tenth, save; returns result.json's data."""
    if accelerator.is_main_process:
        save_yaml(config, run_dir / "config.yaml")
    model = AdaptivePauseModel.from_pretrained(config.model_run_dir, device=accelerator.device)
    model.lm.eval()
    tasks = [get_task(spec) for spec in config.tasks]
    examples = _prompts(config, tasks)
    state = run_dir / "state"
    if config.resume and (state / OUTCOMES).is_file():
        verify_checksums(state)
        saved = load_file(str(state / OUTCOMES))
        features, correct = saved["features"], saved["correct"]
        if correct.shape != (len(examples), config.max_pauses + 1):
            raise ValueError(f"resume: {state / OUTCOMES} holds outcomes of shape {tuple(correct.shape)}, "
                             f"expected ({len(examples)}, {config.max_pauses + 1})")
    else:
        features, correct = _observe_split(model, tasks, examples, config, accelerator)
        if accelerator.is_main_process:
            with atomic_dir(state) as tmp:
                save_file({"features": features.contiguous(), "correct": correct.contiguous()}, str(tmp / OUTCOMES))
    accelerator.wait_for_everyone()

    torch.manual_seed(config.seed)  # the same head on every process (each fits it alike; it is small)
    head = OutcomePlanner(model.hidden_size, config.max_pauses, config.reward_pause_normaliser(),
                          width=config.head_width, prompt_summary=config.prompt_summary,
                          min_gain=config.outcome_min_gain)
    generator = torch.Generator().manual_seed(config.seed)
    fit = fit_outcome_head(head, features, correct, config.outcome_fit_steps, generator)
    validation = fit.pop("validation_index")  # the rows the fit held out; not a figure for result.json
    held_out = held_out_figures(head, features[validation], correct[validation])
    if accelerator.is_main_process:  # the fit's curve, as PPO's runs log theirs
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(run_dir / "logs")) as writer:
            for step, train_loss, validation_loss in fit["history"]:
                writer.add_scalar("outcome/train_bce", train_loss, step)
                writer.add_scalar("outcome/validation_bce", validation_loss, step)
    result = {"controller": "outcome", "fit": fit, "held_out": held_out,
              "observed": {"prompts": len(examples), "accuracy_per_k": correct.mean(0).tolist()},
              "num_processes": accelerator.num_processes}
    if accelerator.is_main_process:
        trained = AdaptivePauseModel(model.lm, model.tokenizer, head, urgency_estimator=model.urgency_estimator)
        trained.trained_decode = {"max_pauses": config.max_pauses, "max_pauses_total": config.max_pauses_total,
                                  "first_token_pauses_only": True}
        trained.save_pretrained(run_dir)
        write_json_atomic(result, run_dir / "result.json")
        seen = {task.name: {example_id(e) for e in examples if e.task == task.name}
                for task in tasks if hasattr(task, "splits")}
        write_json_atomic(data_record("train-controller", "dev", list(config.tasks), tasks, seen),
                          run_dir / "data.json")
        best_k = int(correct.mean(0).argmax())
        u0 = next(row for row in held_out["min_gains"] if row["min_gain"] == config.outcome_min_gain)
        print(f"train-controller: outcome planner fitted on {len(examples)} prompts x {config.max_pauses + 1} counts; "
              f"held-out tenth at u=0, min_gain {config.outcome_min_gain}: accuracy {u0['accuracy_u0']:.3f} with "
              f"{u0['pauses_u0']:.2f} pauses (best fixed k={best_k}: {held_out['fixed'][best_k]:.3f})", flush=True)
    accelerator.wait_for_everyone()
    return result


@torch.no_grad()
def held_out_figures(head: OutcomePlanner, x: torch.Tensor, y: torch.Tensor) -> dict:
    """On the fit's held-out rows (features x, outcomes y): fixed-k accuracy, and the planner's accuracy and mean
    pauses at u = 0 and 0.5 for each min_gain in MIN_GAINS and the configured one."""
    from policies import ControllerInputs

    kept = head.min_gain
    zeros = torch.zeros(len(x), dtype=torch.long)
    rows = []
    try:
        for min_gain in sorted(set(MIN_GAINS) | {kept}):
            head.min_gain = min_gain
            row = {"min_gain": min_gain}
            for u in (0.0, 0.5):
                k = head.decide(ControllerInputs(x, torch.full((len(x),), u), zeros, zeros)).action
                row[f"accuracy_u{u:g}"] = y.gather(1, k[:, None]).mean().item()
                row[f"pauses_u{u:g}"] = k.float().mean().item()
            rows.append(row)
    finally:
        head.min_gain = kept
    return {"rows": len(x), "fixed": y.mean(0).tolist(), "min_gains": rows}
