"""Continuous batching: rows that join a running session and leave it decode exactly as they would alone."""

import pytest
import torch
from helpers import PROMPTS, decisive_head, opinionated_model

from adaptive_pause.decoding import DecodeConfig, DecodeSession, run_policy
from adaptive_pause.decoding.batching import admit, keep_rows, take_records
from policies import ConfidenceThreshold

EXTRA = ["5+5=", "1+2+3=", "77+1=", "4="]


def _session(model, prompts, urgency, config):
    s = model.settings
    return DecodeSession(model.lm, model.tokenizer, model.encode(prompts), urgency, config, s.pause_id, s.numbering,
                         s.pause_slots)


def _staggered(model, policy, config, arrivals, urgency, together=False, when_empty=()):
    """Run `arrivals` ({step: prompts}) through one session with run_policy: rows join at those steps and
    finished rows leave at once. `together`: finished rows leave in the same call that admits newcomers
    (`admit(..., keep=...)`); `when_empty`: prompts that join at the first step where every row has finished.
    Returns {prompt: (answer ids, pauses per token)} and the session's width after each step."""
    first = arrivals[0]
    session = _session(model, first, urgency, config)
    rows = list(first)  # prompt of each row
    answers = {p: ([], []) for prompts in [*arrivals.values(), when_empty] for p in prompts}
    eos = set(session.eos_ids.tolist())
    widths = []
    waiting_for_empty = [list(when_empty)]

    def on_step(s):
        step = on_step.count = on_step.count + 1
        for record in take_records(s):
            for i, (valid, token, pause, before) in enumerate(zip(record.valid.tolist(), record.tokens.tolist(),
                                                                   record.is_pause.tolist(),
                                                                   record.pauses_before_token.tolist())):
                if valid and not pause:
                    answers[rows[i]][0].append(token)
                    answers[rows[i]][1].append(before)
        active = s.active.cpu()
        joining = arrivals.get(step, [])
        if waiting_for_empty[0] and not bool(active.any()):
            joining, waiting_for_empty[0] = joining + waiting_for_empty[0], []
        if joining and together:
            admit(s, _session(model, joining, urgency, config), keep=active)
            rows[:] = [r for r, a in zip(rows, active.tolist()) if a] + joining
        else:
            if joining:
                admit(s, _session(model, joining, urgency, config))
                rows.extend(joining)
            active = s.active.cpu()
            if not bool(active.all()) and bool(active.any()):
                keep_rows(s, active)
                rows[:] = [r for r, a in zip(rows, active.tolist()) if a]
        widths.append(s.length)

    on_step.count = 0
    run_policy(session, policy, on_step=on_step)
    out = {}
    for prompt, (ids, before) in answers.items():
        if ids and ids[-1] in eos:
            ids = ids[:-1]
        out[prompt] = (ids, before)
    return out, widths


@pytest.mark.parametrize("numbering", ["contiguous", "slotted"])
def test_rows_joining_and_leaving_decode_as_alone(numbering):
    model = opinionated_model(numbering)
    policy = ConfidenceThreshold(0.9)
    config = DecodeConfig(max_new_tokens=8, max_pauses=4, record_features=False)
    arrivals = {0: PROMPTS[:2], 1: PROMPTS[2:], 5: EXTRA[:3], 9: EXTRA[3:]}
    served, widths = _staggered(model, policy, config, arrivals, 0.2)
    for prompt in PROMPTS + EXTRA:
        alone = model.generate([prompt], urgency=0.2, policy=policy, decode_config=config)
        assert served[prompt] == (alone.answer_ids[0], alone.pauses_per_token[0]), prompt
    assert sum(len(p) for p, _ in served.values()) > 0 and any(sum(b) for _, b in served.values())
    # rows left (keep_rows ran), so the session did not keep every column it ever had
    assert min(widths[len(widths) // 2:]) < max(widths)


def test_rows_leaving_as_others_join_in_one_rebuild_decode_as_alone():
    """admit(..., keep=...) drops finished rows in the same cache rebuild, also when every row has finished."""
    model = opinionated_model("slotted")
    policy = ConfidenceThreshold(0.9)
    config = DecodeConfig(max_new_tokens=8, max_pauses=4, record_features=False)
    arrivals = {0: PROMPTS[:2], 1: PROMPTS[2:], 5: EXTRA[:2], 9: EXTRA[2:3]}
    served, widths = _staggered(model, policy, config, arrivals, 0.2, together=True, when_empty=EXTRA[3:])
    for prompt in PROMPTS + EXTRA:
        alone = model.generate([prompt], urgency=0.2, policy=policy, decode_config=config)
        assert served[prompt] == (alone.answer_ids[0], alone.pauses_per_token[0]), prompt
    assert min(widths[len(widths) // 2:]) < max(widths)


def test_admit_with_prompt_summary_and_a_head():
    model = opinionated_model("slotted", hidden=32)
    head = decisive_head(32, prompt_summary=True)
    config = DecodeConfig(max_new_tokens=6, max_pauses=4, record_features=False, prompt_summary=True)
    served, _ = _staggered(model, head, config, {0: PROMPTS[:1], 2: PROMPTS[1:]}, 0.3)
    for prompt in PROMPTS:
        alone = model.generate([prompt], urgency=0.3, policy=head, decode_config=config)
        assert served[prompt] == (alone.answer_ids[0], alone.pauses_per_token[0]), prompt


def test_admit_and_keep_rows_refuse_mismatches():
    model = opinionated_model("contiguous")
    config = DecodeConfig(max_new_tokens=4, record_features=False)
    running = _session(model, PROMPTS[:2], 0.5, config)
    with pytest.raises(ValueError, match="DecodeConfig"):
        admit(running, _session(model, PROMPTS[2:], 0.5, DecodeConfig(max_new_tokens=5, record_features=False)))
    with pytest.raises(ValueError, match="keep: a session needs at least one row"):
        keep_rows(running, torch.zeros(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="keep: expected"):
        keep_rows(running, torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="keep: expected"):
        admit(running, _session(model, PROMPTS[2:], 0.5, config), keep=torch.ones(3, dtype=torch.bool))


def test_interruption_records_follow_their_rows_through_keep_rows_and_admit():
    from adaptive_pause.tokens import ensure_interrupt_tokens

    model = opinionated_model("slotted")
    ensure_interrupt_tokens(model.tokenizer, model.lm)
    config = DecodeConfig(max_new_tokens=6, max_pauses=4)
    session = _session(model, PROMPTS, 0.3, config)
    session.step(torch.ones(len(PROMPTS), dtype=torch.long))
    session.interrupt([1, 3], ["hurry up", "never mind"])
    keep_rows(session, torch.tensor([False, True, True, True]))  # row 0 leaves: rows 1..3 become 0..2
    assert [(i.row, i.text) for i in session.interruptions] == [(0, "hurry up"), (2, "never mind")]
    assert session.interrupted.tolist() == [True, False, True]
    admit(session, _session(model, EXTRA[:2], 0.3, config), keep=torch.tensor([True, True, False]))
    assert [(i.row, i.text) for i in session.interruptions] == [(0, "hurry up")]  # "never mind" left with its row
    session.step(torch.ones(session.batch, dtype=torch.long))
    session.interrupt([3], ["take your time"])
    assert [(i.row, i.text) for i in session.interruptions] == [(0, "hurry up"), (3, "take your time")]
    assert session.interrupted.tolist() == [True, False, False, True]
