"""Pause-pretraining: a base causal LM learns with `<pause>` inserted at random positions.

Owns: the `pretrain` stage: build the embedded tiny Llama (or load any HF id /
local path), add `<pause>`, train on a mixture of task streams with random
pause insertion (no loss on pause targets) under Accelerate, and write
`output_dir/{config.yaml, model/, logs/, history.json}`. With `pause_rate 0`
the same command trains the no-pause control.

Must not: contain the training loop itself (`training.py`) or pause placement (`collators.py`).
"""

from __future__ import annotations

from pathlib import Path

from .collators import FinetuneCollator, PretrainCollator
from .config import PretrainConfig, parse_cli, save_yaml, to_dict
from .modeling import load_lm, pause_settings, save_lm
from .tasks import get_task
from .training import make_accelerator, train


def tracker_config(config) -> dict:
    """Tensorboard hparams accept only scalars and strings."""
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in to_dict(config).items()}


def pretrain_collator(config: PretrainConfig, tokenizer, settings, max_length: int):
    """Random insertion anywhere (Goyal et al.), or k pauses before the answer (`pause_placement: answer`)."""
    if config.pause_placement == "answer":
        return FinetuneCollator(tokenizer, settings.pause_id, settings.numbering, settings.pause_slots,
                                config.max_pauses, config.k_weights, config.pauses_before_each_answer_token,
                                max_length=max_length)
    return PretrainCollator(tokenizer, settings.pause_id, settings.numbering, settings.pause_slots,
                            config.pause_rate, max_length=max_length)


def run_pretrain(config: PretrainConfig) -> Path:
    out = Path(config.output_dir)
    tasks = [get_task(spec) for spec in config.tasks]
    accelerator = make_accelerator(out, config.seed)
    model, tokenizer = load_lm(config, seed=config.seed)
    settings = pause_settings(model, tokenizer)
    collate = pretrain_collator(config, tokenizer, settings, max_length=model.config.max_position_embeddings)
    accelerator.init_trackers("pretrain", config=tracker_config(config))
    if accelerator.is_main_process:
        n_params = sum(p.numel() for p in model.parameters())
        print(f"pretrain: {n_params / 1e6:.2f}M parameters, numbering={settings.numbering}, "
              f"pause_placement={config.pause_placement}, pause_rate={config.pause_rate}, "
              f"max_pauses={config.max_pauses}, tasks={config.tasks}")
    train(model, accelerator, config, tasks, collate, out, "pretrain")
    accelerator.wait_for_everyone()
    state = accelerator.get_state_dict(model)  # every rank takes part (FSDP gathers the full weights here)
    if accelerator.is_main_process:
        save_lm(accelerator.unwrap_model(model), tokenizer, out / "model", state_dict=state)
        save_yaml(config, out / "config.yaml")
    accelerator.wait_for_everyone()  # no rank tears the group down while rank 0 still saves
    accelerator.end_training()
    return out


def main(argv: list[str] | None = None) -> int:
    run_pretrain(parse_cli(PretrainConfig, argv))
    return 0
