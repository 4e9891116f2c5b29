"""Joint LoRA + controller PPO (`train_adapter: true`) on a tiny finetuned run built here.

Teacher-forced token log-probs and features equal the decode loop's; the update starts at ratio 1 and its
gradient reaches LoRA and the head but not the base; 2 iterations change the LoRA tensors with a finite KL
>= 0 while the frozen path leaves them alone; resume is exact; 2 processes keep the adapter replicas equal.
"""

import json
import math

import pytest
import torch
from helpers import accelerate_launch, assert_same_state
from safetensors.torch import load_file

from adaptive_pause.decoding.replay import teacher_forced
from adaptive_pause.ppo import algorithm as ppo_algorithm, trainer as ppo_trainer, sources as ppo_sources
from adaptive_pause.ppo.config import PPOConfig
from adaptive_pause.decoding import DecodeConfig, DecodeSession, run_policy
from adaptive_pause.modeling import AdaptivePauseModel, PauseSettings
from policies import PauseControllerHead

FAST = dict(max_steps=6, batch_size=16, warmup_steps=1, log_every=3, progress=False)


@pytest.fixture
def finetuned(tiny_run):
    """The shared tiny pretrain -> LoRA finetune run (slotted numbering): model/ + adapter/ (LoRA + <pause> row)."""
    return tiny_run


def joint_config(run_dir, output_dir, **overrides) -> PPOConfig:
    fields = dict(env="lm", model_run_dir=str(run_dir), tasks=["addition:1-2"], output_dir=str(output_dir),
                  max_pauses=3, max_new_tokens=4, iterations=2, episodes_per_iteration=16, update_epochs=2,
                  num_minibatches=2, checkpoint_every=2, progress=False, train_adapter=True,
                  adapter_learning_rate=1e-3, initial_pause_prob=0.5, anneal_lr=False)
    fields.update(overrides)
    return PPOConfig(**fields)


def lora_tensors(path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(str(path / "adapter" / "adapter_model.safetensors")).items() if "lora_" in k}


@pytest.mark.parametrize("numbering,summary", [("slotted", False), ("contiguous", False), ("slotted", True)])
def test_teacher_forced_token_log_probs_and_features_equal_the_decode_loops(finetuned, numbering, summary):
    model = AdaptivePauseModel.from_pretrained(finetuned / "ft")
    assert model.settings.numbering == "slotted" and hasattr(model.lm, "disable_adapter")
    settings = PauseSettings(model.settings.pause_id, numbering, model.settings.pause_slots)
    torch.manual_seed(0)
    policy = PauseControllerHead(model.hidden_size, initial_pause_prob=0.5, prompt_summary=summary)
    config = DecodeConfig(max_new_tokens=5, max_pauses=3, do_sample=True, temperature=1.0, controller_greedy=False,
                          prompt_summary=summary)
    prompts = ["1+2=", "12+34=", "5+67=", "88+9=", "3+4="]
    session = DecodeSession(model.lm, model.tokenizer, model.encode(prompts), torch.linspace(0, 1, 5), config,
                            settings.pause_id, settings.numbering, settings.pause_slots, seed=3)
    seen = [session.logits.clone()]  # (batch, vocab) before each step: what the loop sampled emits from
    result = run_policy(session, policy, generator=torch.Generator().manual_seed(4),
                        on_step=lambda s: seen.append(s.logits.clone()))
    trace = result.trace
    steps = trace.valid.shape[1]
    assert (trace.actions[trace.valid] == 1).any(), "pauses between answer tokens exercise the numbering"
    assert not trace.valid.all(), "rows finishing at different steps leave masked columns"
    loop = torch.stack(seen[:steps], 1).log_softmax(-1).gather(-1, trace.tokens[..., None]).squeeze(-1)

    tokens = ppo_sources.token_trace(model.lm, result, settings)
    emitted = trace.valid & (trace.actions == 0)
    assert torch.equal(tokens.emitted, emitted)
    torch.testing.assert_close(tokens.log_probs[emitted], loop[emitted], atol=2e-5, rtol=0)
    assert (tokens.log_probs[~emitted] == 0).all() and (tokens.ref_log_probs[~emitted] == 0).all()
    assert not torch.allclose(tokens.ref_log_probs[emitted], tokens.log_probs[emitted])  # the adapter matters
    with torch.no_grad():
        hidden, _ = teacher_forced(model.lm, tokens.sequences, tokens.attention_mask, tokens.position_ids,
                                       tokens.source_columns, settings.pause_id, prompt_summary=summary)
    assert hidden.shape[-1] == model.hidden_size * (2 if summary else 1)
    torch.testing.assert_close(hidden[trace.valid], trace.features[trace.valid], atol=2e-5, rtol=0)


def test_joint_update_starts_at_ratio_one_and_reaches_lora_and_head_only(finetuned, tmp_path):
    config = joint_config(finetuned / "ft", tmp_path / "unused")
    reward = ppo_trainer.build_reward(config)
    source, _ = ppo_trainer.build_source(config, reward, torch.device("cpu"))
    names = [name for name, _ in source.adapter_parameters()]
    assert any("lora_A" in n for n in names) and any("lora_B" in n for n in names)
    assert any("trainable_tokens" in n for n in names)  # the <pause> row
    torch.manual_seed(0)
    policy = ppo_trainer.build_policy(config, source.hidden_size)
    rollout = source.collect(policy, torch.linspace(0, 1, 12), torch.Generator().manual_seed(0))
    rollout.validate()
    assert rollout.tokens is not None and rollout.tokens.emitted.any() and rollout.undecided.any()
    batch = ppo_algorithm.make_batch(rollout, reward, 1.0, 0.95)
    assert isinstance(batch, ppo_algorithm.EpisodeBatch) and len(batch) == 12
    # forced emits are trained on (their token part), planned/padding steps are not
    assert torch.equal(rollout.trained, rollout.valid)
    torch.testing.assert_close(rollout.step_rewards(reward).sum(1), rollout.episode_rewards(reward))

    evaluator = ppo_algorithm.JointEvaluation(policy, source.model.lm, source.model.settings.pause_id)
    loss, stats = ppo_algorithm.joint_loss(evaluator, batch, config)
    assert float(stats["approx_kl"]) < 1e-8 and float(stats["clipfrac"]) == 0  # old log-probs = the acting policy's
    assert math.isfinite(float(stats["kl_ref"])) and float(stats["kl_ref"]) >= 0
    loss.backward()
    for name, param in source.model.lm.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and torch.isfinite(param.grad).all(), name
        else:
            assert param.grad is None, name  # the base stays frozen
    assert any(float(p.grad.abs().sum()) > 0 for n, p in source.model.lm.named_parameters() if "lora_A" in n)
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in policy.parameters())


def test_train_adapter_changes_lora_keeps_kl_finite_and_frozen_path_does_not(finetuned, tmp_path):
    before = lora_tensors(finetuned / "ft")
    result = ppo_trainer.train(joint_config(finetuned / "ft", tmp_path / "joint"))
    after = lora_tensors(tmp_path / "joint")
    assert after.keys() == before.keys() and len(before) > 0
    assert all(not torch.equal(after[k], before[k]) for k in before), "every LoRA A/B tensor moves"
    metrics = result["metrics"]
    assert math.isfinite(metrics["losses/kl_ref"]) and metrics["losses/kl_ref"] >= 0
    state = load_file(str(tmp_path / "joint" / "state" / "adapter.safetensors"))
    loaded = AdaptivePauseModel.from_pretrained(tmp_path / "joint")  # model/ + the trained adapter/ + controller/
    current = dict(loaded.lm.named_parameters())
    assert all(torch.equal(current[name], value) for name, value in state.items())
    assert loaded.policy is not None and len(loaded.generate(["1+2="], urgency=0.5, max_new_tokens=4,
                                                             max_pauses=3).texts) == 1

    ppo_trainer.train(joint_config(finetuned / "ft", tmp_path / "frozen", train_adapter=False))
    frozen = lora_tensors(tmp_path / "frozen")
    assert all(torch.equal(frozen[k], before[k]) for k in before)
    assert not (tmp_path / "frozen" / "state" / "adapter.safetensors").exists()


def test_joint_two_then_resume_two_equals_four_straight(finetuned, tmp_path):
    ppo_trainer.train(joint_config(finetuned / "ft", tmp_path / "straight", iterations=4))
    ppo_trainer.train(joint_config(finetuned / "ft", tmp_path / "resumed", iterations=2))
    ppo_trainer.train(joint_config(finetuned / "ft", tmp_path / "resumed", iterations=4, resume=True))
    assert_same_state(tmp_path / "straight", tmp_path / "resumed",
                      ("policy.safetensors", "adapter.safetensors", "optimizer.safetensors", "rng_0.safetensors"))
    optimizer = json.loads((tmp_path / "resumed" / "state" / "optimizer.json").read_text())
    assert any("lora_A" in name for name in optimizer["state"])  # Adam moments of the LoRA tensors are saved
    assert [g["lr"] for g in optimizer["param_groups"]] == [3e-3, 1e-3]


def test_joint_config_errors_name_the_field(finetuned, tmp_path):
    with pytest.raises(ValueError, match="train_adapter: needs env 'lm'"):
        PPOConfig(train_adapter=True)
    with pytest.raises(ValueError, match="kl_coef"):
        PPOConfig(kl_coef=-0.1)
    with pytest.raises(ValueError, match="adapter_learning_rate"):
        PPOConfig(adapter_learning_rate=0.0)
    with pytest.raises(ValueError, match="train_adapter: .* has no adapter/"):
        ppo_trainer.train(joint_config(finetuned / "pre", tmp_path / "no_adapter"))
    with pytest.raises(ValueError, match="num_minibatches"):
        ppo_trainer.train(joint_config(finetuned / "ft", tmp_path / "few", episodes_per_iteration=2, num_minibatches=4))


def test_joint_training_under_accelerate_launch_with_two_processes(finetuned, tmp_path):
    run_dir = tmp_path / "ddp"
    done = accelerate_launch(["train-controller", "--env", "lm", "--model_run_dir",
               str(finetuned / "ft"), "--tasks", "addition:1-2", "--output_dir", str(run_dir), "--iterations", "2",
               "--episodes_per_iteration", "16", "--update_epochs", "2", "--num_minibatches", "2", "--max_pauses",
               "3", "--max_new_tokens", "4", "--progress", "false", "--train_adapter", "true",
               "--adapter_learning_rate", "1e-3",
               # and the options: the head reads the prompt summary; RLOO over pairs of episodes per prompt
               "--prompt_summary", "true", "--advantage", "rloo", "--group_size", "2"], port=29531)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["num_processes"] == 2 and result["trainer"]["episodes"] == 2 * 16
    assert result["replicas_in_sync"]  # head and adapter: LoRA gradients were all-reduced
    assert math.isfinite(result["metrics"]["losses/kl_ref"]) and result["metrics"]["losses/kl_ref"] >= 0
    before, after = lora_tensors(finetuned / "ft"), lora_tensors(run_dir)
    assert all(not torch.equal(after[k], before[k]) for k in before)
