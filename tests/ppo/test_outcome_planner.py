"""The outcome planner (controller 'outcome'): its choice in closed form, the fit on known outcomes, the observed
outcomes equal to fixed-k decoding, a short train-controller run that generate loads and runs as a planner (batched
= alone), resume without decoding again, save/load, and the config's errors."""

import json

import pytest
import torch
from test_trainer import tiny_run_dir  # noqa: F401 - the fixture

from adaptive_pause.ppo import trainer as ppo_trainer
from adaptive_pause.ppo.config import PPOConfig
from adaptive_pause.ppo.outcome import OUTCOMES, observe
from policies import ControllerInputs, FixedPauses, OutcomePlanner, fit_outcome_head, load_policy, save_policy


def _inputs(features, urgency):
    zeros = torch.zeros(len(features), dtype=torch.long)
    return ControllerInputs(features, torch.full((len(features),), float(urgency)), zeros, zeros)


def _head_with_probabilities(p: torch.Tensor, min_gain: float = 0.0) -> OutcomePlanner:
    """A head whose P(correct | k) is `p` (K + 1,) for every input: zero weights, logit biases."""
    head = OutcomePlanner(4, max_count=len(p) - 1, price_pauses=16, width=8, prompt_summary=False, min_gain=min_gain)
    with torch.no_grad():
        for param in head.net.parameters():
            param.zero_()
        head.net[2].bias.copy_(torch.logit(p))
    return head


def test_choice_is_the_best_expected_meta_reward_with_a_floor_price_per_pause():
    head = _head_with_probabilities(torch.tensor([0.5, 0.9, 0.95, 0.96]))
    x = torch.randn(3, 4)
    assert head.decide(_inputs(x, 0.0)).action.tolist() == [3, 3, 3]  # u = 0: the most accurate k
    head.min_gain = 0.02  # p - 0.02 k = [0.5, 0.88, 0.91, 0.90]: the third pause buys 0.01 < 0.02
    assert head.decide(_inputs(x, 0.0)).action.tolist() == [2, 2, 2]
    head.min_gain = 0.06  # [0.5, 0.84, 0.83, 0.78]: the second pause buys 0.05 < 0.06
    assert head.decide(_inputs(x, 0.0)).action.tolist() == [1, 1, 1]
    tie = _head_with_probabilities(torch.tensor([0.9, 0.9, 0.9, 0.9]))
    assert tie.decide(_inputs(x, 0.0)).action.tolist() == [0, 0, 0]  # a pause that buys nothing is not taken
    head.min_gain = 0.0
    # u = 0.5: 0.5 p - 0.5 k / 16 = [0.25, 0.41875, 0.4125, 0.39] -> k = 1, and its value is that expectation
    decision = head.decide(_inputs(x, 0.5))
    assert decision.action.tolist() == [1, 1, 1]
    torch.testing.assert_close(decision.value, torch.full((3,), 0.41875))
    assert head.decide(_inputs(x, 1.0)).action.tolist() == [0, 0, 0]  # u = 1: only the price counts
    ks = [int(head.decide(_inputs(x[:1], u)).action) for u in torch.linspace(0, 1, 21).tolist()]
    assert ks == sorted(ks, reverse=True)  # never more pauses at a higher urgency


def test_fit_recovers_outcomes_that_depend_on_the_input():
    # Two kinds of prompt: "easy" ones are right at any k, "hard" ones only from k = 2 on.
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 16, generator=generator)
    hard = x[:, 0] > 0
    correct = torch.ones(1000, 4)
    correct[hard, :2] = 0.0
    torch.manual_seed(0)
    head = OutcomePlanner(16, max_count=3, price_pauses=16, width=32, prompt_summary=False, min_gain=0.05)
    fit = fit_outcome_head(head, x, correct, steps=600, generator=generator)
    assert fit["validation_rows"] == 100 and fit["validation_loss"] < 0.2  # chance: 0.35 (two columns at 0.693)
    k = head.decide(_inputs(x, 0.0)).action
    clear = x[:, 0].abs() > 1.0  # away from the boundary, where the head is sure
    assert (k[clear & ~hard] == 0).float().mean() > 0.9  # no pause where none helps
    assert (k[clear & hard] == 2).float().mean() > 0.9  # the fewest that make it right


def test_bad_floors_and_sizes_are_errors_naming_the_field():
    with pytest.raises(ValueError, match="min_gain"):
        OutcomePlanner(4, 3, 16, min_gain=-0.1)
    with pytest.raises(ValueError, match="max_count"):
        OutcomePlanner(4, 0, 16)
    head = OutcomePlanner(4, 3, 16, prompt_summary=True)
    with pytest.raises(ValueError, match="features"):
        head.decide(_inputs(torch.randn(2, 4), 0.0))  # the summary's half is missing
    with pytest.raises(ValueError, match="supervision"):
        head.evaluate(_inputs(torch.randn(2, 8), 0.0), torch.zeros(2))


def test_save_load_round_trip_keeps_the_choice(tmp_path):
    torch.manual_seed(0)
    head = OutcomePlanner(4, 5, 16, width=8, prompt_summary=True, min_gain=0.003)
    save_policy(head, tmp_path / "c")
    loaded = load_policy(tmp_path / "c", hidden_size=4)
    assert isinstance(loaded, OutcomePlanner) and loaded.config() == head.config()
    x = torch.randn(7, 8)
    for u in (0.0, 0.3, 1.0):
        assert torch.equal(loaded.decide(_inputs(x, u)).action, head.decide(_inputs(x, u)).action)


def outcome_config(run_dir, out, **overrides) -> PPOConfig:
    fields = dict(env="lm", model_run_dir=str(run_dir), tasks=["addition:1-2"], max_pauses=3, max_new_tokens=4,
                  max_pauses_total=3, output_dir=str(out), controller="outcome", first_token_pauses_only=True,
                  prompt_summary=True, outcome_prompts=40, outcome_fit_steps=60, progress=False)
    return PPOConfig(**{**fields, **overrides})


def test_observed_outcomes_are_fixed_k_decoding(tiny_run_dir):  # noqa: F811
    from adaptive_pause.modeling import AdaptivePauseModel
    from adaptive_pause.tasks import get_task

    model = AdaptivePauseModel.from_pretrained(tiny_run_dir)
    task = get_task("addition:1-2")
    examples = task.examples(6, 5, "dev")
    config = outcome_config(tiny_run_dir, "unused")
    features, correct = observe(model, [task], examples, config, batch=4)  # batches of 4 and 2: batched = alone
    assert correct.shape == (6, 4) and features.shape == (6, 2 * model.hidden_size)
    for k in range(4):
        out = model.generate([e.prompt for e in examples], urgency=0.0, policy=FixedPauses(k), max_new_tokens=4,
                             max_pauses=3, max_pauses_total=3, first_token_pauses_only=True)
        assert correct[:, k].tolist() == [float(task.score(t, e.answer)) for t, e in zip(out.texts, examples)]


def test_train_an_outcome_planner_generate_with_it_and_resume(tiny_run_dir, tmp_path):  # noqa: F811
    from adaptive_pause.modeling import AdaptivePauseModel

    result = ppo_trainer.train(outcome_config(tiny_run_dir, tmp_path / "o"))
    assert result["observed"]["prompts"] == 40 and len(result["observed"]["accuracy_per_k"]) == 4
    floors = {row["min_gain"] for row in result["held_out"]["min_gains"]}
    assert {0.0, 0.01} <= floors and result["held_out"]["rows"] == 4
    assert result["fit"]["history"] and any((tmp_path / "o" / "logs").iterdir())  # the fit's curve, tensorboard
    loaded = AdaptivePauseModel.from_pretrained(tmp_path / "o")
    assert isinstance(loaded.policy, OutcomePlanner) and loaded.policy.price_pauses == 3
    prompts = ["12+34=", "7+5=", "3+4="]
    together = loaded.generate(prompts, urgency=[0.0, 0.5, 1.0])  # the run's decode settings by default
    assert all(0 <= p <= 3 for p in together.pauses)
    assert together.pauses[2] == 0  # u = 1: a pause only costs
    for i, prompt in enumerate(prompts):
        alone = loaded.generate([prompt], urgency=[0.0, 0.5, 1.0][i])
        assert alone.texts == [together.texts[i]] and alone.pauses == [together.pauses[i]]
        # the planner's k pauses, planned after the prompt pass, answer as the same k fixed in advance (observe)
        fixed = loaded.generate([prompt], urgency=0.0, policy=FixedPauses(together.pauses[i]))
        assert fixed.texts == alone.texts
    with pytest.raises(ValueError, match="first_token_pauses_only"), pytest.warns(UserWarning, match="trained with"):
        loaded.generate(prompts, urgency=0.0, first_token_pauses_only=False)
    # a killed run resumes from the observed outcomes (no second decoding): same head
    outcomes = tmp_path / "o" / "state" / OUTCOMES
    assert outcomes.is_file()
    before = (tmp_path / "o" / "controller" / "controller.safetensors").read_bytes()
    again = ppo_trainer.train(outcome_config(tiny_run_dir, tmp_path / "o", resume=True))
    assert again["fit"] == result["fit"]
    assert (tmp_path / "o" / "controller" / "controller.safetensors").read_bytes() == before
    assert json.loads((tmp_path / "o" / "data.json").read_text())["split"] == "dev"


@pytest.mark.parametrize("overrides, field", [({"first_token_pauses_only": False}, "first_token_pauses_only"),
                                               ({"reward": "deadline"}, "reward"),
                                               ({"train_adapter": True}, "controller"),
                                               ({"outcome_prompts": 5}, "outcome_prompts"),
                                               ({"outcome_min_gain": 1.5}, "outcome_min_gain")])
def test_outcome_config_errors_name_the_field(tmp_path, overrides, field):
    with pytest.raises(ValueError, match=field):
        outcome_config(tmp_path / "m", tmp_path / "o", **overrides)


def test_outcomes_split_over_two_processes_equal_one_process(tiny_run_dir, tmp_path):  # noqa: F811
    """Under `accelerate launch` with 2 CPU processes each decodes every other prompt (41: one is padding) and
    the gathered outcomes are the single process's, in the same order."""
    from helpers import accelerate_launch
    from safetensors.torch import load_file

    args = ["train-controller", "--env", "lm", "--model_run_dir", str(tiny_run_dir), "--tasks", "addition:1-2",
            "--controller", "outcome", "--first_token_pauses_only", "true", "--prompt_summary", "true",
            "--max_pauses", "3", "--max_pauses_total", "3", "--max_new_tokens", "4", "--outcome_prompts", "41",
            "--outcome_fit_steps", "20", "--progress", "false"]
    runs = {}
    for processes in (1, 2):
        out = tmp_path / f"p{processes}"
        done = accelerate_launch([*args, "--output_dir", str(out)], processes=processes, port=29531)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.count("outcome planner fitted on 41 prompts") == 1  # the main process prints
        assert json.loads((out / "result.json").read_text())["num_processes"] == processes
        runs[processes] = load_file(str(out / "state" / OUTCOMES))
    assert torch.equal(runs[1]["correct"], runs[2]["correct"])
    torch.testing.assert_close(runs[1]["features"], runs[2]["features"], rtol=1e-4, atol=1e-5)
