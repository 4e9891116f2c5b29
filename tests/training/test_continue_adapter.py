"""finetune --continue_adapter: a finished run's adapter trained further on a new mix, or a clear refusal."""

import pytest
import torch
from safetensors.torch import load_file

from adaptive_pause.modeling import AdaptivePauseModel, load_saved_lm
from adaptive_pause.tasks import get_task
from adaptive_pause.training.finetune import FinetuneConfig, run_finetune
from policies import FixedPauses

FAST = dict(max_steps=4, batch_size=16, warmup_steps=1, log_every=2, progress=False)
MIX = ["addition:1-1", "interrupt@reverse+cancel:1-1"]  # a new mix: the fixture's addition, two of its variants


def adapter(run) -> dict:
    return load_file(run / "adapter" / "adapter_model.safetensors")


def continued(source, out, **overrides):
    settings = dict(output_dir=str(out), base_model=str(source), tasks=MIX, max_pauses=2, lora_r=4,
                    continue_adapter=True, **FAST)
    return run_finetune(FinetuneConfig(**{**settings, **overrides}))


def test_a_continued_adapter_starts_from_the_saved_one(interrupt_run, tmp_path):
    """At a vanishing learning rate the continued run saves the adapter it loaded: it started from it, not from
    a new one (whose LoRA B would be zero), and it answers as the source run does."""
    source = interrupt_run / "ft"
    run = continued(source, tmp_path / "still", learning_rate=1e-12)
    before, after = adapter(source), adapter(run)
    assert before.keys() == after.keys() and any("trainable_tokens" in k for k in after)
    for name, value in before.items():
        assert torch.allclose(value, after[name], atol=1e-8), name
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in after.items())
    prompts = [e.prompt for e in get_task("addition:1-1").examples(8, 3)]
    answers = [AdaptivePauseModel.from_pretrained(r).generate(prompts, policy=FixedPauses(2), max_new_tokens=3,
                                                               max_pauses=2).texts for r in (source, run)]
    assert answers[0] == answers[1]


def test_a_continued_adapter_moves_and_the_base_stays(interrupt_run, tmp_path):
    source = interrupt_run / "ft"
    run = continued(source, tmp_path / "more", learning_rate=2e-3)
    before, after = adapter(source), adapter(run)
    assert any(not torch.equal(v, after[k]) for k, v in before.items())
    base_before, _ = load_saved_lm(source)
    base_after, _ = load_saved_lm(run)
    for (name, a), b in zip(base_before.state_dict().items(), base_after.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("case, field", [("no adapter", "continue_adapter"), ("rank", "lora_r"),
                                         ("alpha", "lora_alpha"), ("markers", "continue_adapter")])
def test_what_cannot_be_continued_is_refused_naming_the_field(tiny_run, interrupt_run, tmp_path, case, field):
    source, overrides = interrupt_run / "ft", {}
    if case == "no adapter":
        source = interrupt_run / "pre"
    elif case == "rank":
        overrides = dict(lora_r=8)
    elif case == "alpha":
        overrides = dict(lora_alpha=4.0)
    else:  # an adapter trained without the interruption markers cannot train their rows
        source = tiny_run / "ft"
    with pytest.raises(ValueError, match=f"^{field}: "):
        continued(source, tmp_path / "out", **overrides)
    if case != "markers":  # refused before the run directory is claimed
        assert not (tmp_path / "out").exists()


def test_a_countdown_cannot_be_added_to_a_continued_adapter():
    with pytest.raises(ValueError, match="^pause_countdown: "):
        FinetuneConfig(output_dir="x", base_model="y", continue_adapter=True, pause_countdown=True)
