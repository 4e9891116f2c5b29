"""The analytic environment: gymnasium conformance, exact optimum vs Monte Carlo, non-trivial optimal policy."""

import pytest
import torch
from gymnasium.utils.env_checker import check_env

from adaptive_pause.envs.analytic import AnalyticBatchEnv, AnalyticModel, AnalyticPauseEnv, policy_pause_probs
from adaptive_pause.envs.analytic import AnalyticEnvConfig
from policies import FixedPauses
from rewards import DeadlineReward, MetaReward


def test_gymnasium_check_env():
    check_env(AnalyticPauseEnv(), skip_render_check=True)


def test_gym_episode_rewards_sum_to_meta_reward():
    env = AnalyticPauseEnv()
    obs, info = env.reset(seed=3, options={"urgency": 0.4})
    total, steps = 0.0, 0
    while True:
        obs, reward, terminated, truncated, step_info = env.step(1)  # always pause: the cap forces the answer
        total += reward
        steps += 1
        if terminated:
            break
    cap = env.model.max_pauses
    assert steps == cap + 1 and step_info["forced"] and step_info["pauses"] == cap
    expected = MetaReward(cap).reward(torch.tensor([step_info["score"]]), torch.tensor([cap]), torch.tensor([0.4]))
    assert total == pytest.approx(float(expected), abs=1e-6)


def _monte_carlo(model, best, urgency, reward=None, n=60_000, seed=0):
    env = AnalyticBatchEnv(model, reward)
    generator = torch.Generator().manual_seed(seed)
    inputs = env.reset(torch.full((n,), urgency), generator)
    total = torch.zeros(n)
    for _ in range(model.max_pauses + 1):
        result = env.step((inputs.pauses_total < best[env.observed]).long())
        total += result.reward
        inputs = env.observe()
    assert env.done.all()
    return float(total.mean()), float(total.std() / n**0.5)


@pytest.mark.parametrize("urgency", [0.0, 0.5, 0.75])
def test_exact_optimum_matches_monte_carlo(urgency):
    model = AnalyticModel()
    best, value = model.optimum(urgency)
    mean, stderr = _monte_carlo(model, best, urgency)
    assert abs(mean - value) < 4 * stderr + 1e-4


def test_exact_optimum_with_deadline_reward():
    model = AnalyticModel()
    reward = DeadlineReward(model.max_pauses, min_budget=2)
    best, value = model.optimum(0.5, reward)
    mean, stderr = _monte_carlo(model, best, 0.5, reward)
    assert abs(mean - value) < 4 * stderr + 1e-4


def test_optimum_beats_every_fixed_k_and_depends_on_difficulty_and_urgency():
    model = AnalyticModel()
    for urgency in (0.0, 0.25, 0.5, 0.6, 1.0):
        _, value = model.optimum(urgency)
        for k in range(model.max_pauses + 1):
            probs = policy_pause_probs(FixedPauses(k), model, urgency)
            assert model.expected_reward(probs, urgency) <= value + 1e-12
    best_25, _ = model.optimum(0.25)
    best_60, _ = model.optimum(0.6)
    assert len(set(best_25.tolist())) >= 4  # depends on the observed difficulty
    assert (best_25 >= best_60).all() and (best_25 > best_60).any()  # and on urgency
    # at u = 0.6 the hardest are given up while middling ones still pause: not monotone in difficulty
    assert best_60[-1] == 0 and best_60.max() > 0


def test_stop_distribution_of_a_coin_flip_policy():
    model = AnalyticModel(AnalyticEnvConfig(max_pauses=3))
    stops = model.stop_distribution(torch.full((model.levels, 3), 0.5))
    torch.testing.assert_close(stops[0], torch.tensor([0.5, 0.25, 0.125, 0.125], dtype=torch.float64))


def test_bad_inputs_name_the_field():
    with pytest.raises(ValueError, match="observation_noise"):
        AnalyticEnvConfig(observation_noise=1.5)
    with pytest.raises(ValueError, match="p_floor"):
        AnalyticEnvConfig(p_floor=0.9, p_ceiling=0.5)
    env = AnalyticPauseEnv()
    with pytest.raises(ValueError, match="urgency"):
        env.reset(seed=0, options={"urgency": 2.0})
    with pytest.raises(ValueError, match="reward.max_pauses_total"):
        AnalyticBatchEnv(AnalyticModel(), MetaReward(3))
