"""rewards/: closed-form values, per-step sums equal episode rewards (property tests), bad inputs."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rewards import DeadlineReward, DiscountedReward, MetaReward, make_reward


def test_meta_reward_closed_form():
    reward = MetaReward(max_pauses_total=8)
    score = torch.tensor([1.0, 0.0, 1.0, 0.5])
    pauses = torch.tensor([0, 8, 4, 2])
    urgency = torch.tensor([0.0, 1.0, 0.5, 0.25])
    expected = torch.tensor([1.0, -1.0, 0.5 - 0.25, 0.75 * 0.5 - 0.25 * 2 / 8])
    torch.testing.assert_close(reward.reward(score, pauses, urgency), expected)


def test_meta_per_step_is_pause_cost_then_score():
    reward = MetaReward(max_pauses_total=4)
    paused = torch.tensor([[1, 1, 0, 0], [0, 1, 0, 0]])
    valid = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    steps = reward.per_step(torch.tensor([1.0, 0.0]), paused, torch.tensor([0.5, 1.0]), valid)
    expected = torch.tensor([[-0.125, -0.125, 0.5, 0.0], [0.0, -0.25, 0.0, 0.0]])
    torch.testing.assert_close(steps, expected)


def test_deadline_budget_shrinks_with_urgency():
    reward = DeadlineReward(max_pauses_total=8, min_budget=2)
    score = torch.ones(3)
    pauses = torch.tensor([8, 5, 3])
    urgency = torch.tensor([0.0, 0.5, 1.0])  # budgets 8, 5, 2
    torch.testing.assert_close(reward.reward(score, pauses, urgency), torch.tensor([1.0, 1.0, 0.0]))
    # pauses cost nothing whatever the outcome; the answer step pays score * [within budget]
    paused = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    steps = reward.per_step(torch.ones(2), paused, torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(steps, torch.tensor([[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]]))


def test_discounted_closed_form():
    reward = DiscountedReward(max_pauses_total=10, rate=math.log(10.0))
    value = reward.reward(torch.tensor([1.0]), torch.tensor([10]), torch.tensor([1.0]))
    torch.testing.assert_close(value, torch.tensor([0.1]))


episodes = st.integers(min_value=1, max_value=6).flatmap(
    lambda batch: st.tuples(
        st.lists(st.floats(0, 1), min_size=batch, max_size=batch),  # score
        st.lists(st.floats(0, 1), min_size=batch, max_size=batch),  # urgency
        st.lists(st.lists(st.booleans(), min_size=7, max_size=7), min_size=batch, max_size=batch),  # paused
        st.lists(st.integers(0, 7), min_size=batch, max_size=batch),  # steps taken
    )
)


@pytest.mark.parametrize("name,kwargs", [("meta", {}), ("deadline", {"min_budget": 1.0}), ("discounted", {})])
@settings(max_examples=60, deadline=None)
@given(episode=episodes, max_pauses_total=st.integers(1, 12))
def test_per_step_sums_to_episode_reward(name, kwargs, episode, max_pauses_total):
    kwargs = dict(kwargs)
    if "min_budget" in kwargs:
        kwargs["min_budget"] = min(kwargs["min_budget"], max_pauses_total)
    reward = make_reward(name, max_pauses_total, **kwargs)
    score, urgency, paused, taken = (torch.tensor(x) for x in episode)
    valid = torch.arange(7)[None, :] < taken[:, None]  # (batch, 7): a prefix of steps per row
    steps = reward.per_step(score, paused, urgency, valid)
    pauses = (paused & valid).sum(1)
    episode_reward = reward.reward(score, pauses, urgency)
    # rows that took no step receive nothing
    expected = torch.where(taken > 0, episode_reward, torch.zeros_like(episode_reward))
    torch.testing.assert_close(steps.sum(1), expected, atol=1e-5, rtol=1e-5)
    assert (steps[~valid] == 0).all()
    # causal: what a pause costs never depends on the (future) score
    other = reward.per_step(1 - score, paused, urgency, valid)
    last = valid & ~torch.roll(valid, -1, dims=1) | (valid & (torch.arange(7) == 6))
    torch.testing.assert_close(steps[~last], other[~last])


def test_bad_inputs_name_the_field():
    reward = MetaReward(max_pauses_total=4)
    with pytest.raises(ValueError, match="urgency"):
        reward.reward(torch.ones(2), torch.zeros(2), torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match="pauses"):
        reward.reward(torch.ones(2), torch.tensor([-1, 0]), torch.zeros(2))
    with pytest.raises(ValueError, match="shapes must match"):
        reward.reward(torch.ones(2), torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="max_pauses_total"):
        MetaReward(max_pauses_total=0)
    with pytest.raises(ValueError, match="reward: unknown name"):
        make_reward("nope", 4)
    with pytest.raises(ValueError, match="valid"):
        reward.per_step(torch.ones(1), torch.zeros(1, 3), torch.zeros(1), torch.ones(1, 2, dtype=torch.bool))


def test_nan_urgency_or_score_is_rejected():
    import pytest
    import torch

    from rewards import make_reward

    reward = make_reward("meta", 16)
    with pytest.raises(ValueError, match="urgency: must not be NaN"):
        reward.reward(torch.tensor([1.0]), torch.tensor([2]), torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match="score: must be finite"):
        reward.reward(torch.tensor([float("nan")]), torch.tensor([2]), torch.tensor([0.5]))
