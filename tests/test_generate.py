"""AdaptivePauseModel: generate() API, input validation, run-dir round trip (LoRA + controller), the CLI."""

import math

import pytest
import torch
from helpers import PROMPTS, decisive_head, opinionated_model

from adaptive_pause.cli import main as cli_main
from adaptive_pause.modeling import AdaptivePauseModel
from policies import FixedPauses, PauseControllerHead


@pytest.fixture(scope="module")
def model():
    m = opinionated_model("slotted")
    m.policy = decisive_head(m.hidden_size)
    return m


def test_generate_returns_texts_pauses_and_steps(model):
    out = model.generate(PROMPTS, urgency=[0.0, 0.3, 0.6, 1.0], max_new_tokens=5, max_pauses=3)
    assert len(out.texts) == len(PROMPTS) == len(out.answer_ids) == len(out.pauses) == len(out.steps)
    for text, ids, pauses, per_token, steps in zip(out.texts, out.answer_ids, out.pauses, out.pauses_per_token,
                                                   out.steps):
        assert text == model.tokenizer.decode(ids, skip_special_tokens=True)
        assert sum(per_token) == pauses and all(0 <= p <= 3 for p in per_token)
        assert steps == pauses + len(per_token)
    assert out.forward_passes == max(out.steps) - 1  # one token per step; the last step needs no forward
    fixed = model.generate(PROMPTS, policy=FixedPauses(2), max_new_tokens=4, max_pauses=3)
    assert fixed.pauses == [2] * len(PROMPTS)


@pytest.mark.parametrize("kwargs, field", [
    (dict(urgency=math.nan), "urgency"),
    (dict(urgency=-0.1), "urgency"),
    (dict(urgency=1.5), "urgency"),
    (dict(urgency=[0.1, 0.2]), "urgency"),
    (dict(prompts=["1+1=", ""]), r"prompts\[1\]"),
    (dict(prompts=[]), "prompts"),
    (dict(prompts=["1" * 600]), "prompts"),
    (dict(max_pauses=-1), "max_pauses"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(policy=PauseControllerHead(16)), "hidden size"),
])
def test_bad_input_raises_value_error_naming_the_field(model, kwargs, field):
    call = dict(prompts=PROMPTS, urgency=0.3, max_new_tokens=4, max_pauses=2)
    call.update(kwargs)
    with pytest.raises(ValueError, match=field):
        model.generate(**call)


def test_policy_with_wrong_hidden_size_is_rejected_at_construction(model):
    with pytest.raises(ValueError, match="hidden size"):
        AdaptivePauseModel(model.lm, model.tokenizer, PauseControllerHead(model.hidden_size + 8))


def test_run_dir_round_trip_with_lora_adapter_and_controller(tmp_path, model):
    from peft import LoraConfig, get_peft_model

    base = opinionated_model("slotted", seed=2)
    pause_id = base.settings.pause_id
    lm = get_peft_model(base.lm, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                            trainable_token_indices=[pause_id], task_type="CAUSAL_LM"))
    torch.manual_seed(0)
    with torch.no_grad():  # a non-trivial adapter: LoRA B and the pause row move away from their init
        for name, p in lm.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.3)
    apm = AdaptivePauseModel(lm.eval(), base.tokenizer, decisive_head(base.hidden_size, seed=3))
    before = apm.generate(PROMPTS, urgency=0.4, max_new_tokens=6, max_pauses=4)
    apm.save_pretrained(tmp_path / "run")
    assert {p.name for p in (tmp_path / "run").iterdir()} >= {"model", "adapter", "controller"}
    loaded = AdaptivePauseModel.from_pretrained(tmp_path / "run")
    after = loaded.generate(PROMPTS, urgency=0.4, max_new_tokens=6, max_pauses=4)
    assert after.answer_ids == before.answer_ids and after.pauses_per_token == before.pauses_per_token
    assert sum(before.pauses) > 0
    merged = AdaptivePauseModel.from_pretrained(tmp_path / "run", merge_adapter=True)
    assert merged.generate(PROMPTS, urgency=0.4, max_new_tokens=6, max_pauses=4).answer_ids == before.answer_ids


def test_from_pretrained_rejects_a_controller_of_another_hidden_size(tmp_path, model):
    AdaptivePauseModel(model.lm, model.tokenizer, None).save_pretrained(tmp_path / "run")
    from policies import save_policy

    save_policy(PauseControllerHead(model.hidden_size * 2), tmp_path / "run" / "controller")
    with pytest.raises(ValueError, match="hidden size"):
        AdaptivePauseModel.from_pretrained(tmp_path / "run")


def test_cli_generate_prints_each_answer_with_its_pause_count(tmp_path, model, capsys):
    model.save_pretrained(tmp_path / "run")
    assert cli_main(["generate", str(tmp_path / "run"), "--urgency", "0.2", "--max_new_tokens", "4",
                     "--policy", "fixed:2", "1+2=", "34+5="]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("1+2=") and all("pauses=2" in line for line in lines)
    assert cli_main(["generate", str(tmp_path / "run"), "--urgency", "0.9", "--max_new_tokens", "3", "--json",
                     "7+7="]) == 0  # the saved controller
    assert '"pauses":' in capsys.readouterr().out


def test_cli_generate_in_the_documented_order_and_per_prompt_urgency(tmp_path, model, capsys):
    model.save_pretrained(tmp_path / "run")
    assert cli_main(["generate", str(tmp_path / "run"), "--urgency", "0.2", "1+2=", "34+5=", "--policy", "fixed:1",
                     "--max_new_tokens", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line[:4] for line in lines] == ["1+2=", "34+5"] and all("pauses=1" in line for line in lines)
    assert cli_main(["generate", str(tmp_path / "run"), "--urgency", "0.1,0.9", "1+2=", "34+5=",
                     "--max_new_tokens", "3"]) == 0
    assert cli_main(["generate", str(tmp_path / "run"), "--urgency", "0.1,0.9", "1+2="]) == 2
    assert "urgency: got 2 values for a batch of 1" in capsys.readouterr().err
    assert cli_main(["generate", str(tmp_path / "run"), "--urgency", "fast", "1+2="]) == 2
    assert "error: urgency: expected a number" in capsys.readouterr().err
