"""Knobs added for the pause regime (issue 3): each one validated, and each one doing what it says."""

import pytest
import torch

from adaptive_pause.training.collators import IGNORE_INDEX, FinetuneCollator, PretrainCollator
from adaptive_pause.training.pretrain import PretrainConfig
from adaptive_pause.modeling import load_lm, pause_settings
from adaptive_pause.training.pretrain import pretrain_collator
from adaptive_pause.tasks import get_task
from helpers import tiny_model



def _collate(**fields):
    config = PretrainConfig(tasks=["parity:2-6"], model=tiny_model(), **fields)
    model, tokenizer = load_lm(config.model, seed=0)
    settings = pause_settings(model, tokenizer)
    return pretrain_collator(config, tokenizer, settings, max_length=4096), settings


def test_pretrain_placement_random_is_the_default_and_unchanged():
    collate, _ = _collate()
    assert isinstance(collate, PretrainCollator) and collate.pause_rate == 0.1


def test_pretrain_placement_answer_puts_k_pauses_before_the_answer_with_answer_loss_only():
    collate, settings = _collate(pause_placement="answer", max_pauses=4, k_weights=[0, 0, 1, 0, 1])
    assert isinstance(collate, FinetuneCollator)
    examples = get_task("parity:2-6").examples(64, 0)
    batch = collate(examples, torch.Generator().manual_seed(0))
    ks = set()
    for row, example in enumerate(examples):
        ids = batch.input_ids[row][batch.attention_mask[row].bool()].tolist()
        k = ids.count(settings.pause_id)
        ks.add(k)
        assert ids[len(example.prompt): len(example.prompt) + k] == [settings.pause_id] * k
        scored = [i for i, label in enumerate(batch.labels[row][: len(ids)].tolist()) if label != IGNORE_INDEX]
        assert scored == list(range(len(example.prompt) + k, len(ids)))  # answer and EOS only
    assert ks == {2, 4}  # k follows k_weights


def test_pretrain_placement_answer_with_zero_pauses_is_the_control():
    collate, settings = _collate(pause_placement="answer", max_pauses=0)
    batch = collate(get_task("parity:2-6").examples(32, 0), torch.Generator().manual_seed(0))
    assert not (batch.input_ids == settings.pause_id).any()


@pytest.mark.parametrize("fields, message", [
    (dict(pause_placement="everywhere"), "pause_placement: must be one of"),
    (dict(pause_placement="answer", max_pauses=9), "max_pauses: must be <= pause_slots=8"),
    (dict(pause_placement="answer", max_pauses=2, k_weights=[1, 1]), r"k_weights: needs max_pauses \+ 1 = 3"),
    (dict(max_pauses=-1), "max_pauses: K must be >= 0"),
])
def test_pretrain_placement_bad_values_name_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        PretrainConfig(model=tiny_model(), **fields)
