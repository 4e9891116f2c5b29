"""GAE over decision steps in closed form (after Stable-Baselines3's tests/test_gae.py)."""

import pytest
import torch

from adaptive_pause.ppo.algorithm import decision_gae


@pytest.mark.parametrize("gamma", [1.0, 0.9])
@pytest.mark.parametrize("length", [1, 5])
def test_lambda_one_with_zero_values_gives_discounted_returns(gamma, length):
    # SB3's check: reward 1 at every step, value 0, lambda 1 -> return_t = sum_k gamma^k = (1 - gamma^(n-t)) / (1 - gamma)
    rewards = torch.ones(1, length)
    values = torch.zeros(1, length)
    decision = torch.ones(1, length, dtype=torch.bool)
    advantages, returns = decision_gae(rewards, values, decision, gamma, 1.0)
    remaining = torch.arange(length, 0, -1).float()
    expected = remaining if gamma == 1.0 else (1 - gamma**remaining) / (1 - gamma)
    torch.testing.assert_close(returns[0], expected)
    torch.testing.assert_close(advantages[0], expected)


def test_lambda_zero_is_one_step_td_error():
    torch.manual_seed(0)
    rewards, values = torch.randn(3, 6), torch.randn(3, 6)
    decision = torch.ones(3, 6, dtype=torch.bool)
    gamma = 0.8
    advantages, returns = decision_gae(rewards, values, decision, gamma, 0.0)
    next_values = torch.cat([values[:, 1:], torch.zeros(3, 1)], 1)  # terminal after the last step
    torch.testing.assert_close(advantages, rewards + gamma * next_values - values)
    torch.testing.assert_close(returns, advantages + values)


def test_lambda_one_is_monte_carlo_minus_value():
    torch.manual_seed(1)
    rewards, values = torch.randn(2, 7), torch.randn(2, 7)
    decision = torch.ones(2, 7, dtype=torch.bool)
    gamma = 0.95
    advantages, _ = decision_gae(rewards, values, decision, gamma, 1.0)
    discounts = gamma ** torch.arange(7).float()
    mc = torch.stack([(rewards[:, t:] * discounts[: 7 - t]).sum(1) for t in range(7)], 1)
    torch.testing.assert_close(advantages, mc - values)


def test_forced_and_padding_steps_fold_into_the_previous_decision():
    # row: decision, forced emit (reward b), decision, then padding. Non-decision values must not matter.
    a, b, c = 0.3, -0.7, 1.1
    v0, v_forced, v2, v_pad = 0.2, 99.0, -0.4, 55.0
    gamma, lam = 0.9, 0.8
    rewards = torch.tensor([[a, b, c, 0.0]])
    values = torch.tensor([[v0, v_forced, v2, v_pad]])
    decision = torch.tensor([[True, False, True, False]])
    advantages, returns = decision_gae(rewards, values, decision, gamma, lam)
    adv2 = c - v2
    adv0 = (a + b + gamma * v2 - v0) + gamma * lam * adv2
    torch.testing.assert_close(advantages, torch.tensor([[adv0, 0.0, adv2, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[adv0 + v0, 0.0, adv2 + v2, 0.0]]))


def test_forced_last_step_reward_goes_to_the_last_decision():
    # at the pause cap the answer is forced: its reward (the score) belongs to the last real decision
    rewards = torch.tensor([[-0.1, -0.1, 0.9]])
    values = torch.tensor([[0.5, 0.6, 123.0]])
    decision = torch.tensor([[True, True, False]])
    advantages, _ = decision_gae(rewards, values, decision, 1.0, 1.0)
    torch.testing.assert_close(advantages, torch.tensor([[0.7 - 0.5, 0.8 - 0.6, 0.0]]))


def test_rows_are_independent_and_batched_equals_one_by_one():
    torch.manual_seed(2)
    rewards, values = torch.randn(4, 9), torch.randn(4, 9)
    decision = torch.rand(4, 9) < 0.6
    batched = decision_gae(rewards, values, decision, 0.97, 0.9)
    for row in range(4):
        single = decision_gae(rewards[row:row + 1], values[row:row + 1], decision[row:row + 1], 0.97, 0.9)
        torch.testing.assert_close(batched[0][row], single[0][0])
        torch.testing.assert_close(batched[1][row], single[1][0])
