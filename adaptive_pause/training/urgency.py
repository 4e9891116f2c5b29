"""`adaptive-pause train-urgency`: the urgency estimator, supervised on phrased prompts, the LM frozen.

Owns: the stage's config (`UrgencyTrainConfig`), its data (the phrase bank's train split
for training, held-out phrasings for validation and test), pooling the frozen LM's prompt
states once, the Accelerate loop over the head alone (AdamW, cosine schedule, tensorboard,
progress bar, exact resume from `state/`), and the evaluation: Spearman(level, estimate)
and mean absolute error against level / (LEVELS - 1), per split and per level.

Writes `run_dir/urgency/` (the estimator: safetensors + JSON, what `generate(urgency="auto")`
loads) and `run_dir/urgency_train/` (config.yaml, state/, logs/, history.json, eval.json);
nothing else in the run directory is touched.

Must not: decode, or train the LM or the controller.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
import torch
from torch import nn

from policies import UrgencyEstimator, save_estimator
from policies.urgency import POOLINGS

from ..checkpoint import atomic_dir, write_json_atomic
from ..config import check, help_field, load_yaml, parse_cli, save_yaml, to_dict
from ..tasks.urgency_phrases import BLOCKS, LEVELS, PLACEMENTS, UrgencyPhraseBank

STAGE_DIR = "urgency_train"
ESTIMATOR_DIR = "urgency"
LOSSES = ("bce", "mse", "ce")


@dataclass
class UrgencyTrainConfig:
    """The urgency estimator: a head over the frozen LM's prompt states, trained on phrased prompts."""

    run_dir: str = help_field("a run directory with model/ (and adapter/): the LM the estimator reads through; "
                         "the estimator goes to RUN_DIR/urgency/, the stage's records to RUN_DIR/urgency_train/")
    tasks: list[str] = help_field("task specs whose prompts carry the phrases", default_factory=lambda: ["addition:1-3"])
    phrase_seed: int = help_field("seed of the phrase bank's split by template (train / validation / test)", default=0)
    phrase_blocks: list[str] = help_field(
        "the phrase bank's blocks to train and evaluate on (tasks/urgency_templates.BLOCKS: base, composed); "
        "empty = all", default_factory=list)
    placement: str = help_field("where the phrase goes: 'before' or 'after' the task text, or 'any' (each at random)",
                           default="any")
    num_train: int = help_field("training prompts (train phrasings only)", default=4096)
    num_validation: int = help_field("validation prompts (held-out phrasings)", default=1024)
    num_test: int = help_field("test prompts (other held-out phrasings; reported once, at the end)", default=1024)
    layer: list[int] = help_field("which of the LM's hidden states the estimator reads (-1 = the last layer's); "
                                  "several are read side by side", default_factory=lambda: [-1])
    pooling: str = help_field("the estimator's head: 'mean' (the states' mean, standardised with the training "
                              "prompts' statistics -> linear: a probe), 'meanmax' (mean and max of the states -> MLP) "
                              "or 'conv' (a convolution over positions -> max: detects short cues)",
                              default="meanmax")
    kernel: int = help_field("conv head: the convolution's width in tokens (odd)", default=5)
    width: int = help_field("estimator MLP width (conv: channels)", default=128)
    dropout: float = help_field("estimator dropout", default=0.1)
    loss: str = help_field("'bce' (cross-entropy against the level's urgency as a soft target), 'mse', or 'ce' "
                           "(the levels as classes: one logit each, the urgency is the expected level)",
                           default="bce")
    seed: int = help_field("seed for the head's initialisation, the data and the minibatch order", default=0)
    max_steps: int = help_field("optimizer steps", default=1500)
    batch_size: int = help_field("global minibatch size (split across processes)", default=256)
    learning_rate: float = help_field("peak AdamW learning rate", default=1e-3)
    warmup_steps: int = help_field("linear warm-up steps before cosine decay", default=50)
    weight_decay: float = help_field("AdamW weight decay", default=0.01)
    feature_batch_size: int = help_field("prompts per LM forward pass when pooling states", default=64)
    eval_every: int = help_field("steps between validation passes (also at the end)", default=250)
    checkpoint_every: int = help_field("steps between checkpoints in state/ (also at the end)", default=500)
    resume: bool = help_field("continue from RUN_DIR/urgency_train/state (weights, optimizer, step)", default=False)
    progress: bool = help_field("show a progress bar", default=True)

    def __post_init__(self):
        check(bool(self.run_dir), "run_dir", "must name a run directory with model/")
        check(len(self.tasks) > 0, "tasks", "needs at least one task")
        check(self.placement in PLACEMENTS, "placement", f"must be one of {PLACEMENTS}, got {self.placement!r}")
        check(set(self.phrase_blocks) <= set(BLOCKS), "phrase_blocks",
              f"must name blocks of {list(BLOCKS)}, got {self.phrase_blocks}")
        for name in ("num_train", "num_validation", "num_test", "width", "max_steps", "batch_size",
                     "feature_batch_size", "eval_every", "checkpoint_every"):
            check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        check(0 <= self.dropout < 1, "dropout", f"must be in [0, 1), got {self.dropout}")
        check(len(self.layer) >= 1 and len(set(self.layer)) == len(self.layer), "layer",
              f"needs one or more distinct hidden-state indices, got {self.layer}")
        check(self.pooling in POOLINGS, "pooling", f"must be one of {POOLINGS}, got {self.pooling!r}")
        check(self.kernel >= 1 and self.kernel % 2 == 1, "kernel", f"must be an odd integer >= 1, got {self.kernel}")
        check(self.loss in LOSSES, "loss", f"must be one of {LOSSES}, got {self.loss!r}")
        check(math.isfinite(self.learning_rate) and self.learning_rate > 0, "learning_rate",
               f"must be a positive number, got {self.learning_rate}")
        check(self.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        check(math.isfinite(self.weight_decay) and self.weight_decay >= 0, "weight_decay",
               f"must be a finite number >= 0, got {self.weight_decay}")


# Fields that may change between a run and its resumption; any other difference is refused.
RESUMABLE_CHANGES = {"max_steps", "resume", "progress", "eval_every", "checkpoint_every", "feature_batch_size"}


class _PooledHead(nn.Module):
    """The estimator's trainable part behind `forward`, so that DDP's gradient hooks see the calls."""

    def __init__(self, estimator: UrgencyEstimator):
        super().__init__()
        self.estimator = estimator

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # -> (batch,) logits
        return self.estimator.logits_from_features(features)


@dataclass
class PhrasedSplit:
    features: torch.Tensor  # (n, ...) float: UrgencyEstimator.features of the prompt's states
    level: torch.Tensor  # (n,) long
    urgency: torch.Tensor  # (n,) float: level / (LEVELS - 1)
    kind: list[str]  # request | context
    placement: list[str]  # before | after


def phrased_split(model, estimator: UrgencyEstimator, config: UrgencyTrainConfig, split: str, n: int,
                  seed: int) -> PhrasedSplit:
    """`n` prompts of `split`'s phrasings, read once through the frozen LM into `estimator`'s features."""
    from ..tasks import get_task

    bank = UrgencyPhraseBank(config.phrase_seed, blocks=config.phrase_blocks or None)
    examples = bank.examples([get_task(spec) for spec in config.tasks], split, n, seed, config.placement)
    prompt_ids = model.encode([e.prompt for e in examples])
    from ..urgency import prompt_features

    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    features = prompt_features(model.lm, prompt_ids, pad_id, model.settings.pause_id, model.settings.numbering,
                               model.settings.pause_slots, estimator, config.feature_batch_size,
                               progress=f"LM states ({split})" if config.progress else None)
    return PhrasedSplit(features, torch.tensor([e.level for e in examples]),
                        torch.tensor([e.urgency for e in examples], dtype=torch.float32),
                        [e.kind for e in examples], [e.placement for e in examples])


def spearman(x, y) -> float:
    from scipy.stats import spearmanr

    if len(set(x)) < 2 or len(set(y)) < 2:
        return float("nan")
    return float(spearmanr(x, y).statistic)


@torch.no_grad()
def evaluate(estimator: UrgencyEstimator, data: PhrasedSplit) -> dict:
    """eval/spearman (level vs estimate), eval/mae (vs the level's urgency), the mean estimate per level, and
    the same two figures per phrase kind and placement."""
    was_training = estimator.training
    estimator.eval()
    device = next(estimator.parameters()).device
    estimate = torch.cat([estimator.urgency_from_logits(estimator.logits_from_features(chunk.to(device))).cpu()
                          for chunk in data.features.split(512)])
    estimator.train(was_training)

    def figures(keep: torch.Tensor) -> dict:
        return {"spearman": spearman(data.level[keep].tolist(), estimate[keep].tolist()),
                "mae": float((estimate[keep] - data.urgency[keep]).abs().mean()), "n": int(keep.sum())}

    result = figures(torch.ones_like(data.level, dtype=torch.bool))
    result["mean_estimate_per_level"] = [float(estimate[data.level == lv].mean()) for lv in range(LEVELS)]
    for name, column in (("kind", data.kind), ("placement", data.placement)):
        for value in sorted(set(column)):
            keep = torch.tensor([c == value for c in column])
            result[f"{name}={value}"] = figures(keep)
    return result


def _optimizer_tensors(optimizer) -> tuple[dict, dict]:
    """AdamW state as flat tensors (safetensors) + JSON (param groups): never pickle."""
    state = optimizer.state_dict()
    tensors = {f"{index}.{key}": value.detach().cpu().contiguous() for index, entry in state["state"].items()
               for key, value in entry.items()}
    return tensors, {"param_groups": state["param_groups"]}


def _restore_optimizer(optimizer, tensors: dict, meta: dict) -> None:
    state: dict = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _save_state(stage_dir: Path, estimator: UrgencyEstimator, optimizer, step: int) -> None:
    from safetensors.torch import save_file

    tensors, meta = _optimizer_tensors(optimizer)
    with atomic_dir(stage_dir / "state") as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in estimator.state_dict().items()},
                  str(tmp / "estimator.safetensors"))
        if tensors:
            save_file(tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "trainer.json").write_text(json.dumps({"step": step, **meta}, indent=2) + "\n")


def _check_resumable(saved: UrgencyTrainConfig, config: UrgencyTrainConfig) -> None:
    diffs = [f"{f.name}: saved={getattr(saved, f.name)!r}, now={getattr(config, f.name)!r}"
             for f in dataclasses.fields(UrgencyTrainConfig)
             if f.name not in RESUMABLE_CHANGES and getattr(saved, f.name) != getattr(config, f.name)]
    if diffs:
        raise ValueError("resume: the config differs from the run's urgency_train/config.yaml: " + "; ".join(diffs))


def run_train_urgency(config: UrgencyTrainConfig) -> dict:
    """Train the estimator as configured; returns {"validation": ..., "test": ...} figures."""
    from safetensors.torch import load_file
    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup

    from ..modeling import AdaptivePauseModel
    from .loop import make_accelerator

    run_dir = Path(config.run_dir)
    if not (run_dir / "model").is_dir():
        raise ValueError(f"run_dir: {run_dir} has no model/ (expected a finetune, controller or demo run directory)")
    stage_dir = run_dir / STAGE_DIR
    if not config.resume and (stage_dir / "state").exists():
        raise ValueError(f"run_dir: {stage_dir} already holds an urgency run (state/); pass --resume true to "
                         "continue it, or remove that directory yourself")
    if config.resume:
        if not (stage_dir / "state" / "trainer.json").is_file():
            raise ValueError(f"resume: {stage_dir / 'state'} holds no checkpoint; nothing to resume from")
        _check_resumable(load_yaml(UrgencyTrainConfig, stage_dir / "config.yaml"), config)

    accelerator = make_accelerator(stage_dir, config.seed)
    if accelerator.is_fsdp2:  # nothing here is large: the LM is frozen and never prepared, the head is small
        raise ValueError("train-urgency trains a small head over the frozen LM, which FSDP would not shard: launch "
                         "it on one process or with DDP (scripts/accelerate/multi_gpu_ddp.yaml), not FSDP")
    world, rank = accelerator.num_processes, accelerator.process_index
    if config.batch_size % world:
        raise ValueError(f"batch_size: {config.batch_size} does not split evenly over {world} processes")
    model = AdaptivePauseModel.from_pretrained(run_dir, device=accelerator.device)
    for p in model.lm.parameters():
        p.requires_grad_(False)
    torch.manual_seed(config.seed)  # the same initial head on every process
    estimator = UrgencyEstimator(model.hidden_size, width=config.width, layer=config.layer, dropout=config.dropout,
                                 vocab_size=len(model.tokenizer), pause_id=model.settings.pause_id,
                                 pooling=config.pooling, kernel=config.kernel,
                                 classes=LEVELS if config.loss == "ce" else None).to(accelerator.device)
    # The LM is frozen, so its states are read once: training touches only the head.
    train_data = phrased_split(model, estimator, config, "train", config.num_train, config.seed)
    if config.pooling == "mean":  # statistics of the training prompts only (a resumed run reloads them below)
        estimator.standardize(train_data.features)
    val_data = phrased_split(model, estimator, config, "validation", config.num_validation, config.seed + 1)
    head = _PooledHead(estimator)
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    start = 0
    if config.resume:
        state = stage_dir / "state"
        meta = json.loads((state / "trainer.json").read_text())
        estimator.load_state_dict(load_file(str(state / "estimator.safetensors")))
        if (state / "optimizer.safetensors").is_file():
            _restore_optimizer(optimizer, load_file(str(state / "optimizer.safetensors")), meta)
        start = int(meta["step"])
    scheduler = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.max_steps,
                                                last_epoch=start - 1 if start else -1)
    if start:  # the scheduler recomputes the learning rate for the resumed step
        for group, lr in zip(optimizer.param_groups, scheduler.get_last_lr()):
            group["lr"] = lr
    head, optimizer = accelerator.prepare(head, optimizer)
    if accelerator.is_main_process:
        stage_dir.mkdir(parents=True, exist_ok=True)
        save_yaml(config, stage_dir / "config.yaml")
    accelerator.init_trackers("urgency", config={k: v if isinstance(v, (int, float, str, bool)) else str(v)
                                                 for k, v in to_dict(config).items()})

    history_file = stage_dir / "history.json"
    history: list[dict] = json.loads(history_file.read_text()) if config.resume and history_file.is_file() else []
    features, target = train_data.features.to(accelerator.device), train_data.urgency.to(accelerator.device)
    level = train_data.level.to(accelerator.device)
    per_process = config.batch_size // world
    bar = tqdm(range(start, config.max_steps), desc="train-urgency", initial=start, total=config.max_steps,
               disable=not (config.progress and accelerator.is_main_process))
    head.train()
    for step in bar:
        # Minibatch and dropout are functions of (seed, step): a resumed run draws what the first would have.
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        rows = torch.randint(0, features.shape[0], (config.batch_size,), generator=generator).to(accelerator.device)
        # Every process runs the head on the whole global batch under one seed and keeps its rows, so each row's
        # dropout mask is the one it gets on one process: the curve does not depend on the process count (the
        # head is small; the LM's features are precomputed).
        torch.manual_seed(config.seed * 1_000_003 + step)
        logits = head(features[rows])[rank * per_process:(rank + 1) * per_process]
        rows = rows[rank * per_process:(rank + 1) * per_process]
        if config.loss == "bce":
            loss = nn.functional.binary_cross_entropy_with_logits(logits, target[rows])
        elif config.loss == "ce":
            loss = nn.functional.cross_entropy(logits, level[rows])
        else:
            loss = nn.functional.mse_loss(torch.sigmoid(logits), target[rows])
        accelerator.backward(loss)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        global_loss = accelerator.reduce(loss.detach(), reduction="mean").item()
        if not math.isfinite(global_loss):
            raise ValueError(f"learning_rate: the loss became {global_loss} at step {step}; lower learning_rate="
                             f"{config.learning_rate}")
        record = {"step": step + 1, "loss": global_loss, "lr": scheduler.get_last_lr()[0]}
        done = step + 1 == config.max_steps
        if (step + 1) % config.eval_every == 0 or done:
            figures = evaluate(estimator, val_data)
            record.update({"eval/spearman": figures["spearman"], "eval/mae": figures["mae"]})
            accelerator.log({"losses/urgency_loss": global_loss, "charts/learning_rate": record["lr"],
                             "eval/spearman": figures["spearman"], "eval/mae": figures["mae"]}, step=step + 1)
            bar.set_postfix(loss=f"{global_loss:.4f}", spearman=f"{figures['spearman']:.3f}",
                            mae=f"{figures['mae']:.3f}")
        history.append(record)
        if accelerator.is_main_process and ((step + 1) % config.checkpoint_every == 0 or done):
            _save_state(stage_dir, estimator, optimizer, step + 1)
            write_json_atomic(history, history_file)
    accelerator.wait_for_everyone()
    result = {}
    if accelerator.is_main_process:
        test_data = phrased_split(model, estimator, config, "test", config.num_test, config.seed + 2)
        result = {"validation": evaluate(estimator, val_data), "test": evaluate(estimator, test_data),
                  "train": evaluate(estimator, train_data)}
        save_estimator(estimator, run_dir / ESTIMATOR_DIR,
                       extra={"levels": LEVELS, "tasks": config.tasks, "phrase_seed": config.phrase_seed,
                              "phrase_blocks": config.phrase_blocks or list(BLOCKS),
                              "layer": config.layer, "validation": {k: result["validation"][k]
                                                                     for k in ("spearman", "mae")}})
        write_json_atomic(result, stage_dir / "eval.json")
        for split in ("train", "validation", "test"):
            r = result[split]
            print(f"train-urgency: {split}: spearman={r['spearman']:.3f} mae={r['mae']:.3f} n={r['n']} "
                  f"mean estimate per level={[round(v, 2) for v in r['mean_estimate_per_level']]}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result


def main(argv: list[str] | None = None) -> int:
    run_train_urgency(parse_cli(UrgencyTrainConfig, argv, positional=("run_dir",)))
    return 0

