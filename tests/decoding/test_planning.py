"""The planning controller in the decode loop: its k pauses, prefilled in one pass with their countdown k..1, give
the same next tokens and logits as the same pauses appended one by one; batched = each row alone; the trace
marks the plan as one decision (its count) and the rest as planned."""

import pytest
import torch
from helpers import PROMPTS
from test_countdown import countdown_lm

from adaptive_pause.decoding import DecodeConfig, DecodeSession, run_policy
from adaptive_pause.modeling import pause_settings
from policies import ControllerInputs, PausePlanningHead, PausePolicy, load_policy, save_policy
from policies.baselines import _decisive


class RowPauses(PausePolicy):
    """Test policy: k[row] pauses before the first answer token, committed ahead (the countdown is exact)."""

    def __init__(self, ks):
        super().__init__()
        self.ks = torch.as_tensor(ks)

    def plan_pauses(self, inputs: ControllerInputs) -> torch.Tensor:
        return (self.ks - inputs.pauses_total).clamp(min=0)

    def action_logits(self, inputs: ControllerInputs) -> torch.Tensor:
        return _decisive(self.plan_pauses(inputs) > 0)


def planner(seed=0, max_count=4):
    torch.manual_seed(seed)
    head = PausePlanningHead(32, max_count=max_count, pause_scale=4.0)
    with torch.no_grad():  # an opinionated head: different prompts get different counts
        head.out.weight.mul_(300.0)
    return head.eval()


def run(model, tokenizer, prompts, policy, first_only=True, urgency=0.0):
    s = pause_settings(model, tokenizer)
    config = DecodeConfig(max_new_tokens=4, max_pauses=4, first_token_pauses_only=first_only)
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    session = DecodeSession(model, tokenizer, ids, urgency, config, s.pause_id, s.numbering, s.pause_slots)
    seen = [session.logits.clone()]
    result = run_policy(session, policy, on_step=lambda x: seen.append(x.logits.clone()))
    return result, seen


@pytest.mark.parametrize("numbering", ["slotted", "contiguous"])
def test_planned_pauses_in_one_pass_equal_the_same_pauses_one_by_one(numbering):
    model, tokenizer = countdown_lm(numbering)
    planned, planned_logits = run(model, tokenizer, PROMPTS, planner())
    ks = planned.pauses_total
    assert len(set(ks.tolist())) >= 2 and ks.max() >= 2, ks  # varied counts, some prefilled together
    one_by_one, single_logits = run(model, tokenizer, PROMPTS, RowPauses(ks))
    assert planned.answer_ids == one_by_one.answer_ids and torch.equal(one_by_one.pauses_total, ks)
    for row in range(len(PROMPTS)):  # the same real tokens with the same countdown (a chunk leaves masked gaps)
        for name in ("sequences", "countdown"):
            a, b = getattr(planned, name)[row], getattr(one_by_one, name)[row]
            assert torch.equal(a[planned.attention_mask[row].bool()], b[one_by_one.attention_mask[row].bool()])
    assert planned.countdown.max() == ks.max()
    # the logits each answer token was chosen from agree, row by row (decoded alone, so steps are the row's)
    for row, prompt in enumerate(PROMPTS):
        alone, seen_p = run(model, tokenizer, [prompt], planner())
        single, seen_s = run(model, tokenizer, [prompt], RowPauses(ks[row:row + 1]))
        assert alone.answer_ids[0] == planned.answer_ids[row]
        lp = torch.cat(seen_p[1 if ks[row] > 0 else 0: -1])  # after the plan's one pass, one step per token
        emits = (single.trace.valid & (single.trace.actions == 0))[0]
        ls = torch.cat([seen_s[t] for t in range(emits.shape[0]) if emits[t]])
        finite = torch.isfinite(lp)
        torch.testing.assert_close(lp[finite], ls[finite], atol=1e-4, rtol=0)
    # one pass for a plan of k >= 1 pauses, where one by one takes k
    assert planned.forward_passes < one_by_one.forward_passes
    trace = planned.trace
    decided = trace.decisions()
    assert torch.equal(decided.sum(1), torch.ones(len(PROMPTS), dtype=torch.long))  # one decision per answer
    assert torch.equal(trace.choices[decided], ks)  # the decision's action is the count
    assert torch.equal((trace.valid & (trace.actions == 1) & ~trace.planned).sum(1), (ks > 0).long())


def test_planning_batched_equals_each_row_alone_and_plans_before_every_token():
    model, tokenizer = countdown_lm("slotted")
    head = planner(seed=1)
    batched, _ = run(model, tokenizer, PROMPTS, head, first_only=False, urgency=[0.0, 0.3, 0.6, 1.0])
    for row, prompt in enumerate(PROMPTS):
        alone, _ = run(model, tokenizer, [prompt], head, first_only=False, urgency=[0.0, 0.3, 0.6, 1.0][row])
        assert alone.answer_ids[0] == batched.answer_ids[row]
        assert alone.pauses_per_token[0] == batched.pauses_per_token[row]
    trace = batched.trace
    # before every answer token one decision: the answer's decisions = its emitted tokens
    assert torch.equal(trace.decisions().sum(1), batched.answer_tokens)


def test_planning_head_round_trip(tmp_path):
    head = planner(seed=2, max_count=6)
    save_policy(head, tmp_path / "c")
    loaded = load_policy(tmp_path / "c", hidden_size=32)
    assert isinstance(loaded, PausePlanningHead) and loaded.plans and loaded.max_count == 6
    inputs = ControllerInputs(torch.randn(3, 32), torch.rand(3), torch.zeros(3, dtype=torch.long),
                              torch.zeros(3, dtype=torch.long), torch.rand(3))
    torch.testing.assert_close(loaded(inputs)[0], head(inputs)[0])
    with pytest.raises(ValueError, match="max_count"):
        PausePlanningHead(32, max_count=0)


def test_untrained_planning_head_starts_geometric():
    """P(k) ~ p^k at initialisation: the count distribution of a per-step head pausing with probability p."""
    torch.manual_seed(0)
    head = PausePlanningHead(32, max_count=5, initial_pause_prob=0.2)
    inputs = ControllerInputs(torch.randn(4, 32), torch.rand(4), torch.zeros(4, dtype=torch.long),
                              torch.zeros(4, dtype=torch.long), torch.rand(4))
    probs = head(inputs)[0].softmax(-1)  # (4, 6)
    expected = 0.2 ** torch.arange(6.0)
    torch.testing.assert_close(probs, (expected / expected.sum()).expand(4, -1), atol=0.02, rtol=0)
