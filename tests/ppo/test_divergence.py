"""A diverging PPO run stops: a non-finite reward, advantage, loss or gradient norm, an optimizer step that
overflows, or a policy whose update explodes (approx KL far above any sane bound) ends `train-controller`
with a message naming what diverged and where, exit code 1, and the last good checkpoint kept and resumable."""

import json
import re

import pytest
import torch
from safetensors.torch import load_file

from adaptive_pause.config import save_yaml
from adaptive_pause.envs.analytic import AnalyticEnvConfig
from adaptive_pause.ppo import algorithm as ppo_algorithm
from adaptive_pause.ppo import trainer as ppo_trainer
from adaptive_pause.ppo.config import PPOConfig
from policies import load_policy
from rewards import MetaReward


def config(tmp_path, name, **overrides) -> PPOConfig:
    fields = dict(output_dir=str(tmp_path / name), iterations=4, episodes_per_iteration=32, update_epochs=1,
                  num_minibatches=2, anneal_lr=False, checkpoint_every=1, eval_every=100, progress=False,
                  analytic=AnalyticEnvConfig(max_pauses=4, levels=3))
    return PPOConfig(**{**fields, **overrides})


def run_cli(cfg: PPOConfig, tmp_path, capsys) -> tuple[int, str]:
    path = tmp_path / f"{cfg.output_dir.rsplit('/', 1)[-1]}.yaml"
    save_yaml(cfg, path)
    code = ppo_trainer.main(["--config", str(path)])
    return code, capsys.readouterr().err


class PoisonedReward(MetaReward):
    """The meta reward, NaN from the iteration `poison_from` on (an env or scorer gone wrong)."""

    def __init__(self, max_pauses_total: int, poison_from: int):
        super().__init__(max_pauses_total)
        self.poison_from, self.iteration = poison_from, 0

    def formula(self, score, pauses, urgency):
        value = super().formula(score, pauses, urgency)
        return value * float("nan") if self.iteration >= self.poison_from else value


def test_a_nan_reward_stops_naming_it_keeps_the_last_good_checkpoint_and_resumes(tmp_path, monkeypatch, capsys):
    ppo_trainer.train(config(tmp_path, "straight"))
    reward = PoisonedReward(4, poison_from=3)
    sample_urgency = ppo_trainer.sample_urgency

    def next_iteration(*args):  # called once at the start of every iteration
        reward.iteration += 1
        return sample_urgency(*args)

    monkeypatch.setattr(ppo_trainer, "build_reward", lambda cfg: reward)
    monkeypatch.setattr(ppo_trainer, "sample_urgency", next_iteration)
    code, message = run_cli(config(tmp_path, "run"), tmp_path, capsys)
    assert code == 1
    assert "adaptive-pause train-controller: error: PPO diverged at iteration 3: reward, advantages" in message
    assert f"the last good checkpoint is {tmp_path / 'run' / 'state'} (iteration 2), left intact" in message
    assert "Traceback" not in message
    monkeypatch.undo()
    run = tmp_path / "run"
    assert json.loads((run / "state" / "trainer.json").read_text())["iteration"] == 2
    load_policy(run / "controller")  # the kept controller loads (checksum verified)
    code, _ = run_cli(config(tmp_path, "run", resume=True), tmp_path, capsys)
    assert code == 0
    for name in ("policy.safetensors", "optimizer.safetensors"):  # the resumed run ends where the straight one did
        a, b = load_file(str(tmp_path / "straight" / "state" / name)), load_file(str(run / "state" / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name


class InfiniteGradient(torch.autograd.Function):
    """Identity forward, an infinite gradient backward: a loss that is finite but whose gradient is not."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


@pytest.mark.parametrize("poison, message", [
    (lambda loss: loss * float("nan"), "loss not finite"),
    (InfiniteGradient.apply, r"gradient norm (inf|nan) not finite \(the update was not applied\)"),
])
def test_a_non_finite_loss_or_gradient_stops_before_the_update(poison, message, tmp_path, monkeypatch, capsys):
    minibatch_loss = ppo_algorithm.minibatch_loss
    calls = {"n": 0}

    def poisoned(*args):  # the 5th minibatch: iteration 3 (2 minibatches per iteration), epoch 0, minibatch 0
        calls["n"] += 1
        loss, stats = minibatch_loss(*args)
        return (poison(loss) if calls["n"] == 5 else loss), stats

    monkeypatch.setattr(ppo_algorithm, "minibatch_loss", poisoned)
    code, err = run_cli(config(tmp_path, "run"), tmp_path, capsys)
    assert code == 1 and re.search(f"PPO diverged at iteration 3, epoch 0, minibatch 0: {message}", err), err
    assert json.loads((tmp_path / "run" / "state" / "trainer.json").read_text())["iteration"] == 2


@pytest.mark.parametrize("learning_rate, message", [
    (1e10, r"PPO diverged at iteration 1, epoch 0, minibatch 1: the policy exploded \(approx KL [0-9.e+]+ > 10.0 nats"),
    (1e3, r"PPO diverged at iteration 1, epoch 0, minibatch 1: the policy exploded \(approx KL [0-9.e+]+ > 10.0 nats"),
    (1e300, r"PPO diverged at iteration 1, epoch 0, minibatch 0: the optimizer step overflowed"),
])
def test_an_exploding_policy_or_an_overflowing_step_stops(learning_rate, message, tmp_path, capsys):
    code, err = run_cli(config(tmp_path, "run", learning_rate=learning_rate), tmp_path, capsys)
    assert code == 1 and "Traceback" not in err
    assert err.startswith("adaptive-pause train-controller: error: ")
    assert re.search(message, err), err
    assert "last good checkpoint is none (no checkpoint was written yet)" in err
