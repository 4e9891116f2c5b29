"""The interruption task: expected answers, the phrase bank split by phrasing, training sequences laid out as the
decode loop lays out an interrupted answer, finetuning and eval-pauses per kind."""

import pytest
import torch
from helpers import tiny_model

from adaptive_pause.decoding import DecodeConfig, DecodeSession
from adaptive_pause.modeling import load_lm
from adaptive_pause.positions import next_position_ids
from adaptive_pause.tasks import InterruptedExample, get_task
from adaptive_pause.tasks.interruptions import TEMPLATES, VARIANTS, expected_answer, split_templates
from adaptive_pause.tokens import ensure_interrupt_tokens, interrupt_token_ids
from adaptive_pause.training.collators import IGNORE_INDEX, FinetuneCollator


def test_expected_answers():
    assert expected_answer("reverse", 38, 48, 2) == "680"
    assert expected_answer("plus_one", 99, 99, 2) == "199"
    assert expected_answer("plus_one", 4, 5, 1) == "10"
    assert expected_answer("irrelevant", 1, 2, 1) == expected_answer("hurry", 1, 2, 1) == "03"
    assert expected_answer("cancel", 1, 2, 1) == ""
    task = get_task("interrupt:1-2")
    for e in task.examples(300, 0, "train"):
        assert isinstance(e, InterruptedExample) and e.kind == VARIANTS[e.variant]
        assert e.original_answer.startswith(e.emitted) and len(e.emitted) < len(e.original_answer)
        if e.variant == "replace":
            a, b = map(int, e.new_prompt.split("+"))
            assert e.new_prompt in e.interruption and e.answer == f"{a + b:0{e.difficulty + 1}d}"
        assert e.interruption.isascii() and not any(c.isdigit() for c in e.interruption.replace(e.new_prompt, ""))
    assert {e.variant for e in task.examples(300, 0, "train")} == set(VARIANTS)
    with pytest.raises(ValueError, match="variants"):
        type(task)(1, 2, variants=("shout",))


def test_a_spec_can_draw_a_subset_of_the_variants():
    """interrupt@A+B:LO-HI draws only A and B (listed beside interrupt:LO-HI, it weights them up); the rest of the
    spec reads as interrupt's, and an unknown or empty variant list is refused naming the spec."""
    task = get_task("interrupt@reverse+plus_one:2-2")
    drawn = task.examples(200, 0, "train")
    assert {e.variant for e in drawn} == {"reverse", "plus_one"} and {e.difficulty for e in drawn} == {2}
    assert get_task("interrupt@cancel").variants == ("cancel",)
    splits = split_templates(0)
    assert all(e.template in splits["test"][e.variant] for e in task.examples(50, 1, "test"))
    for bad in ("interrupt@:1-2", "interrupt@reverse+odd:1-2", "interrupt@reverse+:1-2"):
        with pytest.raises(ValueError, match=r"interrupt@VARIANT\[\+VARIANT...\]") as error:
            get_task(bad)
        assert repr(bad) in str(error.value)


def test_phrasings_are_split_by_template():
    splits = split_templates(0)
    for variant, group in TEMPLATES.items():
        parts = [set(splits[s][variant]) for s in ("train", "validation", "test")]
        assert all(parts) and set().union(*parts) == set(group)
        assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    task = get_task("interrupt:1-2")
    for split, held in (("dev", "validation"), ("test", "test")):
        for e in task.examples(200, 3, split):
            assert e.template in splits[held][e.variant] and e.template not in splits["train"][e.variant]


def test_training_sequence_is_the_decode_loops_sequence():
    """An interruption arriving during the pauses: the collator's tokens and positions up to the answer are
    the ones the decode loop appends (pause, interrupt, pauses) and numbers (slotted)."""
    model, tokenizer = load_lm(tiny_model(position_numbering="slotted", max_position_embeddings=1024), seed=0)
    ensure_interrupt_tokens(tokenizer, model)
    pause = tokenizer.convert_tokens_to_ids("<pause>")
    example = next(e for e in get_task("interrupt:1-1").examples(50, 0) if not e.emitted and e.variant != "cancel")
    collate = FinetuneCollator(tokenizer, pause, "slotted", 8, max_pauses=2)
    batch = collate([example], generator=None, k=2)  # k=2: the interruption after 1 pause, then 2 pauses
    ids, labels, pos = batch.input_ids[0], batch.labels[0], batch.position_ids[0]
    opening, closing = interrupt_token_ids(tokenizer)
    first_target = int((labels != IGNORE_INDEX).nonzero()[0])
    assert int((ids == opening).nonzero()) < first_target and bool((labels[ids == closing] == IGNORE_INDEX).all())
    assert tokenizer.decode(ids[labels != IGNORE_INDEX]) == example.answer + tokenizer.eos_token

    session = DecodeSession(model, tokenizer, [tokenizer(example.prompt)["input_ids"]], 0.0,
                            DecodeConfig(max_new_tokens=4, max_pauses=2), pause, "slotted", 8)
    session.step(torch.ones(1, dtype=torch.long))
    session.interrupt([0], [example.interruption])
    session.step(torch.ones(1, dtype=torch.long))
    session.step(torch.ones(1, dtype=torch.long))
    assert session._ids[0, :session.length].tolist() == ids[:first_target].tolist()
    assert int(next_position_ids(session.positions, torch.zeros(1, dtype=torch.bool), "slotted", 8)) == \
        int(pos[first_target])


def test_drawn_layouts_keep_the_interruption_inside_the_pause_run():
    _, tokenizer = load_lm(tiny_model(), seed=0)
    ensure_interrupt_tokens(tokenizer)
    pause = tokenizer.convert_tokens_to_ids("<pause>")
    opening, _ = interrupt_token_ids(tokenizer)
    examples = [e for e in get_task("interrupt:1-2").examples(64, 1, "train") if not e.emitted]
    collate = FinetuneCollator(tokenizer, pause, "slotted", 8, max_pauses=4)
    batch = collate(examples, torch.Generator().manual_seed(0))
    arrivals = []
    for row, e in enumerate(examples):
        ids = batch.input_ids[row].tolist()
        at = ids.index(opening)
        prompt_len = len(tokenizer(e.prompt)["input_ids"])
        assert set(ids[prompt_len:at]) <= {pause} and at - prompt_len <= 4
        arrivals.append(at - prompt_len)
    assert len(set(arrivals)) > 2  # arrivals vary: start, middle and end of the pause run


def test_finetune_with_interruptions_and_eval_per_kind(interrupt_run):
    from adaptive_pause.eval.eval_pauses import evaluate_run, format_table, load_run

    loaded = load_run(interrupt_run / "ft")
    results = evaluate_run(loaded, ["interrupt:1-1"], [0, 2], num_examples=40, seed=5, batch_size=40)
    entry = results["interrupt:1-1"]
    assert set(entry["n_by_kind"]) <= set(VARIANTS) and sum(entry["n_by_kind"].values()) == 40
    assert set(entry["by_k"][2]["by_kind"]) == set(entry["n_by_kind"])
    assert "kind=reverse" in format_table(results)
    # The adapter trains the marker rows: they moved away from the pretrained ones.
    opening, closing = interrupt_token_ids(loaded.tokenizer)
    pre = load_run(interrupt_run / "pre").model.get_input_embeddings().weight
    ft = loaded.model.get_input_embeddings().weight
    assert not torch.allclose(pre[opening], ft[opening]) and torch.allclose(pre[5], ft[5])
