"""LoRA pause-finetuning: k pauses before answer tokens, loss on answers only.

Owns: the `finetune` stage: load a pause-pretrained model (our run dir, an HF
id or a local path; `<pause>` is added if missing), wrap it in a peft LoRA
adapter whose `trainable_token_indices` make the `<pause>` embedding row
trainable, train with k pauses per example drawn from [0, K] (optionally before
every answer token) under Accelerate, and write
`output_dir/{config.yaml, model/, adapter/, logs/, history.json}`. `model/` is
the base the adapter was trained on, so the run directory is self-contained.
With `max_pauses 0` the same command trains the no-pause control.

Why not TRL's SFTTrainer: see `training.py` (per-batch pause draws with
explicit position ids, and an exact loss across process counts).

Must not: contain the training loop (`training.py`) or pause placement (`collators.py`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from peft import LoraConfig, get_peft_model

from .checkpoint import atomic_dir
from .collators import FinetuneCollator
from .config import FinetuneConfig, ModelConfig, parse_cli, save_yaml
from .modeling import load_lm, pause_settings, save_lm
from .pretrain import tracker_config
from .tasks import get_task
from .training import make_accelerator, train


def lora_config(config: FinetuneConfig, pause_id: int) -> LoraConfig:
    targets = config.lora_target_modules
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets[0] if targets == ["all-linear"] else targets,
        trainable_token_indices=[pause_id],
        task_type="CAUSAL_LM",
    )


def run_finetune(config: FinetuneConfig) -> Path:
    out = Path(config.output_dir)
    tasks = [get_task(spec) for spec in config.tasks]
    accelerator = make_accelerator(out, config.seed)
    base, tokenizer = load_lm(ModelConfig(model_name_or_path=config.base_model), seed=config.seed)
    settings = pause_settings(base, tokenizer)
    collate = FinetuneCollator(tokenizer, settings.pause_id, settings.numbering, settings.pause_slots,
                               config.max_pauses, config.k_weights, config.pauses_before_each_answer_token,
                               max_length=base.config.max_position_embeddings)
    pending = out / ".model-pending"
    if accelerator.is_main_process:
        # Saved before training (peft then wraps `base` in place) so that model/ is the exact base the
        # adapter is trained on; it becomes model/ only with the adapter, so a crashed run never looks
        # like a finished one whose adapter is missing.
        save_lm(base, tokenizer, pending)
    model = get_peft_model(base, lora_config(config, settings.pause_id))
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
        if (out / "model").exists():
            shutil.rmtree(out / "model")
        os.replace(pending, out / "model")
        save_yaml(config, out / "config.yaml")
    accelerator.wait_for_everyone()  # no rank tears the group down while rank 0 still saves
    accelerator.end_training()
    return out


def main(argv: list[str] | None = None) -> int:
    run_finetune(parse_cli(FinetuneConfig, argv))
    return 0
