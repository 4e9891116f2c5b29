"""The supervised training loop shared by pause-pretraining and LoRA pause-finetuning.

Owns: the Accelerate loop (AdamW, warm-up + cosine schedule, gradient clipping, NaN guard, tensorboard,
progress bar), the per-step data (a seeded mixture of task streams), `TrainConfig` (the fields every
supervised stage shares), the one accelerator builder (`make_accelerator`), `prepare` (Accelerate's, with what
FSDP2 needs for peft's trainable token rows), `unsharded` (full weights outside a forward) and `tracker_config`.
Why our own loop and not TRL's SFTTrainer: see `train`.

Must not: know which stage it runs (the stage passes a collate function).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from ..checkpoint import NonFiniteLossError, write_json_atomic
from ..config import check, help_field, parse_cli, to_dict
from ..countdown import MODULE_NAME as COUNTDOWN
from ..tasks import ALL_TASKS, STAGE_SPLITS, Example, Task, data_record, example_id
from .collators import IGNORE_INDEX, TokenBatch
from .state import load_train_state, save_train_state


@dataclass
class TrainConfig:
    """Fields shared by every training stage."""

    output_dir: str = help_field("run directory (created; one holding another run is refused unless --overwrite)",
                                 default="runs/default")
    tasks: list[str] = help_field("task specs, e.g. addition addition:1-4 jsonl:data.jsonl:numeric",
                             default_factory=lambda: list(ALL_TASKS))
    seed: int = help_field("seed for data, pause placement and initialisation", default=0)
    max_steps: int = help_field("optimizer steps", default=1500)
    batch_size: int = help_field("global batch size (split across processes)", default=128)
    learning_rate: float = help_field("peak AdamW learning rate", default=2e-3)
    warmup_steps: int = help_field("linear warm-up steps before cosine decay", default=100)
    weight_decay: float = help_field("AdamW weight decay", default=0.0)
    max_grad_norm: float = help_field("gradient clipping norm (0 disables)", default=1.0)
    log_every: int = help_field("steps between logged scalars", default=50)
    progress: bool = help_field("show a progress bar", default=True)
    checkpoint_every: int = help_field("optimizer steps between checkpoints in output_dir/state/ (and at the end)",
                                       default=100)
    resume: bool = help_field("continue the run in output_dir from its last checkpoint (bit-identical)", default=False)
    overwrite: bool = help_field("replace a run of another kind or config in output_dir (only once this one "
                                 "completes)", default=False)

    def __post_init__(self):
        check(len(self.tasks) > 0, "tasks", "needs at least one task")
        check(self.max_steps >= 1, "max_steps", f"must be >= 1, got {self.max_steps}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(math.isfinite(self.learning_rate) and self.learning_rate > 0, "learning_rate",
               f"must be a positive number, got {self.learning_rate}")
        check(self.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        check(self.max_grad_norm >= 0, "max_grad_norm", f"must be >= 0, got {self.max_grad_norm}")
        check(self.log_every >= 1, "log_every", f"must be >= 1, got {self.log_every}")
        check(self.checkpoint_every >= 1, "checkpoint_every", f"must be >= 1, got {self.checkpoint_every}")



def examples_for_step(tasks: Sequence[Task], seed: int, step: int, batch_size: int) -> list[Example]:
    """The global batch of step `step`: tasks mixed uniformly, a pure function of (seed, step)."""
    rng = random.Random(f"data:{seed}:{step}")
    return [tasks[rng.randrange(len(tasks))].sample(rng, "train") for _ in range(batch_size)]


def _note_seen(seen: dict[str, set[str]], examples: list[Example]) -> None:
    """Add the ids of file-backed examples (the tasks `seen` has a set for) to `seen`."""
    for example in examples:
        if example.task in seen:
            seen[example.task].add(example_id(example))


def pause_generator(seed: int, step: int) -> torch.Generator:
    """The generator for pause placement at `step`: separate from the data stream."""
    # Not Python's hash(): it is salted per process, and every process must draw the same pauses.
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 2 + 1)


def token_loss_sum(model, batch: TokenBatch) -> torch.Tensor:
    """Sum (not mean) of next-token cross-entropy over the batch's targets."""
    logits = model(**batch.model_inputs(model)).logits  # (batch, seq, vocab)
    logits = logits[:, :-1].float()
    targets = batch.labels[:, 1:]
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )


def train(
    model,
    accelerator: Accelerator,
    config: TrainConfig,
    tasks: Sequence[Task],
    collate: Callable[[list[Example], torch.Generator], TokenBatch],
    output_dir: Path,
    stage: str,
) -> list[dict]:
    """Run `config.max_steps` optimizer steps on trainable parameters of `model`; return the loss history.

    Why not TRL's SFTTrainer / transformers' Trainer: every batch needs freshly drawn pause counts and explicit
    `position_ids` from our numbering rule, so SFTTrainer's preparation and collation would both be bypassed,
    leaving only the Trainer loop, and that loop is not exact across process counts. Here every process builds
    the same *global* batch (a function of (seed, step)) and keeps its rows; the loss is a sum over target
    tokens divided by the global target count, so 2 processes follow the 1-process loss curve. The Trainer
    averages per-process means instead, which differs whenever processes hold different target counts.
    """
    world, rank = accelerator.num_processes, accelerator.process_index
    if config.batch_size % world:
        raise ValueError(f"batch_size={config.batch_size} must be divisible by the number of processes ({world})")
    per_process = config.batch_size // world
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{stage}: the model has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    # The schedule is stepped by hand once per optimizer step: Accelerate's wrapped scheduler would
    # step once per process, which is right for per-process batches but not for our global batch.
    scheduler = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.max_steps)
    model, optimizer = prepare(accelerator, model, optimizer)
    # Under FSDP2, prepare replaces every parameter by a sharded DTensor (and the optimizer's with them): clip
    # those, not the plain tensors collected above.
    params = [p for p in model.parameters() if p.requires_grad]

    history: list[dict] = []
    file_tasks = {task.name for task in tasks if hasattr(task, "splits")}
    seen: dict[str, set[str]] = {name: set() for name in file_tasks}  # ids of file-backed examples trained on
    start, last_good = 0, None
    if config.resume:
        start, history = load_train_state(output_dir, model, optimizer, scheduler, accelerator, config.max_steps)
        last_good = start
        if accelerator.is_main_process:
            print(f"{stage}: resuming from {output_dir / 'state'} at step {start}", flush=True)
        for step in range(start if file_tasks else 0):  # the data is a function of (seed, step): what was trained on
            _note_seen(seen, examples_for_step(tasks, config.seed, step, config.batch_size))
    bar = tqdm(range(start, config.max_steps), desc=stage, initial=start, total=config.max_steps,
               disable=not (config.progress and accelerator.is_main_process))
    model.train()
    for step in bar:
        examples = examples_for_step(tasks, config.seed, step, config.batch_size)
        _note_seen(seen, examples)
        batch = collate(examples, pause_generator(config.seed, step))
        num_targets = batch.num_targets  # global: every process built the same global batch
        local = batch.rows(rank * per_process, (rank + 1) * per_process).to(accelerator.device)
        loss_sum = token_loss_sum(model, local)
        # DDP averages gradients over processes, hence the factor `world`: the result is the
        # gradient of (global loss sum / global target count), exactly as on one process.
        loss = loss_sum * world / max(num_targets, 1)
        global_loss = accelerator.reduce(loss_sum.detach(), reduction="sum").item() / max(num_targets, 1)
        if not math.isfinite(global_loss):
            kept = (f"{output_dir / 'state'} (step {last_good}, resumable with --resume true)" if last_good
                    else "none (no checkpoint was written yet)")
            raise NonFiniteLossError(
                f"{stage}: loss became {global_loss} at step {step}; training stopped; the last good checkpoint is "
                f"{kept}, left intact (lower learning_rate={config.learning_rate} or check the data)"
            )
        accelerator.backward(loss)
        grad_norm = None
        if config.max_grad_norm > 0:
            grad_norm = accelerator.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        record = {"step": step + 1, "loss": global_loss, "lr": scheduler.get_last_lr()[0], "num_processes": world}
        history.append(record)
        if (step + 1) % config.log_every == 0 or step + 1 == config.max_steps:
            scalars = {"losses/lm_loss": global_loss, "charts/learning_rate": record["lr"]}
            if grad_norm is not None:
                scalars["charts/grad_norm"] = float(grad_norm)
            accelerator.log(scalars, step=step + 1)
            bar.set_postfix(loss=f"{global_loss:.4f}")
            if not config.progress and accelerator.is_main_process:  # no bar: the same figures as lines
                print(f"{stage}: step {step + 1}/{config.max_steps} loss={global_loss:.4f} lr={record['lr']:.3g}",
                      flush=True)
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.max_steps:
            save_train_state(output_dir, model, optimizer, scheduler, accelerator, step + 1, history)
            last_good = step + 1
    if accelerator.is_main_process:
        print(f"{stage}: done steps={config.max_steps} first_loss={history[0]['loss']:.4f} "
              f"final_loss={history[-1]['loss']:.4f} processes={world} split={STAGE_SPLITS[stage]}", flush=True)
        write_json_atomic(history, output_dir / "history.json")
        write_json_atomic(data_record(stage, STAGE_SPLITS[stage], list(config.tasks), list(tasks), seen),
                          output_dir / "data.json")
    return history


def finish(accelerator: Accelerator, claim=None) -> None:
    """End a stage on every rank: no rank tears the process group down while rank 0 still saves; then mark
    the claimed run directory (`rundir.claim_run`) finished."""
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if claim is not None:
        claim.finish()


def stage_main(stage: str, run, config_cls, argv: list[str] | None) -> int:
    """`adaptive-pause STAGE`: parse the config, run the stage; a NaN stop is a one-line error and exit 1."""
    try:
        run(parse_cli(config_cls, argv, prog=f"adaptive-pause {stage}"))
    except NonFiniteLossError as error:
        print(f"adaptive-pause {stage}: error: {error}", file=sys.stderr)
        return 1
    return 0


def tracker_config(config) -> dict:
    """Tensorboard hparams accept only scalars and strings (nested configs are flattened to their string)."""
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in to_dict(config).items()}


def multi_process_cpu() -> bool:
    """True when launched as several processes on a machine without CUDA.

    Accelerate only sets up gloo (MULTI_CPU) when asked for the CPU explicitly;
    otherwise each of `accelerate launch --multi_gpu --num_processes 2` processes
    on a GPU-less machine would silently train alone.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return world > 1 and not torch.cuda.is_available()


def make_accelerator(output_dir: Path, seed: int | None = None) -> Accelerator:
    """The accelerator of every stage: gloo on GPU-less multi-process launches, tensorboard under
    output_dir/logs; with `seed`, Accelerate's `set_seed` (python, numpy, torch) as well."""
    from accelerate.utils import ProjectConfiguration, set_seed

    accelerator = Accelerator(
        cpu=multi_process_cpu(),
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )
    if seed is not None:
        set_seed(seed)
    return accelerator


def _token_row_layers(model: torch.nn.Module) -> list:
    """peft's trainable-token layers in `model` (the <pause> and marker rows a finetune trains)."""
    from peft.utils.other import TrainableTokensWrapper

    return [module.token_adapter for module in model.modules() if isinstance(module, TrainableTokensWrapper)]


@contextlib.contextmanager
def _plain_weights(layers: list):
    """Within: each trainable-token wrapper's `.weight` is its base layer's weight rather than a fresh merged copy,
    so that the input and output embeddings of a tied base show one tensor. Only read by FSDP2's preparation."""
    saved = [layer._active_adapter for layer in layers]
    for layer in layers:
        layer._active_adapter = []
    try:
        yield
    finally:
        for layer, active in zip(layers, saved):
            layer._active_adapter = active


def prepare(accelerator: Accelerator, model: torch.nn.Module, optimizer):
    """`accelerator.prepare(model, optimizer)`, and under FSDP2 what Accelerate does not do for peft.

    On a base with tied input and output embeddings (the embedded model, SmolLM2), peft trains the <pause> and
    marker rows through two wrappers sharing one delta and the base weight, and their `.weight` is a new merged
    tensor at every access. Accelerate's FSDP2 preparation detects a tie by `input.weight is output.weight`, so it
    missed this one, sharded the input wrapper alone and failed on the output wrapper's already sharded
    parameters. With the adapters inactive while it looks, `.weight` is the shared base weight: it sees the tie
    and shards both wrappers in one group, as for any tied base. The adapters are active again before training.
    """
    if accelerator.is_fsdp2 and any(getattr(module, COUNTDOWN, None) is not None for module in model.modules()):
        raise ValueError("pause_countdown: not under FSDP: the countdown is added to the token embeddings before "
                         "the model's forward, where FSDP2's sharded embedding cannot be read; launch with DDP")
    layers = _token_row_layers(model) if accelerator.is_fsdp2 else []
    if not layers:
        return accelerator.prepare(model, optimizer)
    if accelerator.state.fsdp_plugin.cpu_ram_efficient_loading:
        raise ValueError(
            "fsdp_cpu_ram_efficient_loading: must be false for a finetune or joint run (the LoRA adapter trains "
            "the <pause> rows of a tied base through peft wrappers, which transformers' re-tying after the meta "
            "load breaks); every process loads the base in these stages, so it saved no memory here")
    with _plain_weights(layers):
        return accelerator.prepare(model, optimizer)


@contextlib.contextmanager
def unsharded(module: torch.nn.Module):
    """Within: every FSDP2 unit of `module` holds its full parameters, for work that uses the model outside its
    forward (PPO's rollouts through the decode loop, saving); elsewhere (DDP, one process) nothing happens.
    Every process must enter it (each gather is a collective)."""
    from torch.distributed.fsdp import FSDPModule

    # Accelerate's FSDP2 always shards the root: elsewhere the model is not walked at all
    units = [unit for unit in module.modules() if isinstance(unit, FSDPModule)] \
        if isinstance(module, FSDPModule) else []
    for unit in units:  # the root first: it initialises the tree's FSDP state
        unit.unshard()
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()
