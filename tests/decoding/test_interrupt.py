"""Interruptions: one prefill pass, positions as a teacher-forced pass, batched = alone, restart, errors."""

import pytest
import torch
from helpers import PROMPTS, opinionated_model

from adaptive_pause.decoding import DecodeConfig, DecodeSession
from adaptive_pause.decoding.trace import mask_pause
from adaptive_pause.positions import position_ids
from adaptive_pause.tokens import ensure_interrupt_tokens, interrupt_token_ids, special_token_strings
from policies import FixedPauses


@pytest.fixture(scope="module", params=["contiguous", "slotted"])
def model(request):
    model = opinionated_model(request.param)
    ensure_interrupt_tokens(model.tokenizer, model.lm)  # added like <pause>: new embedding rows
    return model


def _session(model, prompts=PROMPTS, **config):
    s = model.settings
    cfg = DecodeConfig(**{"max_new_tokens": 6, "max_pauses": 4, **config})
    return DecodeSession(model.lm, model.tokenizer, model.encode(prompts), 0.3, cfg, s.pause_id, s.numbering,
                         s.pause_slots)


def _teacher_forced_last(model, session):
    """Masked logits at the last column of one forward pass over the session's whole sequence, numbered by
    `positions.position_ids` (the collators' rule)."""
    s = model.settings
    ids, mask = session._ids[:, :session.length], session._mask[:, :session.length]
    pos = position_ids(ids, mask, s.pause_id, s.numbering, s.pause_slots)
    with torch.no_grad():
        out = model.lm(input_ids=ids, attention_mask=mask, position_ids=pos)
    return mask_pause(out.logits[:, -1].float(), s.pause_id)


def _close(a, b):
    finite = a.isfinite()
    assert torch.equal(finite, b.isfinite())
    return torch.allclose(a[finite], b[finite], atol=1e-4)


def test_interrupt_matches_teacher_forced_pass(model):
    """During pauses (row 0) and between answer tokens (row 2): one prefill pass, then decoding on; the state
    after the interruption and after later steps equals one forward pass over the same sequence."""
    session = _session(model)
    session.step(torch.ones(4, dtype=torch.long))
    session.step(torch.tensor([1, 0, 0, 0]))
    passes = session.forward_passes
    session.interrupt([0, 2], ["hurry up", "forget that, what is 1+1?"])
    assert session.forward_passes == passes + 1  # one pass for both rows, whatever their lengths
    assert _close(session.logits[[0, 2]], _teacher_forced_last(model, session)[[0, 2]])
    for actions in ([1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 0, 0]):
        session.step(torch.tensor(actions))
    assert _close(session.logits, _teacher_forced_last(model, session))
    # A new session whose prompt is the whole interrupted sequence agrees with it too (positions continue).
    row = 2
    seq = session._ids[row, :session.length][session._mask[row, :session.length].bool()].tolist()
    s = model.settings
    fresh = DecodeSession(model.lm, model.tokenizer, [seq], 0.3, DecodeConfig(max_new_tokens=2, max_pauses=4),
                          s.pause_id, s.numbering, s.pause_slots)
    assert _close(fresh.logits[0], session.logits[row])


def test_interrupt_batched_equals_alone_through_generate(model):
    """Interruptions from `generate`'s step callback: each row decodes as it does alone with the same ones."""
    texts = {1: (1, "while you think, I am having tea"), 2: (3, "the answer should be in reverse")}

    def interrupter(rows):
        def on_step(session):
            step = len(session.records)
            for batch_row, prompt_row in enumerate(rows):
                if prompt_row in texts and texts[prompt_row][0] == step and bool(session.active[batch_row]):
                    session.interrupt([batch_row], [texts[prompt_row][1]])
        return on_step

    policy = FixedPauses(2, every_token=True)
    kwargs = dict(max_new_tokens=6, max_pauses=4)
    batched = model.generate(PROMPTS[:3], urgency=0.3, policy=policy, on_step=interrupter([0, 1, 2]), **kwargs)
    assert len(batched.result.trace.interruptions) == 2
    for row in range(3):
        alone = model.generate([PROMPTS[row]], urgency=0.3, policy=policy, on_step=interrupter([row]), **kwargs)
        assert alone.answer_ids[0] == batched.answer_ids[row]
        assert alone.pauses_per_token[0] == batched.pauses_per_token[row]
        assert alone.finish_reasons[0] == batched.finish_reasons[row]
        assert [(i.column, i.text) for i in alone.result.trace.interruptions] == \
            [(i.column, i.text) for i in batched.result.trace.interruptions if i.row == row]


def test_interrupted_row_restarts_its_answer(model):
    session = _session(model, max_new_tokens=3)
    session.step(torch.zeros(4, dtype=torch.long))
    session.step(torch.zeros(4, dtype=torch.long))  # rows 0..3 have emitted two tokens
    session.interrupt(1, "add one more")
    assert int(session.answer_tokens[1]) == 0 and int(session.answer_tokens[0]) == 2
    session.step(torch.ones(4, dtype=torch.long))  # row 1 may pause again: its answer restarted
    assert int(session.pauses_total[1]) == 1 and bool(session.active[1])
    while not session.done:
        session.step(torch.zeros(4, dtype=torch.long))
    result = session.result()
    trace = result.trace
    emitted = trace.tokens[1][trace.valid[1] & (trace.actions[1] == 0)].tolist()
    eos = model.tokenizer.eos_token_id
    after = emitted[2:]
    assert result.answer_ids[1] == (after[:-1] if after and after[-1] == eos else after)
    assert result.pauses_per_token[1][0] == 1
    opening, closing = interrupt_token_ids(model.tokenizer)
    [record] = trace.interruptions
    assert (record.row, record.column, record.token_ids[0], record.token_ids[-1]) == (1, 2, opening, closing)


def test_eos_as_first_reply_is_a_cancellation(model, monkeypatch):
    session = _session(model)
    session.step(torch.zeros(4, dtype=torch.long))
    session.interrupt([0, 3], ["never mind", "no, keep going"])
    eos = model.tokenizer.eos_token_id
    real = session._choose_emits

    def choose():  # rows 0 and 1 answer EOS at once: only row 0 was interrupted, so only it is cancelled
        return torch.where(torch.tensor([True, True, False, False]), eos, real())

    monkeypatch.setattr(session, "_choose_emits", choose)
    session.step(torch.zeros(4, dtype=torch.long))
    result = session.result()
    assert result.finish_reasons[:2] == ["cancelled", "eos"]
    assert result.answer_ids[0] == []


def test_interrupt_urgency(model):
    session = _session(model)
    seen = []

    def reader(sess, rows, texts):
        seen.append((rows, texts))
        return [0.9 for _ in rows]

    session.interrupt([1], ["hurry up"], urgency=reader)
    assert seen == [([1], ["hurry up"])]
    assert session.controller_inputs().urgency.tolist() == pytest.approx([0.3, 0.9, 0.3, 0.3])
    session.urgency_reader = lambda sess, rows, texts: [0.0] * len(rows)
    session.interrupt([2, 3], "take your time")
    session.interrupt([0], "hmm", urgency=1.0)  # the caller's number wins over the reader
    assert session.controller_inputs().urgency.tolist() == pytest.approx([1.0, 0.9, 0.0, 0.0])
    assert [i.urgency for i in session.trace().interruptions] == pytest.approx([0.9, 0.0, 0.0, 1.0])


@pytest.mark.parametrize("text", ["<pause>", "stop </s> now", "a <interrupt>b", "x</interrupt>", "<unk>?"])
def test_special_token_strings_are_refused(model, text):
    session = _session(model)
    specials = set(special_token_strings(model.tokenizer))
    assert {"<pause>", "<interrupt>", "</interrupt>"} <= specials
    if not any(s in text for s in specials):
        pytest.skip(f"{text!r} holds no special token of this tokenizer")
    with pytest.raises(ValueError, match=r"texts\[0\]: contains special-token text"):
        session.interrupt([0], [text])
    assert session.interruptions == []  # nothing entered the row
    session.interrupt([0], ["<paus> is not one"])  # near misses are plain words, encoded character by character
    assert len(session.interruptions[0].token_ids) == len("<paus> is not one") + 2


def test_interrupt_errors(model):
    session = _session(model, max_new_tokens=1)
    session.cancel([1])
    with pytest.raises(ValueError, match="row 1 has already finished \\(cancelled\\)"):
        session.interrupt([1], ["hurry"])
    with pytest.raises(ValueError, match="texts\\[0\\]: empty interruption text"):
        session.interrupt([0], ["  "])
    with pytest.raises(ValueError, match="rows: row indices must lie in \\[0, 4\\)"):
        session.interrupt([4], ["hurry"])
    for bad in (True, [0.5], "0", [[0]]):
        with pytest.raises(ValueError, match="rows: expected row indices"):
            session.interrupt(bad, ["hurry"])
    with pytest.raises(ValueError, match="each row may be interrupted once"):
        session.interrupt([0, 0], ["a", "b"])
    with pytest.raises(ValueError, match="texts: got 1 texts for 2 rows"):
        session.interrupt([0, 2], ["a"])
    with pytest.raises(ValueError, match="texts\\[0\\]: characters the tokenizer does not know"):
        session.interrupt([0], ["caf\u00e9"])
    with pytest.raises(ValueError, match="texts\\[0\\]: row 0 .* more than the model's context"):
        session.interrupt([0], ["x" * 600])
    session.step(torch.zeros(4, dtype=torch.long))  # max_new_tokens=1: every row finishes
    with pytest.raises(ValueError, match="row 0 has already finished \\((eos|max_new_tokens)\\)"):
        session.interrupt([0], ["hurry"])


def test_generate_reads_interruption_urgency_with_the_estimator(model):
    """With an urgency estimator, `generate` re-reads prompt + interruption: the controller's urgency input from
    the next step on is the estimator's reading; without one, urgency stays as the caller gave it."""
    from adaptive_pause.tokens import encode_text
    from adaptive_pause.urgency import estimate
    from policies import UrgencyEstimator

    torch.manual_seed(0)
    estimator = UrgencyEstimator(model.hidden_size, width=8, vocab_size=len(model.tokenizer),
                                 pause_id=model.settings.pause_id).eval()
    seen = {}

    def on_step(session):
        if len(session.records) == 1:
            session.interrupt([1], ["hurry up, no time"])
        elif len(session.records) == 2:
            seen["urgency"] = session.controller_inputs().urgency.tolist()

    out = model.generate(PROMPTS[:2], urgency=0.3, policy=FixedPauses(3), on_step=on_step,
                         urgency_estimator=estimator, max_new_tokens=4, max_pauses=4)
    ids = model.encode([PROMPTS[1]])[0] + encode_text(model.tokenizer, " hurry up, no time")
    expected = float(estimate(model, [ids], estimator)[0])
    assert seen["urgency"] == pytest.approx([0.3, expected], abs=1e-5) and abs(expected - 0.3) > 1e-3
    assert out.result.trace.interruptions[0].urgency == pytest.approx(expected, abs=1e-5)
    model.generate(PROMPTS[:2], urgency=0.3, policy=FixedPauses(3), on_step=on_step, max_new_tokens=4, max_pauses=4)
    assert seen["urgency"] == pytest.approx([0.3, 0.3])


def test_interrupted_rows_survive_continuous_batching(model):
    """Dropping a row and admitting a new one after an interruption (the server's moves) keeps the
    interrupted row's state: its logits match a session that was never re-batched."""
    from adaptive_pause.decoding.batching import admit, keep_rows

    reference, batched = _session(model, PROMPTS[:2]), _session(model, PROMPTS[:2])
    for session in (reference, batched):
        session.step(torch.ones(2, dtype=torch.long))
        session.interrupt([1], ["forget that, what is 2+2?"])
    keep_rows(batched, torch.tensor([False, True]))
    admit(batched, _session(model, PROMPTS[2:3]))
    assert batched.restart_at.shape == batched.interrupted.shape == (2,) and bool(batched.interrupted[0])
    reference.step(torch.tensor([1, 0]))
    batched.step(torch.tensor([0, 0]))
    assert _close(batched.logits[0], reference.logits[1])


def test_interrupting_some_unpadded_rows_masks_the_others_slots(model):
    """Equal-length prompts start with no masked column (the fast path passes no mask); interrupting one row
    leaves masked slots in the others, which later steps must not attend to: a teacher-forced pass agrees."""
    session = _session(model, prompts=["12+34=", "56+78=", "90+12="])
    assert session._every_column_attended
    session.step(torch.tensor([1, 0, 0]))
    session.interrupt([0], ["and the answer should be odd"])
    assert not session._every_column_attended
    for actions in ([0, 0, 1], [1, 0, 0], [0, 0, 0]):
        session.step(torch.tensor(actions))
    assert _close(session.logits, _teacher_forced_last(model, session))
