"""LoRA pause-finetuning: k pauses before answer tokens, loss on answers only.

Owns: the `finetune` stage: load a pause-pretrained model (our run dir, an HF id or a local path; `<pause>`
added if missing), wrap it in a peft LoRA adapter whose `trainable_token_indices` make the `<pause>` row
trainable, train with k pauses per example drawn from [0, K] (optionally before every answer token) under
Accelerate, and write `output_dir/{run.json, config.yaml, model/, adapter/, state/, logs/, history.json}`
(periodic adapter checkpoints in state/; `--resume` continues them exactly). `model/` is the base the adapter
was trained on, so the run directory is self-contained. `max_pauses 0` trains the no-pause control.
Why not TRL's SFTTrainer: see `loop.py` (per-batch pause draws with explicit position ids, an exact loss
across process counts).

Must not: contain the training loop (`loop.py`) or pause placement (`collators.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from peft import LoraConfig, get_peft_model

from ..checkpoint import atomic_dir, replace_dir
from ..config import check, help_field, save_yaml, to_dict
from ..countdown import MODULE_NAME, countdown_module, enable_countdown
from ..modeling import (ADAPTER_DIR, ModelConfig, load_adapter, load_lm, pause_settings, peft_quietly,
                        save_lm, write_parts)
from ..rundir import claim_run, identity
from ..tasks import InterruptionTask, get_task
from ..tokens import ensure_interrupt_tokens
from .collators import FinetuneCollator, check_k_weights
from .loop import TrainConfig, finish, make_accelerator, stage_main, tracker_config, train

@dataclass
class FinetuneConfig(TrainConfig):
    """LoRA pause-finetuning: k pauses before the answer, loss on answer tokens only."""

    base_model: str = help_field("a pretrain run directory, an HF model id or a local model directory",
                            default="runs/default/pretrain")
    prompt_format: str = help_field(
        "a plain HF base: 'raw', 'chat' (its chat template) or 'auto' (chat when it has a template); a run of ours "
        "keeps the format it recorded", default="auto")
    system_prompt: Optional[str] = help_field("chat format: a system message before each prompt", default=None)
    max_pauses: int = help_field("K: pauses per example are drawn from [0, K]; 0 trains a no-pause control", default=8)
    k_weights: Optional[list[float]] = help_field(
        "relative weight of each k in 0..K (K+1 numbers); empty = uniform", default=None
    )
    pauses_before_each_answer_token: bool = help_field("also put the k pauses before every answer token", default=False)
    lora_r: int = help_field("LoRA rank", default=16)
    lora_alpha: float = help_field("LoRA alpha", default=32.0)
    lora_dropout: float = help_field("LoRA dropout", default=0.0)
    lora_target_modules: list[str] = help_field("modules LoRA adapts ('all-linear' for every linear layer)",
                                           default_factory=lambda: ["all-linear"])
    learning_rate: float = help_field("peak AdamW learning rate", default=2e-3)
    continue_adapter: bool = help_field(
        "base_model is a finetune run: train its adapter further (on this run's tasks and steps) instead of a new "
        "one; lora_r and lora_alpha must be the adapter's", default=False)
    pause_countdown: bool = help_field(
        "give a base without one the pause countdown input (adaptive_pause/countdown.py; a base pretrained with it "
        "keeps it either way); the table trains with the adapter (peft modules_to_save)", default=False)

    def __post_init__(self):
        super().__post_init__()
        check(self.max_pauses >= 0, "max_pauses", f"K must be >= 0, got {self.max_pauses}")
        check_k_weights(self.k_weights, self.max_pauses)
        check(self.lora_r >= 1, "lora_r", f"must be >= 1, got {self.lora_r}")
        check(0 <= self.lora_dropout < 1, "lora_dropout", f"must be in [0, 1), got {self.lora_dropout}")
        check(not (self.continue_adapter and self.pause_countdown), "pause_countdown",
              "not with continue_adapter: the continued run keeps its base's countdown (set it on the first run)")




def lora_config(config: FinetuneConfig, pause_id: int, countdown: bool = False,
                marker_ids: tuple[int, ...] = ()) -> LoraConfig:
    targets = config.lora_target_modules
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets[0] if targets == ["all-linear"] else targets,
        trainable_token_indices=[pause_id, *marker_ids],
        modules_to_save=[MODULE_NAME] if countdown else None,  # the countdown table trains and saves with LoRA
        task_type="CAUSAL_LM",
    )


def check_continuable(config: FinetuneConfig) -> None:
    """Before the run is claimed: `base_model` has an adapter of this config's rank and alpha."""
    adapter_dir = Path(config.base_model) / ADAPTER_DIR
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ValueError(f"continue_adapter: {config.base_model} has no {ADAPTER_DIR}/ (not a finished finetune run)")
    saved = LoraConfig.from_pretrained(str(adapter_dir))  # the JSON only; the weights are loaded later
    for field, mine, theirs in (("lora_r", config.lora_r, saved.r), ("lora_alpha", config.lora_alpha,
                                                                      saved.lora_alpha)):
        check(float(mine) == float(theirs), field, f"{mine}, but the adapter being continued has {theirs}")


def continued_adapter(base, config: FinetuneConfig, token_ids: tuple[int, ...]):
    """The adapter of the finetune run `config.base_model` over `base` (its model/), trainable; refused where it
    does not train a token row (<pause>, an interruption marker) this run's mix needs."""
    adapter_dir = Path(config.base_model) / ADAPTER_DIR
    model = load_adapter(base, adapter_dir, trainable=True)
    saved = model.peft_config["default"]
    trained = saved.trainable_token_indices or []
    trained = trained.get("embed_tokens", []) if isinstance(trained, dict) else trained
    missing = sorted(set(token_ids) - set(trained))
    check(not missing, "continue_adapter", f"the adapter in {adapter_dir} does not train token ids {missing} "
          "(an interruption task added their markers after it was trained): finetune a new adapter instead")
    return model


def run_finetune(config: FinetuneConfig) -> Path:
    tasks = [get_task(spec) for spec in config.tasks]
    base = Path(config.base_model).expanduser()
    if base.exists() and base.resolve() == Path(config.output_dir).expanduser().resolve():
        raise ValueError(f"output_dir: {config.output_dir} is the base_model; a finetune run writes a new directory")
    if config.continue_adapter:
        check_continuable(config)
    elif (base / ADAPTER_DIR / "adapter_config.json").is_file():
        raise ValueError(f"base_model: {config.base_model} is a finetune run, and a new adapter over its model/ would "
                         "drop its trained one: pass --continue_adapter true to train that adapter further, or name "
                         "the run it was finetuned from")
    claim = claim_run(config.output_dir, "finetune", identity(to_dict(config)), config.resume, config.overwrite)
    try:
        return _run_finetune(config, claim, tasks)
    finally:
        claim.release()  # also when the stage raised: the lock never outlives the run


def _run_finetune(config, claim, tasks) -> Path:
    out = claim.work
    accelerator = make_accelerator(out, config.seed)
    base, tokenizer = load_lm(ModelConfig(name_or_path=config.base_model, prompt_format=config.prompt_format,
                                          system_prompt=config.system_prompt), seed=config.seed)
    settings = pause_settings(base, tokenizer)
    if config.pause_countdown:
        enable_countdown(base, settings.pause_slots)
    # Interruptions in the mixture: their markers are added like <pause> (a no-op for the embedded tokenizer)
    # and their embedding rows trained with the adapter.
    markers = ensure_interrupt_tokens(tokenizer, base) if any(isinstance(t, InterruptionTask) for t in tasks) else ()
    collate = FinetuneCollator(tokenizer, settings.pause_id, settings.numbering, settings.pause_slots,
                               config.max_pauses, config.k_weights, config.pauses_before_each_answer_token,
                               max_length=base.config.max_position_embeddings)
    pending = out / ".model-pending"
    if accelerator.is_main_process:
        # Saved before training (peft then wraps `base` in place) so that model/ is the exact base the
        # adapter is trained on; it becomes model/ only with the adapter, so a crashed run never looks
        # like a finished one whose adapter is missing.
        save_lm(base, tokenizer, pending)
    if config.continue_adapter:
        model = continued_adapter(base, config, (settings.pause_id, *markers))
    else:
        with peft_quietly():
            model = get_peft_model(base, lora_config(config, settings.pause_id, countdown_module(base) is not None,
                                                     markers))
    accelerator.init_trackers("finetune", config=tracker_config(config))
    if accelerator.is_main_process:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"finetune: {trainable} trainable parameters, K={config.max_pauses}, "
              f"numbering={settings.numbering}, tasks={config.tasks}")
    train(model, accelerator, config, tasks, collate, out, "finetune")
    accelerator.wait_for_everyone()
    state = accelerator.get_state_dict(model)  # every rank takes part (FSDP gathers the full weights here)
    if accelerator.is_main_process:
        with atomic_dir(out / "adapter") as tmp:
            # model/ holds the (resized) base embeddings; the adapter needs only its own weights.
            accelerator.unwrap_model(model).save_pretrained(tmp, state_dict=state, save_embedding_layers=False)
        replace_dir(pending, out / "model")
        write_parts(out, adapter=True)
        save_yaml(config, out / "config.yaml")
    finish(accelerator, claim)
    return claim.path


def main(argv: list[str] | None = None) -> int:
    return stage_main("finetune", run_finetune, FinetuneConfig, argv)
