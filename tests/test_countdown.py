"""The pause countdown: the whole-sequence rule in closed form; collators = decode loop = teacher-forced pass (as
for position numbering); a saved model keeps the setting through every loader; training leaves row 0 at zero."""

import pytest
import torch
from helpers import PROMPTS, opinionated_lm, tiny_model

from adaptive_pause.countdown import countdown_cap, countdown_module, countdown_values, enable_countdown
from adaptive_pause.decoding import DecodeConfig, DecodeSession, decode, run_policy
from adaptive_pause.decoding.replay import source_columns, teacher_forced
from adaptive_pause.modeling import AdaptivePauseModel, load_saved_lm, pause_settings, save_lm
from adaptive_pause.positions import position_ids
from adaptive_pause.tasks import Example
from adaptive_pause.training.collators import FinetuneCollator
from policies import FixedPauses, PauseControllerHead

P = 99  # a pause id for the closed-form cases


def test_countdown_values_in_closed_form():
    ids = torch.tensor([[1, 2, P, P, P, 3, P, 4], [0, 0, 1, P, P, P, P, P]])
    mask = torch.tensor([[1] * 8, [0, 0, 1, 1, 1, 1, 1, 1]])
    assert countdown_values(ids, mask, P, cap=8).tolist() == [[0, 0, 3, 2, 1, 0, 1, 0], [0, 0, 0, 5, 4, 3, 2, 1]]
    assert countdown_values(ids, mask, P, cap=2).tolist()[1] == [0, 0, 0, 2, 2, 2, 2, 1]  # capped at the max
    # a masked column inside a run (a chunk's padding) is skipped, as position numbering skips it
    gap = torch.tensor([[1, P, 0, P, 2]]), torch.tensor([[1, 1, 0, 1, 1]])
    assert countdown_values(gap[0], gap[1], P, cap=8).tolist() == [[0, 2, 0, 1, 0]]


def countdown_lm(numbering: str, seed: int = 1):
    """An opinionated tiny LM with a countdown table large enough to change its outputs (row 0 stays 0)."""
    model, tokenizer = opinionated_lm(numbering, seed=seed)
    weight = torch.randn(9, 32, generator=torch.Generator().manual_seed(seed)) * 0.5
    weight[0] = 0
    enable_countdown(model, 8, weight)
    return model, tokenizer


def _decode(model, tokenizer, policy, config, urgency=0.0, seed=None):
    s = pause_settings(model, tokenizer)
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    return decode(model, tokenizer, ids, policy, urgency, config, s.pause_id, s.numbering, s.pause_slots, seed=seed)


@pytest.mark.parametrize("numbering", ["slotted", "contiguous"])
@pytest.mark.parametrize("chunk", [False, True])
def test_fixed_k_countdown_is_exact_and_equals_the_collators(numbering, chunk):
    model, tokenizer = countdown_lm(numbering)
    s = pause_settings(model, tokenizer)
    k = 3
    config = DecodeConfig(max_new_tokens=4, max_pauses=4, first_token_pauses_only=True, chunk_pauses=chunk)
    result = _decode(model, tokenizer, FixedPauses(k), config)
    assert result.forward_passes == (1 + 3 if chunk else k + 3)  # the k pauses in one pass when chunked
    # the loop's countdown is the whole-sequence rule on what it wrote: k, ..., 1 then 0
    assert torch.equal(result.countdown, countdown_values(result.sequences, result.attention_mask, s.pause_id, 8))
    assert result.countdown.max() == k
    # ... and the collators' on prompt + k pauses + the answer the loop produced (right-padded there)
    answers = tokenizer.batch_decode(result.answer_ids, skip_special_tokens=True)
    collate = FinetuneCollator(tokenizer, s.pause_id, s.numbering, s.pause_slots, max_pauses=k)
    batch = collate([Example(p, a, 1, "t") for p, a in zip(PROMPTS, answers)], None, k=k)
    for row in range(len(PROMPTS)):
        loop = result.countdown[row][result.attention_mask[row].bool()]
        collated = batch.countdown[row][batch.attention_mask[row].bool()]
        ended_by_eos = result.finish_reasons[row] == "eos"
        assert torch.equal(loop, collated[: len(loop)]) and (ended_by_eos or len(loop) <= len(collated))


@pytest.mark.parametrize("numbering", ["slotted", "contiguous"])
def test_teacher_forced_pass_with_the_loops_countdown_reproduces_the_loop(numbering):
    """A per-step controller (countdown 1 at each pause): the teacher-forced replay fed the recorded countdown
    gives the loop's features and logits; without it, it does not (the countdown reaches the model)."""
    model, tokenizer = countdown_lm(numbering)
    s = pause_settings(model, tokenizer)
    torch.manual_seed(0)
    head = PauseControllerHead(32, initial_pause_prob=0.6)
    config = DecodeConfig(max_new_tokens=4, max_pauses=3, controller_greedy=False)
    session = DecodeSession(model, tokenizer, [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS],
                            torch.linspace(0, 1, 4), config, s.pause_id, s.numbering, s.pause_slots, seed=2)
    seen = [session.logits.clone()]
    result = run_policy(session, head, generator=torch.Generator().manual_seed(3),
                        on_step=lambda x: seen.append(x.logits.clone()))
    trace = result.trace
    pauses = trace.valid & (trace.actions == 1)
    assert pauses.any() and (trace.countdown[pauses] == 1).all() and (trace.countdown[~pauses] == 0).all()
    steps = trace.valid.shape[1]
    prompt_len = result.sequences.shape[1] - steps
    positions = position_ids(result.sequences, result.attention_mask, s.pause_id, s.numbering, s.pause_slots)
    columns = source_columns(result.attention_mask, prompt_len, steps)
    with torch.no_grad():
        features, logits = teacher_forced(model, result.sequences, result.attention_mask, positions, columns,
                                          s.pause_id, countdown=result.countdown)
        plain, _ = teacher_forced(model, result.sequences, result.attention_mask, positions, columns, s.pause_id)
    valid = trace.valid
    torch.testing.assert_close(features[valid], trace.features[valid], atol=2e-5, rtol=0)
    loop_logits = torch.stack(seen[:steps], 1)
    finite = torch.isfinite(loop_logits)
    torch.testing.assert_close(logits[valid][finite[valid]], loop_logits[valid][finite[valid]], atol=1e-4, rtol=0)
    after_pause = torch.zeros_like(valid)
    after_pause[:, 1:] = pauses[:, :-1] & valid[:, 1:]
    assert (features[after_pause] - trace.features[after_pause]).abs().max() < 2e-5
    assert (plain[after_pause] - features[after_pause]).abs().max() > 1e-2  # the countdown changed the model


def test_saved_model_keeps_the_countdown(tmp_path):
    model, tokenizer = countdown_lm("slotted")
    weight = countdown_module(model).weight.detach().clone()
    save_lm(model, tokenizer, tmp_path / "m")
    loaded, _ = load_saved_lm(tmp_path / "m")
    assert countdown_cap(loaded) == 8 and loaded.config.pause_countdown
    assert torch.equal(countdown_module(loaded).weight, weight)
    AdaptivePauseModel(model, tokenizer).save_pretrained(tmp_path / "run")
    again = AdaptivePauseModel.from_pretrained(tmp_path / "run")
    assert torch.equal(countdown_module(again.lm).weight, weight)
    plain, tok = opinionated_lm("slotted")
    save_lm(plain, tok, tmp_path / "plain")
    assert countdown_module(load_saved_lm(tmp_path / "plain")[0]) is None  # off by default: runs load unchanged
    (tmp_path / "m" / "pause_countdown.safetensors").unlink()
    with pytest.raises(ValueError, match="pause_countdown.safetensors: missing"):
        load_saved_lm(tmp_path / "m")


def test_pretrain_and_finetune_with_the_countdown(tmp_path):
    from adaptive_pause.training.finetune import FinetuneConfig, run_finetune
    from adaptive_pause.training.pretrain import PretrainConfig, run_pretrain

    fast = dict(max_steps=4, batch_size=16, warmup_steps=1, log_every=2, progress=False)
    run_pretrain(PretrainConfig(output_dir=str(tmp_path / "pre"), tasks=["addition:1-2"], pause_placement="answer",
                                max_pauses=4, model=tiny_model(pause_countdown=True), **fast))
    pre, _ = load_saved_lm(tmp_path / "pre")
    table = countdown_module(pre).weight
    assert table[0].abs().max() == 0 and table[1:5].abs().max() > 0  # trained, and the zero row stays zero
    run_finetune(FinetuneConfig(output_dir=str(tmp_path / "ft"), base_model=str(tmp_path / "pre"),
                                tasks=["addition:1-2"], max_pauses=4, lora_r=4, **fast))
    ft = AdaptivePauseModel.from_pretrained(tmp_path / "ft")
    tuned = countdown_module(ft.lm)(torch.arange(9))  # the adapter's copy (peft modules_to_save)
    assert not torch.equal(tuned, table) and tuned[0].abs().max() == 0
    out = ft.generate(["12+34="], urgency=0.0, policy=FixedPauses(2), max_new_tokens=4, max_pauses=4)
    assert out.result.countdown.max() == 2
