"""`first_token_pauses_only`: the controller decides only before the first answer token."""

import torch

from helpers import PROMPTS, opinionated_model
from policies import FixedPauses


def test_pauses_only_before_the_first_answer_token():
    model = opinionated_model("slotted")
    free = model.generate(PROMPTS, urgency=0.0, policy=FixedPauses(2, every_token=True), max_new_tokens=4,
                          max_pauses=4)
    assert all(per_token[1:] and all(p == 2 for p in per_token) for per_token in free.pauses_per_token)
    first = model.generate(PROMPTS, urgency=0.0, policy=FixedPauses(2, every_token=True), max_new_tokens=4,
                           max_pauses=4, first_token_pauses_only=True)
    for per_token in first.pauses_per_token:
        assert per_token[0] == 2 and all(p == 0 for p in per_token[1:])
    trace = first.result.trace
    # after the first answer token every step is a forced emit, never a decision
    emitted_before = torch.cumsum((trace.actions == 0) & trace.valid, dim=1) - ((trace.actions == 0) & trace.valid).long()
    later = trace.valid & (emitted_before > 0)
    assert later.any() and trace.forced[later].all() and not trace.decisions()[later].any()
    # and it equals FixedPauses(2) before the first token only (same tokens)
    once = model.generate(PROMPTS, urgency=0.0, policy=FixedPauses(2), max_new_tokens=4, max_pauses=4)
    assert first.answer_ids == once.answer_ids


def test_bad_urgency_schedule_is_a_clear_error():
    import pytest

    model = opinionated_model("slotted")
    with pytest.raises(ValueError, match="urgency_schedule: expected a callable"):
        model.generate(PROMPTS, urgency=0.0, policy=FixedPauses(1), urgency_schedule=0.5)
    with pytest.raises(ValueError, match="urgency_schedule: expected a callable"):
        model.generate(PROMPTS, urgency=0.0, policy=FixedPauses(1), urgency_schedule={"3": 1.0})
