"""The language model side: building or loading the base LM with `<pause>`, and its pause settings.

Owns: the embedded tiny Llama (built from a config, no download), loading any
HF id or local directory, making sure `<pause>` exists, and the model-level
pause settings (position numbering, pause slots) that are saved inside the
model's own `config.json` so every later stage honours them identically.

Must not: contain a decode loop (that is `decoding.py`) or training code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from .checkpoint import atomic_dir
from .config import ModelConfig
from .positions import check_numbering
from .tokens import build_char_tokenizer, ensure_pause_token, pause_token_id

# Keys added to the HF model config (saved in config.json by save_pretrained).
NUMBERING_KEY = "pause_position_numbering"
SLOTS_KEY = "pause_slots"


@dataclass(frozen=True)
class PauseSettings:
    pause_id: int
    numbering: str
    pause_slots: int


def build_tiny_lm(config: ModelConfig, vocab_size: int, pad_id: int, bos_id: int, eos_id: int) -> LlamaForCausalLM:
    """The embedded default: a small Llama built from a config (0.54M parameters at the defaults)."""
    lm_config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        intermediate_size=config.intermediate_size,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=pad_id,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
    )
    return LlamaForCausalLM(lm_config)


def set_pause_settings(model, numbering: str, pause_slots: int) -> None:
    check_numbering(numbering, pause_slots)
    setattr(model.config, NUMBERING_KEY, numbering)
    setattr(model.config, SLOTS_KEY, pause_slots)


def pause_settings(model, tokenizer) -> PauseSettings:
    """The settings a model was trained with; a clear error when they are missing."""
    base_config = getattr(model, "get_base_model", lambda: model)().config
    numbering = getattr(base_config, NUMBERING_KEY, None)
    slots = getattr(base_config, SLOTS_KEY, None)
    if numbering is None or slots is None:
        raise ValueError(
            f"model config has no {NUMBERING_KEY!r}/{SLOTS_KEY!r}; load the model with "
            "adaptive_pause.modeling.load_lm (or call set_pause_settings) so pauses are numbered consistently"
        )
    return PauseSettings(pause_token_id(tokenizer), numbering, int(slots))


def load_lm(config: ModelConfig, seed: int = 0):
    """(model, tokenizer) with `<pause>` present and pause settings recorded.

    `config.model_name_or_path` may be empty (the tiny model, built from the
    config), an HF id, a local HF model directory, or a run directory of ours
    (which holds `model/`).
    """
    path = config.model_name_or_path
    if not path:
        torch.manual_seed(seed)
        tokenizer = build_char_tokenizer()
        model = build_tiny_lm(config, len(tokenizer), tokenizer.pad_token_id, tokenizer.bos_token_id,
                              tokenizer.eos_token_id)
        set_pause_settings(model, config.resolved_numbering(), config.pause_slots)
        return model, tokenizer
    model, tokenizer = load_saved_lm(path)
    if getattr(model.config, NUMBERING_KEY, None) is None:
        # A plain HF model: its positions were learned contiguously.
        set_pause_settings(model, config.resolved_numbering(), config.pause_slots)
    return model, tokenizer


def load_saved_lm(path: str | os.PathLike):
    """Load a model + tokenizer from a run dir (`model/` inside), a local model dir, or an HF id."""
    path = str(path)
    if (Path(path) / "model").is_dir():
        path = str(Path(path) / "model")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    ensure_pause_token(tokenizer, model)
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    rows = model.get_input_embeddings().weight.shape[0]
    if rows < len(tokenizer):
        raise ValueError(f"{path}: tokenizer has {len(tokenizer)} tokens but the model only {rows} embedding rows")
    return model, tokenizer


def save_lm(model, tokenizer, path: str | os.PathLike) -> None:
    """save_pretrained (safetensors) of model and tokenizer, written atomically."""
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
