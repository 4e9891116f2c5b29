"""Shared fixtures: tiny config-built models and quiet, deterministic torch."""

import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.disable_progress_bar()
# Tiny models on a 2-core machine: one intra-op thread avoids oversubscription (up to ~100x faster under load).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One tiny pretrain -> LoRA finetune run (slotted numbering, addition 1-2 and parity 2-4, K = 4) shared by
    every test that needs a trained run: root/pre (model/) and root/ft (model/ + adapter/). Read-only: a
    test that writes into a run copies it first."""
    from helpers import tiny_pipeline

    root = tmp_path_factory.mktemp("tiny_run")
    tiny_pipeline(root, ["addition:1-2", "parity:2-4"], max_pauses=4)
    return root


@pytest.fixture(scope="session")
def interrupt_run(tmp_path_factory):
    """A tiny pretrain -> LoRA finetune run with the interruption task (root/pre, root/ft). Read-only."""
    from helpers import tiny_pipeline

    root = tmp_path_factory.mktemp("interrupt_run")
    tiny_pipeline(root, ["addition:1-1", "interrupt:1-1"], max_pauses=2)
    return root


@pytest.fixture
def tiny_model_config():
    from adaptive_pause.modeling import ModelConfig

    return ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, pause_slots=8)


@pytest.fixture
def tiny_lm(tiny_model_config):
    from adaptive_pause.modeling import load_lm

    torch.manual_seed(0)
    return load_lm(tiny_model_config, seed=0)
