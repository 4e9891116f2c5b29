"""The one decode loop: equivalence with HF generate and with teacher forcing, batching, caps, chunking, urgency."""

import pytest
import torch
from helpers import PROMPTS, decisive_head, opinionated_model

from adaptive_pause.decoding import DecodeConfig, DecodeSession, decode
from adaptive_pause.positions import position_ids
from policies import ConfidenceThreshold, FixedPauses, RandomPauses


def _decode(model, prompts, policy, urgency=0.3, **kwargs):
    s = model.settings
    return decode(model.lm, model.tokenizer, model.encode(prompts), policy, urgency, DecodeConfig(**kwargs),
                  s.pause_id, s.numbering, s.pause_slots)


def _hf_generate(model, prompts, k, max_new_tokens):
    """HF generate on left-padded prompt + k pauses, greedy, <pause> suppressed; new tokens cut at EOS."""
    ids = model.encode(prompts)
    pause, pad, eos = model.settings.pause_id, model.tokenizer.pad_token_id, model.tokenizer.eos_token_id
    width = max(len(p) for p in ids) + k
    input_ids = torch.tensor([[pad] * (width - len(p) - k) + p + [pause] * k for p in ids])
    mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(p) - k for p in ids])[:, None]).long()
    out = model.lm.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                            suppress_tokens=[pause], pad_token_id=pad, eos_token_id=eos)
    rows = []
    for row in out[:, width:].tolist():
        rows.append(row[: row.index(eos)] if eos in row else row)
    return rows


@pytest.fixture(scope="module")
def contiguous_model():
    return opinionated_model("contiguous")


@pytest.fixture(scope="module")
def slotted_model():
    return opinionated_model("slotted")


@pytest.mark.parametrize("k", [0, 1, 3, 6])
def test_fixed_pauses_token_identical_to_hf_generate(contiguous_model, k):
    ours = _decode(contiguous_model, PROMPTS, FixedPauses(k), max_new_tokens=10, max_pauses=8)
    assert ours.answer_ids == _hf_generate(contiguous_model, PROMPTS, k, 10)
    assert ours.pauses_total.tolist() == [k] * len(PROMPTS)
    assert all(per[0] == k and sum(per) == k for per in ours.pauses_per_token)
    assert len({len(a) for a in ours.answer_ids}) > 1 or len(set(map(tuple, ours.answer_ids))) > 1  # non-trivial


def test_slotted_decode_matches_one_teacher_forced_pass(slotted_model):
    """Pauses before every answer token (k=2): one forward pass over the decoded sequence, numbered by
    positions.position_ids, must reproduce every emitted token (argmax, pause masked) and every hidden state."""
    model = slotted_model
    out = _decode(model, PROMPTS, FixedPauses(2, every_token=True), max_new_tokens=6, max_pauses=4)
    seq, mask = out.sequences, out.attention_mask
    pause = model.settings.pause_id
    pos = position_ids(seq, mask, pause, "slotted", model.settings.pause_slots)
    with torch.no_grad():
        ref = model.lm(input_ids=seq, attention_mask=mask, position_ids=pos, output_hidden_states=True)
    logits = ref.logits.float()
    logits[..., pause] = float("-inf")
    prompt_len = seq.shape[1] - out.trace.valid.shape[1]
    trace = out.trace
    for col in range(trace.valid.shape[1]):
        at = prompt_len + col - 1  # the position whose output chose the token in column `col`
        rows = trace.valid[:, col]
        emits = rows & (trace.actions[:, col] == 0)
        assert torch.equal(logits[emits, at].argmax(-1), trace.tokens[emits, col])
        torch.testing.assert_close(ref.hidden_states[-1][rows, at], trace.features[rows, col], atol=2e-4, rtol=1e-4)
    assert all(per[0] == 2 for per in out.pauses_per_token)


@pytest.mark.parametrize("numbering", ["contiguous", "slotted"])
def test_batched_equals_each_row_alone(numbering):
    model = opinionated_model(numbering)
    head = decisive_head(model.hidden_size)
    batched = _decode(model, PROMPTS, head, urgency=[0.1, 0.5, 0.9, 0.3], max_new_tokens=6, max_pauses=3)
    assert sum(batched.pauses_total.tolist()) > 0  # the head really pauses somewhere
    for row, (prompt, u) in enumerate(zip(PROMPTS, [0.1, 0.5, 0.9, 0.3])):
        alone = _decode(model, [prompt], head, urgency=u, max_new_tokens=6, max_pauses=3)
        assert alone.answer_ids[0] == batched.answer_ids[row]
        assert alone.pauses_per_token[0] == batched.pauses_per_token[row]
        valid = batched.trace.valid[row]
        torch.testing.assert_close(alone.trace.log_probs[0], batched.trace.log_probs[row][valid], atol=1e-4, rtol=0)


def test_chunked_pauses_same_tokens_fewer_forward_passes(contiguous_model, slotted_model):
    for model in (contiguous_model, slotted_model):
        one = _decode(model, PROMPTS, FixedPauses(4), max_new_tokens=6, max_pauses=8)
        chunked = _decode(model, PROMPTS, FixedPauses(4), max_new_tokens=6, max_pauses=8, chunk_pauses=True)
        assert chunked.answer_ids == one.answer_ids
        assert chunked.pauses_per_token == one.pauses_per_token
        assert chunked.forward_passes == one.forward_passes - 3
        assert chunked.trace.planned.sum() == 3 * len(PROMPTS)


def test_caps_force_emits_and_are_flagged(contiguous_model):
    always = RandomPauses(1.0)
    out = _decode(contiguous_model, PROMPTS, always, max_new_tokens=5, max_pauses=2, max_pauses_total=3,
                  controller_greedy=False)
    for per, reason in zip(out.pauses_per_token, out.finish_reasons):
        assert per[:2] == [2, 1][: len(per)] and sum(per) <= 3
    trace = out.trace
    emits = trace.valid & (trace.actions == 0)
    assert torch.equal(trace.forced, emits)  # the policy always wanted to pause: every emit was forced
    assert not (trace.decisions() & emits).any()
    assert (trace.log_probs[trace.forced] == 0).all()


def test_emits_never_produce_pause_even_when_it_is_the_argmax():
    model = opinionated_model("contiguous", seed=3)
    batch = model.tokenizer(PROMPTS[:1], return_tensors="pt")
    with torch.no_grad():  # tied embeddings: a <pause> row along the final hidden state makes it the argmax
        hidden = model.lm(**batch, output_hidden_states=True).hidden_states[-1][0, -1]
        model.lm.get_input_embeddings().weight[model.settings.pause_id] = 100 * hidden
        hf = model.lm(**batch).logits[0, -1].argmax()
    assert int(hf) == model.settings.pause_id
    for sample in (False, True):
        out = _decode(model, PROMPTS, FixedPauses(0), max_new_tokens=8, do_sample=sample)
        assert all(model.settings.pause_id not in ids for ids in out.answer_ids)


def test_sampling_is_reproducible_with_a_seed(contiguous_model):
    s = contiguous_model.settings
    runs = [decode(contiguous_model.lm, contiguous_model.tokenizer, contiguous_model.encode(PROMPTS),
                   RandomPauses(0.4), 0.5, DecodeConfig(max_new_tokens=8, do_sample=True, top_k=20, top_p=0.9,
                                                        controller_greedy=False),
                   s.pause_id, s.numbering, s.pause_slots, seed=seed) for seed in (7, 7, 8)]
    assert runs[0].answer_ids == runs[1].answer_ids and runs[0].pauses_per_token == runs[1].pauses_per_token
    assert (runs[0].answer_ids, runs[0].pauses_per_token) != (runs[2].answer_ids, runs[2].pauses_per_token)


def test_stop_strings_and_eos_stop_rows_independently(contiguous_model):
    free = _decode(contiguous_model, PROMPTS, FixedPauses(1), max_new_tokens=10)
    text = contiguous_model.tokenizer.decode(free.answer_ids[0])
    stop = text[3]
    out = _decode(contiguous_model, PROMPTS, FixedPauses(1), max_new_tokens=10, stop_strings=(stop,))
    got = contiguous_model.tokenizer.decode(out.answer_ids[0])
    assert got == text[: text.index(stop) + 1] and out.finish_reasons[0] == "stop_string"
    for row in range(1, len(PROMPTS)):  # the other rows run on (or stop on their own text)
        other = contiguous_model.tokenizer.decode(free.answer_ids[row])
        expected = other[: other.index(stop) + 1] if stop in other else other
        assert contiguous_model.tokenizer.decode(out.answer_ids[row]) == expected


def test_urgency_schedule_and_callback_change_decisions_mid_generation(contiguous_model):
    policy = ConfidenceThreshold(high=1.0, low=0.0)  # u = 0: always pause; u = 1: never
    out = _decode(contiguous_model, PROMPTS, policy, urgency=0.0, max_new_tokens=4, max_pauses=8)
    assert out.pauses_per_token[0][0] == 8  # never confident enough: paused up to the cap
    s = contiguous_model.settings
    scheduled = decode(contiguous_model.lm, contiguous_model.tokenizer, contiguous_model.encode(PROMPTS), policy,
                       0.0, DecodeConfig(max_new_tokens=4, max_pauses=8), s.pause_id, s.numbering, s.pause_slots,
                       urgency_schedule={3: 1.0})  # "hurry up" after 3 steps
    assert scheduled.pauses_per_token == [[3, 0, 0, 0]] * len(PROMPTS)
    assert scheduled.trace.urgency[:, :3].eq(0).all() and scheduled.trace.urgency[:, 3:].eq(1).all()

    def hurry_row_1(session):  # per-row change through a callback
        return [0.0, 1.0, 0.0, 0.0] if session.forward_passes >= 2 else None

    per_row = decode(contiguous_model.lm, contiguous_model.tokenizer, contiguous_model.encode(PROMPTS), policy,
                     0.0, DecodeConfig(max_new_tokens=2, max_pauses=3), s.pause_id, s.numbering, s.pause_slots,
                     urgency_schedule=hurry_row_1)
    assert per_row.pauses_per_token[1] == [2, 0] and per_row.pauses_per_token[0] == [3, 3]


def test_cancel_stops_a_row_and_the_others_continue(contiguous_model):
    def forget_row_2(session):
        if session.forward_passes == 2:
            session.cancel([2])

    s = contiguous_model.settings
    out = decode(contiguous_model.lm, contiguous_model.tokenizer, contiguous_model.encode(PROMPTS), FixedPauses(1),
                 0.3, DecodeConfig(max_new_tokens=6), s.pause_id, s.numbering, s.pause_slots, on_step=forget_row_2)
    full = _decode(contiguous_model, PROMPTS, FixedPauses(1), max_new_tokens=6)
    assert out.cancelled == [False, False, True, False]
    assert out.steps[2] == 2 and out.answer_ids[2] == full.answer_ids[2][:1]
    for row in (0, 1, 3):
        assert out.answer_ids[row] == full.answer_ids[row]
    assert out.time_s[2] <= out.time_s[0]


def test_session_is_steppable_by_hand(contiguous_model):
    """The env/PPO way: read inputs, decide, step; finished rows stop appending."""
    s = contiguous_model.settings
    session = DecodeSession(contiguous_model.lm, contiguous_model.tokenizer, contiguous_model.encode(PROMPTS[:2]),
                            [0.2, 0.8], DecodeConfig(max_new_tokens=2, max_pauses=1), s.pause_id, s.numbering,
                            s.pause_slots)
    inputs = session.controller_inputs()
    assert inputs.features.shape == (2, contiguous_model.hidden_size) and torch.allclose(inputs.urgency, torch.tensor([0.2, 0.8]))
    session.step(torch.tensor([1, 0]))
    assert session.pauses_total.tolist() == [1, 0] and session.forced().tolist() == [True, False]
    assert inputs.pauses_total.tolist() == [0, 0]  # earlier inputs are not mutated by later steps
    while not session.done:
        session.step(torch.tensor([1, 1]))
    result = session.result()
    assert result.pauses_per_token == [[1, 1], [0, 1]] and result.finish_reasons == ["max_new_tokens"] * 2
    assert result.attention_mask[1, -1] == 0  # row 1 finished a step earlier and appended nothing more
    with pytest.raises(ValueError, match="step"):
        session.step(torch.tensor([0, 0]))


def test_slotted_rejects_more_pauses_than_slots(slotted_model):
    with pytest.raises(ValueError, match="max_pauses"):
        _decode(slotted_model, PROMPTS, FixedPauses(1), max_pauses=slotted_model.settings.pause_slots + 1)


@pytest.mark.parametrize("numbering", ["contiguous", "slotted"])
def test_speculative_pauses_equal_pause_by_pause_in_fewer_passes(numbering):
    """The learned head decides exactly as pause by pause (tokens, actions, log-probs, features, forced)."""
    model = opinionated_model(numbering)
    head = decisive_head(model.hidden_size, seed=0)  # mixes pause runs, single pauses and early stops
    runs = [_decode(model, PROMPTS, head, urgency=[0.1, 0.5, 0.9, 0.3], max_new_tokens=6, max_pauses=5,
                    speculate_pauses=width) for width in (0, 3, 8)]
    base = runs[0]
    counts = [p for row in base.pauses_per_token for p in row]
    assert 1 in counts and max(counts) >= 2  # single pauses and runs of pauses: speculation has work to do
    assert sum(base.pauses_total.tolist()) > 0
    for run in runs[1:]:
        assert run.answer_ids == base.answer_ids and run.pauses_per_token == base.pauses_per_token
        assert run.forward_passes < base.forward_passes
        for row in range(len(PROMPTS)):
            a, b = base.trace, run.trace
            va, vb = a.valid[row], b.valid[row]
            assert torch.equal(a.actions[row][va], b.actions[row][vb])
            assert torch.equal(a.forced[row][va], b.forced[row][vb])
            torch.testing.assert_close(a.log_probs[row][va], b.log_probs[row][vb], atol=1e-4, rtol=0)
            torch.testing.assert_close(a.features[row][va], b.features[row][vb], atol=1e-4, rtol=1e-4)


def test_speculative_pauses_keep_the_sampled_controller_distribution(contiguous_model):
    """A speculative run stopped by an emit decision must honour that decision (not redraw it): with
    RandomPauses(0.5) the pauses before the first token stay geometric, P(k) = 0.5 ** (k + 1) below the cap."""
    s = contiguous_model.settings
    prompts = contiguous_model.encode(["1+1="]) * 400
    out = decode(contiguous_model.lm, contiguous_model.tokenizer, prompts, RandomPauses(0.5), 0.5,
                 DecodeConfig(max_new_tokens=1, max_pauses=6, controller_greedy=False, speculate_pauses=4),
                 s.pause_id, s.numbering, s.pause_slots, seed=0)
    counts = torch.bincount(out.pauses_total, minlength=7).float() / len(prompts)
    expected = torch.tensor([0.5 ** (k + 1) for k in range(6)] + [0.5 ** 6])
    assert torch.allclose(counts, expected, atol=0.06), counts
    assert out.trace.forced.sum() == int((out.pauses_total == 6).sum())


@pytest.mark.parametrize("numbering", ["contiguous", "slotted"])
def test_prompt_summary_is_the_prompts_mean_state_batched_or_alone(numbering):
    """Features = [last hidden state, mean last-layer state over the prompt]; left padding does not leak in,
    so each row of a batch sees what it sees alone; speculative pauses see the same features."""
    model = opinionated_model(numbering)
    head = decisive_head(model.hidden_size, seed=1, prompt_summary=True)
    us = [0.1, 0.5, 0.9, 0.3]
    batched = _decode(model, PROMPTS, head, urgency=us, max_new_tokens=6, max_pauses=3, prompt_summary=True)
    assert batched.trace.features.shape[-1] == 2 * model.hidden_size
    assert sum(batched.pauses_total.tolist()) > 0
    s = model.settings
    for row, (prompt, u) in enumerate(zip(PROMPTS, us)):
        ids = torch.tensor([model.encode([prompt])[0]])
        mask = torch.ones_like(ids)
        with torch.no_grad():
            out = model.lm(input_ids=ids, attention_mask=mask, output_hidden_states=True,
                           position_ids=position_ids(ids, mask, s.pause_id, s.numbering, s.pause_slots))
        expected = out.hidden_states[-1][0].mean(0)  # (hidden,)
        valid = batched.trace.valid[row]
        summaries = batched.trace.features[row][valid][:, model.hidden_size:]  # every step carries it
        torch.testing.assert_close(summaries, expected.expand_as(summaries), atol=1e-4, rtol=1e-4)
        alone = _decode(model, [prompt], head, urgency=u, max_new_tokens=6, max_pauses=3, prompt_summary=True)
        assert alone.answer_ids[0] == batched.answer_ids[row]
        assert alone.pauses_per_token[0] == batched.pauses_per_token[row]
    speculative = _decode(model, PROMPTS, head, urgency=us, max_new_tokens=6, max_pauses=3, prompt_summary=True,
                          speculate_pauses=3)
    assert speculative.answer_ids == batched.answer_ids and speculative.pauses_per_token == batched.pauses_per_token


def test_a_head_reading_the_prompt_summary_needs_a_loop_that_computes_it(contiguous_model):
    head = decisive_head(contiguous_model.hidden_size, prompt_summary=True)
    with pytest.raises(ValueError, match=r"reads the prompt summary \(prompt_summary=True\); decode with prompt_summary=True"):
        _decode(contiguous_model, PROMPTS, head, max_new_tokens=2)
    plain = decisive_head(contiguous_model.hidden_size)
    with pytest.raises(ValueError, match="prompt_summary: the decode loop appends the prompt summary"):
        _decode(contiguous_model, PROMPTS, plain, max_new_tokens=2, prompt_summary=True)
    _decode(contiguous_model, PROMPTS, FixedPauses(1), max_new_tokens=2, prompt_summary=True)  # reads no features
    # generate() sets the loop up from the policy it is given
    out = contiguous_model.generate(PROMPTS, urgency=0.5, policy=head, max_new_tokens=2, max_pauses=2)
    assert len(out.texts) == len(PROMPTS)


def test_unpadded_rows_skip_the_mask_until_a_column_is_masked(contiguous_model):
    """Equal-length prompts leave no column masked: the single-token fast path passes no mask (as HF does, so
    grouped-query attention stays native). Once a row stops (here: cancelled), its new columns are masked and
    the mask returns; the other rows' tokens equal HF generate and each row decoded alone throughout."""
    model, s = contiguous_model, contiguous_model.settings
    prompts = ["12+34=", "56+78=", "90+12="]
    assert len({len(p) for p in model.encode(prompts)}) == 1
    session = DecodeSession(model.lm, model.tokenizer, model.encode(prompts), 0.3, DecodeConfig(max_new_tokens=6),
                            s.pause_id, s.numbering, s.pause_slots)
    assert session._fast is not None and session._every_column_attended
    emits = torch.zeros(3, dtype=torch.long)
    session.step(emits)
    session.step(emits)
    assert session._every_column_attended
    session.cancel([1])
    session.step(emits)
    assert not session._every_column_attended
    while not session.done:
        session.step(emits)
    out = session.result()
    assert out.finish_reasons[1] == "cancelled"
    hf = _hf_generate(model, prompts, 0, 6)
    for row in (0, 2):
        alone = _decode(model, [prompts[row]], FixedPauses(0), max_new_tokens=6)
        assert out.answer_ids[row] == alone.answer_ids[0] == hf[row]
    padded = DecodeSession(model.lm, model.tokenizer, model.encode(PROMPTS), 0.3, DecodeConfig(max_new_tokens=2),
                           s.pause_id, s.numbering, s.pause_slots)
    assert not padded._every_column_attended  # left padding: masked from the start
