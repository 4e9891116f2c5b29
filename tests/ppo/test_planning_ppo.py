"""PPO over the planning controller's categorical counts: the clipped loss and GAE on the planning clock in closed
form on a small case; LM rollouts replay on the head alone; a short run saves a planning controller that
generate loads and runs as a planner."""

import math

import pytest
import torch
from test_trainer import tiny_run_dir  # noqa: F401 - the fixture

from adaptive_pause.ppo import algorithm as ppo_algorithm, trainer as ppo_trainer
from adaptive_pause.ppo.config import PPOConfig
from policies import ControllerInputs, PausePlanningHead
from rewards import make_reward


def test_categorical_ppo_loss_and_planning_clock_gae_in_closed_form():
    # Two episodes, 4 slots each. Episode 0 plans k=2 at slot 0 (slots 0-1 pauses, slot 1 planned), emits at
    # slot 2 (the end of its plan: planned), then a forced emit at slot 3. Episode 1 plans k=0: emits at slot 0
    # (a decision), forced emits after. One decision per episode: the planning clock.
    urgency = torch.tensor([0.5, 0.0])
    actions = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]])
    valid = torch.ones(2, 4, dtype=torch.bool)
    undecided = torch.tensor([[False, True, True, True], [False, True, True, True]])
    choices = torch.tensor([[2, 1, 0, 0], [0, 0, 0, 0]])
    torch.manual_seed(0)
    head = PausePlanningHead(4, max_count=3, use_top_prob=False)
    features = torch.randn(2, 4, 4)
    before = torch.tensor([[0, 1, 2, 0], [0, 0, 0, 0]])
    inputs = ControllerInputs(features.flatten(0, 1), urgency[:, None].expand(-1, 4).flatten(), before.flatten(),
                              before.flatten())
    with torch.no_grad():
        old_lp, _, values = head.evaluate(inputs, choices.flatten())
    old_lp, values = old_lp.view(2, 4) * (~undecided), values.view(2, 4) * (~undecided)
    rollout = ppo_algorithm.Rollout(
        features=features, pauses_before_token=before, pauses_total=before, top_prob=None, urgency=urgency,
        actions=actions, log_probs=old_lp, values=values, valid=valid, undecided=undecided,
        score=torch.tensor([1.0, 0.0]), pauses=torch.tensor([2, 0]), choices=choices)
    rollout.validate()
    reward = make_reward("meta", 4)
    batch = ppo_algorithm.make_batch(rollout, reward, gamma=1.0, gae_lambda=0.95)
    assert batch.actions.tolist() == [2, 0]  # the counts, not the slots' pause/emit
    # GAE on the planning clock: one decision per episode, so its advantage is the episode reward minus its value
    episode = reward.reward(rollout.score, rollout.pauses, urgency)  # (1 - u) * score - u * pauses / 4
    torch.testing.assert_close(episode, torch.tensor([0.5 - 0.5 * 2 / 4, 0.0]))
    torch.testing.assert_close(batch.advantages, episode - values[:, 0])
    # the clipped loss on categorical log-probs, by hand, after moving the head
    with torch.no_grad():
        head.out.bias[:4] += torch.tensor([0.0, 0.0, 0.8, 0.0])  # count 2 becomes likelier: ratio > 1 for episode 0
    config = PPOConfig(clip_coef=0.2, norm_adv=False, ent_coef=0.01, vf_coef=0.5, clip_vloss=False)
    new_lp, entropy, new_value = head.evaluate(batch.inputs, batch.actions)
    loss, stats = ppo_algorithm.ppo_loss(new_lp, entropy, new_value, batch, config)
    ratio = (new_lp - batch.log_probs).exp()
    assert ratio[0] > 1.2  # the clip is active
    adv = batch.advantages
    pg = torch.stack([-torch.minimum(adv[i] * ratio[i], adv[i] * ratio[i].clamp(0.8, 1.2)) for i in range(2)]).mean()
    logits = head(batch.inputs)[0]
    probs = logits.softmax(-1)
    ent = -(probs * probs.log()).sum(-1).mean()
    v = 0.5 * ((new_value - batch.returns) ** 2).mean()
    torch.testing.assert_close(loss, pg - 0.01 * ent + 0.5 * v)
    torch.testing.assert_close(new_lp, logits.log_softmax(-1)[torch.arange(2), batch.actions])
    assert math.isclose(float(stats["clipfrac"]), float(((ratio - 1).abs() > 0.2).float().mean()))


def plan_config(run_dir, out, **overrides) -> PPOConfig:
    fields = dict(env="lm", model_run_dir=str(run_dir), tasks=["addition:1-2"], max_pauses=3, max_new_tokens=4,
                  output_dir=str(out), controller="plan", first_token_pauses_only=True)
    return PPOConfig(**{**fields, **overrides})


def test_planning_rollout_replays_on_the_head_alone(tiny_run_dir, tmp_path):  # noqa: F811
    config = plan_config(tiny_run_dir, tmp_path / "unused")
    reward = ppo_trainer.build_reward(config)
    source, _ = ppo_trainer.build_source(config, reward, torch.device("cpu"))
    torch.manual_seed(0)
    policy = ppo_trainer.build_policy(config, source.hidden_size)
    assert isinstance(policy, PausePlanningHead) and policy.max_count == 3
    rollout = source.collect(policy, torch.linspace(0, 1, 16), torch.Generator().manual_seed(0))
    rollout.validate()
    assert torch.equal(rollout.decision.sum(1), torch.ones(16, dtype=torch.long))  # one plan per answer
    assert torch.equal(rollout.choices[rollout.decision], rollout.pauses)  # the count is the pauses taken
    assert (rollout.pauses >= 2).any()
    batch = ppo_algorithm.make_batch(rollout, reward, 1.0, 0.95)
    log_prob, _, value = policy.evaluate(batch.inputs, batch.actions)
    torch.testing.assert_close(log_prob, batch.log_probs)
    torch.testing.assert_close(value, batch.values)
    torch.testing.assert_close(rollout.step_rewards(reward).sum(1), rollout.episode_rewards(reward))


def test_train_a_planning_controller_and_generate_with_it(tiny_run_dir, tmp_path):  # noqa: F811
    from adaptive_pause.modeling import AdaptivePauseModel

    config = plan_config(tiny_run_dir, tmp_path / "plan", iterations=2, episodes_per_iteration=16, progress=False)
    ppo_trainer.train(config)
    loaded = AdaptivePauseModel.from_pretrained(tmp_path / "plan")
    assert isinstance(loaded.policy, PausePlanningHead)  # saved with the controller: generate runs a planner
    out = loaded.generate(["12+34=", "7+5=", "3+4="], urgency=0.0, max_new_tokens=4)
    passes = out.result.trace
    assert all(p <= 3 for p in out.pauses)
    assert torch.equal(passes.decisions().sum(1), torch.ones(3, dtype=torch.long))


def test_planning_config_errors_name_the_field():
    with pytest.raises(ValueError, match="controller"):
        PPOConfig(controller="tree")
    with pytest.raises(ValueError, match="controller"):
        PPOConfig(controller="plan")  # env analytic
