"""Gymnasium views of the decode loop: the env checker, rewards that sum to the episode reward, the vector env."""

import warnings

import numpy as np
import pytest
import torch
from helpers import opinionated_model
from gymnasium.utils.env_checker import check_env

from adaptive_pause.envs.lm import PauseEnv, PauseEnvConfig, PauseVectorEnv
from rewards import MetaReward


@pytest.fixture(scope="module")
def model():
    return opinionated_model("slotted")


@pytest.mark.parametrize("prompt_summary", [False, True])
def test_single_env_passes_the_gymnasium_checker(model, prompt_summary):
    env = PauseEnv(model, PauseEnvConfig(max_new_tokens=3, max_pauses=2, prompt_summary=prompt_summary))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unbounded hidden-state Box: expected, and only a warning
        check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert obs["features"].shape == (model.hidden_size * (2 if prompt_summary else 1),)


def test_episode_rewards_sum_to_the_meta_reward(model):
    config = PauseEnvConfig(max_new_tokens=3, max_pauses=2, max_pauses_total=4)
    env = PauseEnv(model, config)
    obs, info = env.reset(seed=3, options={"urgency": 0.6})
    assert obs["features"].shape == (model.hidden_size,) and info["urgency"] == 0.6
    total, steps, forced = 0.0, 0, 0
    while True:
        obs, reward, terminated, truncated, info = env.step(1)  # always ask to pause
        total += reward
        steps += 1
        forced += info["forced"]
        if terminated or truncated:
            break
    assert info["pauses"] == 4 and forced == 3  # caps: 2 before token 1, 2 before token 2, then forced emits
    expected = MetaReward(4).reward(torch.tensor([info["score"]]), torch.tensor([4]), torch.tensor([0.6]))
    assert total == pytest.approx(float(expected), abs=1e-5)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    with pytest.raises(ValueError, match="action"):
        env.reset(seed=0)
        env.step(2)


def test_vector_env_runs_one_batched_session_with_an_active_mask(model):
    venv = PauseVectorEnv(model, 4, PauseEnvConfig(max_new_tokens=3, max_pauses=2))
    obs, info = venv.reset(seed=0, options={"urgency": [0.1, 0.2, 0.3, 0.4]})
    assert obs["features"].shape == (4, model.hidden_size)
    np.testing.assert_allclose(obs["urgency"][:, 0], [0.1, 0.2, 0.3, 0.4], rtol=1e-6)
    ended = np.zeros(4, dtype=int)
    for _ in range(50):
        obs, reward, terminated, truncated, info = venv.step(np.array([1, 0, 1, 0]))
        ended += terminated | truncated
        assert (reward[~info["active"]] == 0).all()
        if not venv.core.session.done:
            continue
        break
    assert (ended == 1).all()  # every row reports its end exactly once
    assert info["pauses"].tolist()[1] == 0 and info["pauses"].tolist()[0] == 6
    with pytest.raises(RuntimeError, match="reset"):
        venv.step(np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="num_envs"):
        PauseVectorEnv(model, 0)
