import torch

from adaptive_pause.training.collators import IGNORE_INDEX, FinetuneCollator, PretrainCollator
from adaptive_pause.tasks import get_task
from adaptive_pause.tokens import build_char_tokenizer, pause_token_id
from adaptive_pause.training.loop import examples_for_step


def _setup():
    tok = build_char_tokenizer()
    return tok, pause_token_id(tok), get_task("addition:1-4").examples(64, 0)


def test_pretrain_never_scores_a_pause_target():
    tok, pause, examples = _setup()
    batch = PretrainCollator(tok, pause, "slotted", 8, pause_rate=0.5)(examples, torch.Generator().manual_seed(0))
    real = batch.attention_mask.bool()
    is_pause = (batch.input_ids == pause) & real
    assert is_pause.sum() > 50  # pauses were inserted
    assert (batch.labels[is_pause] == IGNORE_INDEX).all()  # no position is trained to predict <pause>
    assert (batch.labels[real & ~is_pause] == batch.input_ids[real & ~is_pause]).all()  # every real token is
    assert (batch.labels[~real] == IGNORE_INDEX).all()
    # stripping the pauses gives back exactly prompt + answer + EOS
    for row, e in enumerate(examples):
        kept = batch.input_ids[row][real[row] & ~is_pause[row]].tolist()
        assert tok.decode(kept[:-1]) == e.prompt + e.answer and kept[-1] == tok.eos_token_id


def test_pretrain_pause_rate_zero_is_a_plain_batch():
    tok, pause, examples = _setup()
    batch = PretrainCollator(tok, pause, "slotted", 8, pause_rate=0.0)(examples, torch.Generator().manual_seed(0))
    assert not (batch.input_ids == pause).any()


def test_finetune_k_pauses_before_answer_and_loss_on_answer_only():
    tok, pause, examples = _setup()
    collate = FinetuneCollator(tok, pause, "slotted", 8, max_pauses=6)
    batch = collate(examples, torch.Generator().manual_seed(1))
    ks = set()
    for row, e in enumerate(examples):
        ids = batch.input_ids[row][batch.attention_mask[row].bool()].tolist()
        n_prompt = len(e.prompt)
        k = ids.count(pause)
        ks.add(k)
        assert ids[n_prompt : n_prompt + k] == [pause] * k  # all pauses sit between prompt and answer
        assert tok.decode(ids[n_prompt + k : -1]) == e.answer
        labels = batch.labels[row][: len(ids)].tolist()
        scored = [i for i, lab in enumerate(labels) if lab != IGNORE_INDEX]
        assert scored == list(range(n_prompt + k, len(ids)))  # answer tokens and EOS only
    assert ks == set(range(7))  # k drawn over [0, K]


def test_finetune_pauses_before_each_answer_token_and_fixed_k():
    tok, pause, examples = _setup()
    collate = FinetuneCollator(tok, pause, "slotted", 8, max_pauses=3, pauses_before_each_answer_token=True)
    batch = collate(examples[:4], None, k=2)
    for row, e in enumerate(examples[:4]):
        ids = batch.input_ids[row][batch.attention_mask[row].bool()].tolist()
        answer_part = ids[len(e.prompt):]
        assert answer_part == sum(([pause, pause, t] for t in answer_part[2::3]), [])
        assert len(answer_part) == 3 * (len(e.answer) + 1)


def test_k_weights_shape_the_distribution():
    tok, pause, examples = _setup()
    collate = FinetuneCollator(tok, pause, "slotted", 8, max_pauses=2, k_weights=[0, 0, 1])
    batch = collate(examples, torch.Generator().manual_seed(0))
    assert ((batch.input_ids == pause).sum(-1) == 2).all()


def test_control_and_pause_runs_see_the_same_examples():
    tasks = [get_task("addition"), get_task("parity")]
    assert examples_for_step(tasks, 0, 7, 32) == examples_for_step(tasks, 0, 7, 32)
    assert examples_for_step(tasks, 0, 7, 32) != examples_for_step(tasks, 0, 8, 32)
