"""End-to-end interruption evaluation: rows are interrupted at their arrival point, figures per variant."""

from helpers import opinionated_model

from adaptive_pause.eval.interruptions import evaluate_interruptions, summarise
from adaptive_pause.tasks import get_task
from adaptive_pause.tasks.interruptions import VARIANTS
from adaptive_pause.tokens import ensure_interrupt_tokens
from policies import FixedPauses


def test_evaluate_interruptions_interrupts_at_the_arrival_point():
    model = opinionated_model("slotted")
    ensure_interrupt_tokens(model.tokenizer, model.lm)
    task = get_task("interrupt:1-1")
    examples = task.examples(24, 0, "test")
    records = evaluate_interruptions(model, task, examples, policy=FixedPauses(2), max_new_tokens=4, max_pauses=2,
                                     first_token_pauses_only=True)
    assert len(records) == 24
    for e, r in zip(examples, records):
        assert r["variant"] == e.variant
        if not e.emitted:  # arrives after the first step, inside the two pauses: the second pause comes after it
            assert r["reached"] and r["pauses_after"] == 1
        if r["reached"] and r["variant"] != "cancel":
            assert r["pauses_after"] in (0, 1, 2)
    summary = summarise(records)
    assert set(summary) <= set(VARIANTS)
    for variant, row in summary.items():
        assert row["n"] + row["not_reached"] == sum(e.variant == variant for e in examples)
        assert 0.0 <= row["accuracy"] <= 1.0
