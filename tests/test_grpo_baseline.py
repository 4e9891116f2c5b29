"""The TRL GRPO pause-as-token baseline (benchmarks/grpo_baseline.py) on tiny config-built models.

Under PauseRules a plain forward numbers pauses as the collators do and `<pause>` is unavailable at the
budget; cached steps are refused; the reward is `rewards.MetaReward` of the scored text and the counted
pauses; a few steps of TRL's own GRPOTrainer change the LoRA tensors, not the base.
The full benchmark is not run here.
"""

import sys
from pathlib import Path

import pytest
import torch

from adaptive_pause.modeling import pause_settings
from adaptive_pause.positions import position_ids

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import grpo_baseline  # noqa: E402

TASK = "addition:1-2"


def _sequences(tokenizer, pause_id):
    """Two left-padded rows with pause runs before and inside the answer: (input_ids, attention_mask)."""
    rows = [tokenizer("u0.50 12+34=", add_special_tokens=False)["input_ids"] + [pause_id] * 3 + [9, pause_id, 10],
            tokenizer("u1.00 1+2=", add_special_tokens=False)["input_ids"] + [pause_id] + [6]]
    width = max(map(len, rows))
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def test_pause_rules_number_like_the_collators_and_cap_the_pauses(tiny_lm):
    lm, tokenizer = tiny_lm
    settings = pause_settings(lm, tokenizer)
    assert settings.numbering == "slotted"
    ids, mask = _sequences(tokenizer, settings.pause_id)
    explicit = lm(input_ids=ids, attention_mask=mask,
                  position_ids=position_ids(ids, mask, settings.pause_id, "slotted", settings.pause_slots)).logits
    contiguous = lm(input_ids=ids, attention_mask=mask).logits
    rules = grpo_baseline.PauseRules(lm, settings.pause_id, "slotted", settings.pause_slots, max_pauses_total=3)
    try:
        hooked = lm(input_ids=ids, attention_mask=mask).logits
    finally:
        rules.remove()
    real = mask.bool()
    assert not torch.allclose(explicit[real], contiguous[real], atol=1e-4)  # the numbering matters here
    at_cap = ((ids == settings.pause_id) & real).long().cumsum(-1) >= 3  # row 0 after its third pause
    assert at_cap[0].any() and not at_cap[1].any()
    assert bool((hooked[..., settings.pause_id][at_cap] == grpo_baseline.CAPPED_PAUSE_LOGIT).all())
    other = torch.ones(hooked.shape[-1], dtype=torch.bool)
    other[settings.pause_id] = False
    torch.testing.assert_close(hooked[real][:, other], explicit[real][:, other])
    torch.testing.assert_close(hooked[~at_cap & real], explicit[~at_cap & real])


def test_generation_under_pause_rules_needs_whole_sequences(tiny_lm):
    lm, tokenizer = tiny_lm
    settings = pause_settings(lm, tokenizer)
    # A <pause> logit that dominates (registered before the rules, so it runs first): unconstrained,
    # the LM would pause at every step.
    boost = lm.get_output_embeddings().register_forward_hook(
        lambda module, inputs, logits: logits.index_add(-1, torch.tensor([settings.pause_id]),
                                                         torch.full(logits.shape[:-1] + (1,), 100.0)))
    rules = grpo_baseline.PauseRules(lm, settings.pause_id, "slotted", settings.pause_slots, max_pauses_total=2)
    batch = tokenizer(["u0.00 1+2="], add_special_tokens=False, return_tensors="pt")
    try:
        out = lm.generate(**batch, do_sample=False, max_new_tokens=6, use_cache=False,
                          pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        completion = out[0, batch["input_ids"].shape[1]:]
        assert int((completion == settings.pause_id).sum()) == 2  # the budget, then emits only
        with pytest.raises(ValueError, match="use_cache=False"):
            lm.generate(**batch, do_sample=False, max_new_tokens=3, use_cache=True,
                        pad_token_id=tokenizer.pad_token_id)
    finally:
        rules.remove()
        boost.remove()


def test_meta_reward_function_is_the_rewards_meta_reward(tiny_lm):
    from rewards import MetaReward

    _, tokenizer = tiny_lm
    pause_id = tokenizer.convert_tokens_to_ids("<pause>")
    fn = grpo_baseline.MetaRewardFunction([TASK], pause_id, max_pauses_total=4)
    completion_ids = [[pause_id, pause_id, 9, 9, 2], [9, 8, 2], [pause_id] * 4 + [2]]
    got = fn(completions=["44", "43", ""], completion_ids=completion_ids, urgency=[0.5, 0.0, 1.0],
             answer=["44", "44", "44"], task=[TASK] * 3, prompts=["p"] * 3)
    want = MetaReward(4).reward(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([2, 0, 4]), torch.tensor([0.5, 0.0, 1.0]))
    assert got == pytest.approx(want.tolist())
    assert got == pytest.approx([0.25, 0.0, -1.0])
    assert fn.episodes == 3


def test_urgency_prefix_and_dataset():
    assert grpo_baseline.urgency_prompt("1+2=", 0.25) == "u0.25 1+2="
    with pytest.raises(ValueError, match="urgency"):
        grpo_baseline.urgency_prompt("1+2=", 1.5)
    data = grpo_baseline.grpo_dataset([TASK], 50, seed=0)
    assert set(data.column_names) == {"prompt", "urgency", "answer", "task"}
    for row in data:
        assert row["prompt"].startswith(f"u{row['urgency']:.2f} ") and 0 <= row["urgency"] <= 1


def test_a_few_grpo_steps_train_the_lora_only(tiny_lm, tmp_path):
    from peft import LoraConfig

    lm, tokenizer = tiny_lm
    pause_id = pause_settings(lm, tokenizer).pause_id
    base_before = {name: p.detach().clone() for name, p in lm.named_parameters()}
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    reward = grpo_baseline.MetaRewardFunction([TASK], pause_id, max_pauses_total=4)
    trainer, rules = grpo_baseline.build_grpo_trainer(
        lm, tokenizer, lora, grpo_baseline.grpo_dataset([TASK], 64, seed=0), reward, str(tmp_path), budget_s=600,
        max_completion_length=7, max_steps=3, per_device_train_batch_size=8, num_generations=4, learning_rate=1e-2,
        logging_steps=1, seed=0)
    model = trainer.model
    trained = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n for n in trained)
    trainer.train()
    rules.remove()
    assert trainer.state.global_step == 3
    assert reward.episodes == 3 * 8  # TRL scored every completion it generated
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, trained[n])]
    assert {n for n in trained if "lora_B" in n} <= set(changed)  # B starts at 0: any update moves it
    base_after = dict(model.get_base_model().named_parameters())
    for name, before in base_before.items():
        if name in base_after and not base_after[name].requires_grad:
            assert torch.equal(base_after[name], before), name


def test_budget_must_be_positive(tiny_lm, tmp_path):
    from peft import LoraConfig

    lm, tokenizer = tiny_lm
    reward = grpo_baseline.MetaRewardFunction([TASK], 4, max_pauses_total=4)
    with pytest.raises(ValueError, match="budget_s"):
        grpo_baseline.build_grpo_trainer(lm, tokenizer, LoraConfig(r=2, task_type="CAUSAL_LM"),
                                         grpo_baseline.grpo_dataset([TASK], 8, 0), reward, str(tmp_path),
                                         budget_s=0, max_completion_length=4)
