"""Controllers: baseline semantics, the learned head's outputs and gradients, save/load round trips."""

import math

import pytest
import torch
from helpers import decisive_head  # noqa: F401  (sets torch threads for tiny models)

from policies import (ConfidenceThreshold, ControllerInputs, FixedPauses, PauseControllerHead, RandomPauses,
                      load_policy, save_policy)


def _inputs(batch=6, hidden=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ControllerInputs(torch.randn(batch, hidden, generator=g), torch.rand(batch, generator=g),
                            torch.randint(0, 4, (batch,), generator=g), torch.randint(0, 9, (batch,), generator=g),
                            torch.rand(batch, generator=g))


def test_fixed_pauses_before_first_token_or_every_token():
    inputs = ControllerInputs(torch.zeros(3, 4), torch.zeros(3), torch.tensor([0, 2, 0]), torch.tensor([0, 2, 3]))
    assert FixedPauses(3).decide(inputs, greedy=True).action.tolist() == [1, 1, 0]
    assert FixedPauses(3, every_token=True).decide(inputs, greedy=True).action.tolist() == [1, 1, 1]
    assert FixedPauses(3).plan_pauses(inputs).tolist() == [3, 1, 0]
    with pytest.raises(ValueError, match="k"):
        FixedPauses(-1)


def test_confidence_threshold_falls_with_urgency():
    policy = ConfidenceThreshold(high=0.9, low=0.1)
    top = torch.tensor([0.5, 0.5, 0.5])
    inputs = ControllerInputs(torch.zeros(3, 4), torch.tensor([0.0, 0.5, 1.0]), torch.zeros(3, dtype=torch.long),
                              torch.zeros(3, dtype=torch.long), top)
    assert policy.decide(inputs, greedy=True).action.tolist() == [1, 0, 0]  # thresholds 0.9, 0.5, 0.1
    with pytest.raises(ValueError, match="top_prob"):
        policy.decide(ControllerInputs(torch.zeros(1, 4), torch.zeros(1), torch.zeros(1, dtype=torch.long),
                                       torch.zeros(1, dtype=torch.long)))
    with pytest.raises(ValueError, match="low"):
        ConfidenceThreshold(high=0.2, low=0.5)


def test_random_pauses_rate_and_it_ignores_greedy():
    inputs = _inputs(batch=20000)
    g = torch.Generator().manual_seed(0)
    actions = RandomPauses(0.3).decide(inputs, greedy=True, generator=g).action.float()
    assert abs(actions.mean().item() - 0.3) < 0.02
    log_prob, entropy, value = RandomPauses(0.3).evaluate(inputs, actions)
    assert torch.allclose(log_prob.exp(), torch.where(actions.bool(), torch.tensor(0.3), torch.tensor(0.7)))
    assert (value == 0).all()


def test_head_decide_and_evaluate_agree_and_value_is_learned():
    head = PauseControllerHead(16, initial_pause_prob=0.2)
    inputs = _inputs()
    decision = head.decide(inputs, generator=torch.Generator().manual_seed(1))
    log_prob, entropy, value = head.evaluate(inputs, decision.action)
    torch.testing.assert_close(log_prob, decision.log_prob)
    torch.testing.assert_close(value, decision.value)
    # the untrained head starts near its initial pause probability
    assert torch.allclose(torch.sigmoid(head.action_logits(inputs)), torch.tensor(0.2), atol=0.05)
    assert entropy.shape == (6,) and (entropy > 0).all()


def test_head_detaches_hidden_unless_joint():
    for joint, expect_grad in ((False, False), (True, True)):
        head = PauseControllerHead(16, detach_features=not joint)
        inputs = _inputs()
        inputs.features.requires_grad_(True)
        log_prob, _, value = head.evaluate(inputs, torch.ones(6))
        (log_prob.sum() + value.sum()).backward()
        assert (inputs.features.grad is not None) == expect_grad
        assert head.out.weight.grad is not None  # the head itself always learns


def test_head_rejects_wrong_feature_size_and_missing_top_prob():
    head = PauseControllerHead(16)
    with pytest.raises(ValueError, match="features"):
        head.decide(_inputs(hidden=8))
    with pytest.raises(ValueError, match="top_prob"):
        inputs = _inputs()
        head.decide(ControllerInputs(inputs.features, inputs.urgency, inputs.pauses_before_token,
                                     inputs.pauses_total))
    no_top = PauseControllerHead(16, use_top_prob=False)
    inputs = _inputs()
    assert no_top.decide(ControllerInputs(inputs.features, inputs.urgency, inputs.pauses_before_token,
                                          inputs.pauses_total)).action.shape == (6,)


@pytest.mark.parametrize("policy", [PauseControllerHead(16, width=8, pause_scale=4.0, use_top_prob=False),
                                    FixedPauses(3, every_token=True), ConfidenceThreshold(0.8, 0.2),
                                    RandomPauses(0.25)], ids=lambda p: type(p).__name__)
def test_save_load_round_trip(tmp_path, policy):
    torch.manual_seed(0)
    if isinstance(policy, PauseControllerHead):
        with torch.no_grad():
            for p in policy.parameters():
                p.add_(torch.randn_like(p) * 0.1)
    save_policy(policy, tmp_path / "controller")
    loaded = load_policy(tmp_path / "controller", hidden_size=16)
    assert type(loaded) is type(policy) and loaded.config() == policy.config()
    inputs = _inputs()
    torch.testing.assert_close(loaded.action_logits(inputs), policy.action_logits(inputs))
    torch.testing.assert_close(loaded.value(inputs), policy.value(inputs))


def test_load_with_wrong_hidden_size_names_both_sizes(tmp_path):
    save_policy(PauseControllerHead(16), tmp_path / "controller")
    with pytest.raises(ValueError, match=r"hidden size 16 .* hidden size is 32"):
        load_policy(tmp_path / "controller", hidden_size=32)
    with pytest.raises(ValueError, match="config.json"):
        load_policy(tmp_path / "missing")


def test_bad_constructor_arguments_name_the_field():
    for make, field in ((lambda: PauseControllerHead(0), "hidden_size"),
                        (lambda: PauseControllerHead(8, initial_pause_prob=1.0), "initial_pause_prob"),
                        (lambda: RandomPauses(math.nan), "p"), (lambda: ConfidenceThreshold(high=1.5), "high")):
        with pytest.raises(ValueError, match=field):
            make()


def test_head_with_prompt_summary_round_trips_and_checks_its_input_width(tmp_path):
    from policies import PauseControllerHead, load_policy, save_policy

    torch.manual_seed(0)
    head = PauseControllerHead(4, width=8, prompt_summary=True)
    assert head.input_dim == 8
    g = torch.Generator().manual_seed(0)
    inputs = ControllerInputs(torch.randn(5, 8, generator=g), torch.rand(5, generator=g),
                              torch.zeros(5, dtype=torch.long), torch.zeros(5, dtype=torch.long), torch.rand(5, generator=g))
    save_policy(head, tmp_path / "c")
    loaded = load_policy(tmp_path / "c", hidden_size=4)
    assert loaded.prompt_summary and torch.equal(loaded.action_logits(inputs), head.action_logits(inputs))
    # the summary half matters
    other = ControllerInputs(torch.cat([inputs.features[:, :4], torch.randn(5, 4, generator=g)], -1), inputs.urgency,
                             inputs.pauses_before_token, inputs.pauses_total, inputs.top_prob)
    assert not torch.allclose(head.action_logits(other), head.action_logits(inputs))
    with pytest.raises(ValueError, match=r"expected last dimension 8, 2 x 4: the hidden state and the prompt summary"):
        head.action_logits(ControllerInputs(inputs.features[:, :4], inputs.urgency, inputs.pauses_before_token,
                                            inputs.pauses_total, inputs.top_prob))
