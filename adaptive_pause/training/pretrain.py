"""Pause-pretraining: a base causal LM learns with `<pause>` inserted at random positions.

Owns: the `pretrain` stage: build the embedded tiny Llama (or load any HF id /
local path), add `<pause>`, train on a mixture of task streams with random
pause insertion (no loss on pause targets) under Accelerate, and write
`output_dir/{run.json, config.yaml, model/, state/, logs/, history.json}` (periodic checkpoints in
state/, `--resume` continues them exactly). With `pause_rate 0` the same command trains the no-pause control.

Must not: contain the training loop itself (`loop.py`) or pause placement (`collators.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional



from ..config import check, help_field, save_yaml, to_dict
from ..countdown import enable_countdown
from ..modeling import ModelConfig, load_lm, pause_settings, save_lm
from ..rundir import claim_run, identity
from ..tasks import InterruptionTask, get_task
from ..tokens import ensure_interrupt_tokens
from .collators import FinetuneCollator, PretrainCollator, check_k_weights
from .loop import TrainConfig, finish, make_accelerator, stage_main, tracker_config, train

PAUSE_PLACEMENTS = ("random", "answer")


@dataclass
class PretrainConfig(TrainConfig):
    """Pause-pretraining: random <pause> insertion, no loss on pause targets."""

    model: ModelConfig = help_field("the base LM: the embedded tiny Llama's shape, or name_or_path; pause numbering",
                                    default_factory=ModelConfig)

    pause_rate: float = help_field("expected pauses inserted per token of the sequence (Goyal et al.: ~0.1); 0 = control",
                              default=0.1)
    pause_placement: str = help_field(
        "'random': pause_rate pauses per token anywhere, loss on every real token (Goyal et al.); 'answer': "
        "k pauses before the answer, k ~ k_weights over [0, max_pauses], loss on answer tokens only "
        "(the finetuning layout, from scratch; max_pauses 0 = control)",
        default="random",
    )
    max_pauses: int = help_field("pause_placement 'answer': K, the most pauses before the answer", default=16)
    k_weights: Optional[list[float]] = help_field(
        "pause_placement 'answer': relative weight of each k in 0..K (K+1 numbers); empty = uniform", default=None
    )
    pauses_before_each_answer_token: bool = help_field(
        "pause_placement 'answer': also put the k pauses before every answer token", default=False
    )

    def __post_init__(self):
        super().__post_init__()
        check(0 <= self.pause_rate <= 10, "pause_rate", f"must be in [0, 10], got {self.pause_rate}")
        check(self.pause_placement in PAUSE_PLACEMENTS, "pause_placement",
               f"must be one of {PAUSE_PLACEMENTS}, got {self.pause_placement!r}")
        check(self.max_pauses >= 0, "max_pauses", f"K must be >= 0, got {self.max_pauses}")
        if self.pause_placement == "answer" and self.model.resolved_numbering() == "slotted":
            check(self.max_pauses <= self.model.pause_slots, "max_pauses",
                   f"must be <= pause_slots={self.model.pause_slots} with slotted numbering, got {self.max_pauses}")
        check_k_weights(self.k_weights, self.max_pauses)




def pretrain_collator(config: PretrainConfig, tokenizer, settings, max_length: int):
    """Random insertion anywhere (Goyal et al.), or k pauses before the answer (`pause_placement: answer`)."""
    if config.pause_placement == "answer":
        return FinetuneCollator(tokenizer, settings.pause_id, settings.numbering, settings.pause_slots,
                                config.max_pauses, config.k_weights, config.pauses_before_each_answer_token,
                                max_length=max_length)
    return PretrainCollator(tokenizer, settings.pause_id, settings.numbering, settings.pause_slots,
                            config.pause_rate, max_length=max_length)


def run_pretrain(config: PretrainConfig) -> Path:
    tasks = [get_task(spec) for spec in config.tasks]
    claim = claim_run(config.output_dir, "pretrain", identity(to_dict(config)), config.resume, config.overwrite)
    try:
        return _run_pretrain(config, claim, tasks)
    finally:
        claim.release()  # also when the stage raised: the lock never outlives the run


def _run_pretrain(config, claim, tasks) -> Path:
    out = claim.work
    accelerator = make_accelerator(out, config.seed)
    model, tokenizer = load_lm(config.model, seed=config.seed)
    if any(isinstance(t, InterruptionTask) for t in tasks):  # an HF base lacks the markers; added like <pause>
        ensure_interrupt_tokens(tokenizer, model)
    settings = pause_settings(model, tokenizer)
    if config.model.pause_countdown:  # a model setting, saved with the model (countdown.py)
        enable_countdown(model, settings.pause_slots)
    collate = pretrain_collator(config, tokenizer, settings, max_length=model.config.max_position_embeddings)
    accelerator.init_trackers("pretrain", config=tracker_config(config))
    if accelerator.is_main_process:
        n_params = sum(p.numel() for p in model.parameters())
        print(f"pretrain: {n_params / 1e6:.2f}M parameters, numbering={settings.numbering}, "
              f"pause_placement={config.pause_placement}, pause_rate={config.pause_rate}, "
              f"max_pauses={config.max_pauses}, pause_countdown={config.model.pause_countdown}, tasks={config.tasks}")
    train(model, accelerator, config, tasks, collate, out, "pretrain")
    accelerator.wait_for_everyone()
    state = accelerator.get_state_dict(model)  # every rank takes part (FSDP gathers the full weights here)
    if accelerator.is_main_process:
        save_lm(accelerator.unwrap_model(model), tokenizer, out / "model", state_dict=state)
        save_yaml(config, out / "config.yaml")
    finish(accelerator, claim)
    return claim.path


def main(argv: list[str] | None = None) -> int:
    return stage_main("pretrain", run_pretrain, PretrainConfig, argv)
