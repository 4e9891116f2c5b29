"""Urgency from the prompt: the estimator head and its files, the phrase bank, `urgency_adjust`, `generate` with
"auto" (alone = batched, mixed rows, errors), the CLI, and a tiny `train-urgency` run (with an exact resume)."""

import json
import math

import pytest
import torch
from helpers import PROMPTS, decisive_head, opinionated_model

from adaptive_pause.cli import main as cli_main
from adaptive_pause.modeling import AdaptivePauseModel
from adaptive_pause.tasks import get_task
from adaptive_pause.tasks.urgency_phrases import LEVELS, SPLITS, TEMPLATES, UrgencyPhraseBank, level_urgency
from adaptive_pause.tokens import CHARACTERS
from adaptive_pause.urgency import make_adjust, parse_adjust
from policies import UrgencyEstimator, load_estimator, save_estimator


def _estimator(model, seed=0, **kwargs):
    torch.manual_seed(seed)
    est = UrgencyEstimator(model.hidden_size, width=16, vocab_size=len(model.tokenizer),
                           pause_id=model.settings.pause_id, **kwargs)
    with torch.no_grad():  # spread the untrained outputs, so that prompts get visibly different estimates
        est.mlp[4].weight.normal_(0, 2.0)
    return est.eval()


@pytest.fixture(scope="module")
def model():
    m = opinionated_model("slotted")
    m.policy = decisive_head(m.hidden_size)
    m.urgency_estimator = _estimator(m)
    return m


# ---- the estimator head ------------------------------------------------------------------------------------------
def test_estimator_pools_only_real_positions_and_outputs_in_unit_interval():
    est = UrgencyEstimator(4, width=8).eval()
    states = torch.randn(2, 5, 4)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    padded = states.clone()
    padded[0, :2] = 1e6  # padding must not reach the mean or the max
    pooled = UrgencyEstimator.pool(padded, mask)
    assert torch.allclose(pooled[0, :4], states[0, 2:].mean(0)) and torch.allclose(pooled[0, 4:], states[0, 2:].amax(0))
    u = est(padded, mask)
    assert u.shape == (2,) and bool(((u > 0) & (u < 1)).all())


def test_estimator_save_load_round_trip(tmp_path):
    est = UrgencyEstimator(8, width=16, layer=-2, dropout=0.2, vocab_size=105, pause_id=4).eval()
    save_estimator(est, tmp_path / "urgency", extra={"levels": 7})
    back = load_estimator(tmp_path / "urgency", hidden_size=8, vocab_size=105, pause_id=4)
    assert back.config() == est.config()
    states, mask = torch.randn(3, 6, 8), torch.ones(3, 6)
    assert torch.equal(back(states, mask), est(states, mask))
    assert json.loads((tmp_path / "urgency" / "config.json").read_text())["extra"] == {"levels": 7}
    save_estimator(est, tmp_path / "urgency")  # an overwrite leaves one valid directory, no temporaries
    assert sorted(p.name for p in tmp_path.iterdir()) == ["urgency"]


def test_conv_estimator_ignores_padding_and_round_trips(tmp_path):
    torch.manual_seed(0)
    est = UrgencyEstimator(4, width=8, pooling="conv", kernel=3, vocab_size=50, pause_id=3).eval()
    states = torch.randn(1, 5, 4)
    padded = torch.cat([torch.full((1, 3, 4), 1e6), states], dim=1)  # left padding, as the prefill's
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1]])
    alone = est(states, torch.ones(1, 5))
    assert torch.allclose(est(padded, mask), alone, atol=1e-6)
    # Features of different widths join by left padding and give each row what it gives alone.
    joined = UrgencyEstimator.pad_features([est.features(states, torch.ones(1, 5)), est.features(padded, mask)])
    assert joined.shape == (2, 8, 5)
    assert torch.allclose(torch.sigmoid(est.logits_from_features(joined)), alone.expand(2), atol=1e-6)
    save_estimator(est, tmp_path / "u")
    back = load_estimator(tmp_path / "u", hidden_size=4, vocab_size=50, pause_id=3)
    assert back.config() == est.config() and back.pooling == "conv" and torch.equal(back(states, torch.ones(1, 5)),
                                                                                       alone)
    with pytest.raises(ValueError, match="pooling: must be one of"):
        UrgencyEstimator(4, pooling="attention")
    with pytest.raises(ValueError, match="kernel: must be an odd integer"):
        UrgencyEstimator(4, pooling="conv", kernel=4)


def test_mean_classifier_over_several_layers_standardises_ignores_padding_and_round_trips(tmp_path):
    torch.manual_seed(0)
    est = UrgencyEstimator(4, layer=[0, 2], pooling="mean", classes=LEVELS, vocab_size=50, pause_id=3).eval()
    hidden = tuple(torch.randn(3, 5, 4) * (1 + 10 * i) for i in range(3))  # embeddings + 2 layers, unequal scales
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1]])
    states = est.select(hidden)
    assert states.shape == (3, 5, 8) and torch.equal(states[..., 4:], hidden[2])
    features = est.features(states, mask)
    assert torch.allclose(features[0], states[0, 2:].mean(0))  # the mean of the real positions only
    est.standardize(features)
    z = (features - est.center) / est.scale
    assert torch.allclose(z.mean(0), torch.zeros(8), atol=1e-5) and torch.allclose(z.std(0), torch.ones(8), atol=1e-4)
    logits = est.logits_from_features(features)
    assert logits.shape == (3, LEVELS)
    expected = (logits.softmax(-1) * torch.arange(LEVELS) / (LEVELS - 1)).sum(-1)
    assert torch.allclose(est(states, mask), expected, atol=1e-6)  # the expected level's urgency
    padded = states.clone()
    padded[0, :2] = 1e6
    assert torch.allclose(est(padded, mask), est(states, mask))
    save_estimator(est, tmp_path / "u")
    back = load_estimator(tmp_path / "u", hidden_size=4, vocab_size=50, pause_id=3)
    assert back.config() == est.config() and back.config()["layer"] == [0, 2] and back.classes == LEVELS
    assert torch.equal(back.center, est.center) and torch.equal(back(states, mask), est(states, mask))
    with pytest.raises(ValueError, match="layer: the LM has 3 hidden states"):
        UrgencyEstimator(4, layer=[0, 3]).select(hidden)
    with pytest.raises(ValueError, match="layer: lists a hidden state twice"):
        UrgencyEstimator(4, layer=[1, 1])
    with pytest.raises(ValueError, match="classes: must be None"):
        UrgencyEstimator(4, classes=1)
    with pytest.raises(ValueError, match="only the 'mean' head standardises"):
        UrgencyEstimator(4).standardize(features)


@pytest.mark.parametrize("facts, message", [
    ({"hidden_size": 16}, "hidden_size: estimator=8, model=16"),
    ({"hidden_size": 8, "vocab_size": 200}, "tokenizer vocab size: estimator=105, model=200"),
    ({"hidden_size": 8, "pause_id": 7}, "<pause> id: estimator=4, model=7"),
])
def test_estimator_refuses_another_base(tmp_path, facts, message):
    save_estimator(UrgencyEstimator(8, vocab_size=105, pause_id=4), tmp_path / "u")
    with pytest.raises(ValueError, match="trained on another base") as err:
        load_estimator(tmp_path / "u", **facts)
    assert message in str(err.value)


def test_estimator_bad_files_and_arguments_raise_value_errors(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        load_estimator(tmp_path)
    save_estimator(UrgencyEstimator(8), tmp_path / "u")
    (tmp_path / "u" / "urgency.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="corrupt or mismatched urgency estimator weights"):
        load_estimator(tmp_path / "u")
    with pytest.raises(ValueError, match="hidden_size"):
        UrgencyEstimator(0)
    with pytest.raises(ValueError, match="dropout"):
        UrgencyEstimator(8, dropout=1.0)


# ---- the phrase bank ---------------------------------------------------------------------------------------------
def test_phrasings_written_apart_are_rendered_by_no_template_and_cover_every_level():
    import re

    from adaptive_pause.tasks.urgency_phrases import SLOTS, WRITTEN_APART

    def words(text):  # lower case, punctuation dropped, single spaces
        return " ".join(re.sub(r"[^\w' -]", " ", text.lower()).split())

    def pattern(template):  # every rendering of `template` (and a few more: spaces are optional), over `words`
        def escaped(text):
            return " ".join(re.escape(w) for w in words(text).split())

        pieces = []
        for part in re.split(r"(\{[^{}]*\})", template):
            if part.startswith("{"):
                body = part[1:-1]
                options = SLOTS[body] if body in SLOTS else body.split("|")
                pieces.append("(?:" + "|".join(escaped(o) for o in options) + ")")
            elif words(part):
                pieces.append(escaped(part))
        return re.compile(r"\s*".join(pieces))

    patterns = [pattern(t) for _, _, t in TEMPLATES]
    assert pattern("{no need|there's no need} to hurry, {answer}").fullmatch(words("No need to hurry: the result!"))
    assert {level for level, _ in WRITTEN_APART} == set(range(LEVELS))
    for _, phrase in WRITTEN_APART:
        assert not any(p.fullmatch(words(phrase)) for p in patterns), phrase
        assert all(32 <= ord(c) < 127 for c in phrase)


def test_phrase_bank_splits_by_template_covers_every_level_and_is_seeded():
    bank = UrgencyPhraseBank(seed=0)
    templates = {s: {p.template for p in bank.phrasings(s)} for s in SPLITS}
    assert not templates["train"] & templates["validation"] and not templates["train"] & templates["test"]
    assert not templates["validation"] & templates["test"]
    assert sum(len(t) for t in templates.values()) == len(TEMPLATES)
    for split in SPLITS:
        assert all(len(bank.phrasings(split, level)) >= 1 for level in range(LEVELS))
    assert all(len(bank.phrasings("train", level)) >= 8 for level in range(LEVELS))  # many phrasings per level
    assert templates == {s: {p.template for p in UrgencyPhraseBank(seed=0).phrasings(s)} for s in SPLITS}
    assert templates["test"] != {p.template for p in UrgencyPhraseBank(seed=1).phrasings("test")}


def test_bank_blocks_split_on_their_own_and_the_worded_prompt_task_uses_the_first_block_only():
    from adaptive_pause.tasks.urgency_phrases import BLOCKS

    for seed in (0, 3):
        full, base = UrgencyPhraseBank(seed), UrgencyPhraseBank(seed, blocks=("base",))
        alone = UrgencyPhraseBank(seed, templates=BLOCKS["base"])  # the first block as a bank of its own
        for split in SPLITS:
            in_base = [p for p in full.phrasings(split) if p.template in {t for _, _, t in BLOCKS["base"]}]
            assert in_base == base.phrasings(split) == alone.phrasings(split)  # adding a block moved nothing
    composed = {t for _, _, t in BLOCKS["composed"]}
    assert composed and all(any(p.template in composed for p in UrgencyPhraseBank(0).phrasings(s)) for s in SPLITS)
    task, held = get_task("phrased:addition:1-3"), UrgencyPhraseBank(0)
    rendered = {s: {p.template for p in held.phrasings(s)} for s in SPLITS}
    assert {p.template for p in task.bank.phrasings("train")} <= rendered["train"] - composed
    assert {p.template for p in task.bank.phrasings("test")} <= rendered["test"] - composed
    with pytest.raises(ValueError, match="blocks"):
        UrgencyPhraseBank(0, blocks=("nonsense",))
    with pytest.raises(ValueError, match="templates, blocks"):
        UrgencyPhraseBank(0, templates=BLOCKS["base"], blocks=("base",))


def test_phrased_examples_are_deterministic_ascii_and_carry_their_level():
    bank, tasks = UrgencyPhraseBank(0), [get_task("addition:1-3")]
    examples = bank.examples(tasks, "test", 140, seed=3)
    assert examples == bank.examples(tasks, "test", 140, seed=3)
    assert examples != bank.examples(tasks, "test", 140, seed=4)
    test_templates = {p.template for p in bank.phrasings("test")}
    for e in examples:
        assert e.template in test_templates and e.urgency == level_urgency(e.level)
        assert set(e.prompt) <= set(CHARACTERS)
        assert e.prompt.startswith(e.task_prompt) if e.placement == "after" else e.prompt.endswith(e.task_prompt)
        assert e.phrase.lower() in e.prompt.lower()
    assert {e.level for e in examples} == set(range(LEVELS)) and {e.kind for e in examples} == {"request", "context"}
    assert {e.placement for e in examples} == {"before", "after"}
    before = bank.examples(tasks, "train", 20, seed=0, placement="before")
    assert all(e.placement == "before" and e.prompt.endswith(e.task_prompt) for e in before)


# ---- urgency_adjust ----------------------------------------------------------------------------------------------
def test_adjust_spec_applies_scale_offset_max_min_clamp_in_order():
    x = torch.tensor([0.0, 0.2, 0.5, 0.9])
    assert torch.allclose(make_adjust({"scale": 2.0, "offset": -0.1})(x), x * 2 - 0.1)
    assert torch.allclose(make_adjust({"max": 0.3})(x), torch.tensor([0.3, 0.3, 0.5, 0.9]))
    assert torch.allclose(make_adjust({"min": 0.6})(x), torch.tensor([0.0, 0.2, 0.5, 0.6]))
    spec = parse_adjust("scale:2,offset:-0.1,max:0.2,clamp:0.25:0.8")
    assert spec == {"scale": 2.0, "offset": -0.1, "max": 0.2, "clamp": [0.25, 0.8]}
    assert torch.allclose(make_adjust(spec)(x), torch.tensor([0.25, 0.3, 0.8, 0.8]))


@pytest.mark.parametrize("spec, message", [
    ({"speed": 1}, "unknown key"), ({"clamp": [0.8, 0.2]}, "clamp needs 0 <= low <= high <= 1"),
    ({"offset": float("nan")}, "offset must be a finite number"), ("scale:x", "expected NAME:NUMBER"),
    ("clamp:0.5", "expected one of"), (3, "expected a callable"),
    ("offset:0.1,offset:0.2", "'offset' given twice"),  # once silently the last one only
])
def test_bad_adjust_specs_raise_value_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        make_adjust(spec)


# ---- generate(urgency="auto") ------------------------------------------------------------------------------------
def test_auto_batched_equals_alone(model):
    batched = model.generate(PROMPTS, urgency="auto", max_new_tokens=4)
    estimates = batched.urgency_estimated
    assert len(set(round(e, 4) for e in estimates)) > 1  # the prompts really get different urgencies
    assert batched.urgency_used == pytest.approx(estimates)
    for i, prompt in enumerate(PROMPTS):
        alone = model.generate([prompt], urgency="auto", max_new_tokens=4)
        assert alone.urgency_estimated[0] == pytest.approx(estimates[i], abs=1e-5)
        assert alone.texts[0] == batched.texts[i] and alone.pauses_per_token[0] == batched.pauses_per_token[i]


def test_auto_equals_passing_the_estimate_explicitly(model):
    auto = model.generate(PROMPTS, urgency="auto", max_new_tokens=4)
    explicit = model.generate(PROMPTS, urgency=auto.urgency_used, max_new_tokens=4)
    assert auto.pauses_per_token == explicit.pauses_per_token and auto.texts == explicit.texts
    assert explicit.urgency_estimated == [None] * len(PROMPTS)
    assert model.estimate_urgency(PROMPTS).tolist() == pytest.approx(auto.urgency_estimated, abs=1e-6)


def test_mixed_per_row_urgency(model):
    auto = model.generate(PROMPTS, urgency="auto", max_new_tokens=4)
    mixed = model.generate(PROMPTS, urgency=[0.0, "auto", 1.0, "auto"], max_new_tokens=4,
                           urgency_adjust={"offset": 0.05, "clamp": [0.0, 0.6]})
    assert mixed.urgency_estimated[0] is None and mixed.urgency_estimated[2] is None
    for row in (1, 3):
        assert mixed.urgency_estimated[row] == pytest.approx(auto.urgency_estimated[row], abs=1e-5)
        assert mixed.urgency_used[row] == pytest.approx(min(auto.urgency_estimated[row] + 0.05, 0.6), abs=1e-5)
    assert mixed.urgency_used[0] == 0.0 and mixed.urgency_used[2] == 1.0
    reference = model.generate(PROMPTS, urgency=mixed.urgency_used, max_new_tokens=4)
    assert reference.pauses_per_token == mixed.pauses_per_token  # the controller saw exactly urgency_used
    assert mixed.result.trace.urgency.shape[0] == len(PROMPTS)


def test_callable_adjust_sees_only_the_auto_rows(model):
    seen = []

    def adjust(estimates):
        seen.append(estimates.clone())
        return 1.0 - estimates

    out = model.generate(PROMPTS, urgency=["auto", 0.5, "auto", 0.5], urgency_adjust=adjust, max_new_tokens=3)
    assert seen[0].shape == (2,)
    assert out.urgency_used[0] == pytest.approx(1 - out.urgency_estimated[0], abs=1e-6)
    assert out.urgency_used[1] == 0.5


@pytest.mark.parametrize("adjust, message", [
    (lambda e: e * float("nan"), r"values in \[0, 1\] \(not NaN\); got row 0: nan"),
    (lambda e: e + 2.0, r"values in \[0, 1\]"),
    (lambda e: e[:1], "returned 1 values for 2 'auto' row"),
    (lambda e: "fast", "must return numbers"),
])
def test_adjust_returning_nan_or_outside_unit_interval_is_refused(model, adjust, message):
    with pytest.raises(ValueError, match=message):
        model.generate(PROMPTS[:2], urgency="auto", urgency_adjust=adjust, max_new_tokens=2)


@pytest.mark.parametrize("kwargs, message", [
    ({"urgency": "fast"}, "expected a number in"),
    ({"urgency": ["auto", "soon"]}, r"urgency\[1\]: expected a number in \[0, 1\] or 'auto'"),
    ({"urgency": ["auto"]}, "got 1 values for a batch of 2"),
    ({"urgency": 0.5, "urgency_adjust": {"offset": 0.1}}, "urgency_adjust: adjusts estimated urgency"),
])
def test_bad_urgency_arguments(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        model.generate(PROMPTS[:2], max_new_tokens=2, **kwargs)


def test_auto_without_an_estimator_says_how_to_get_one():
    plain = opinionated_model("slotted", policy=decisive_head(32))
    with pytest.raises(ValueError, match="'auto' needs an urgency estimator.*train-urgency"):
        plain.generate(PROMPTS[:1], urgency="auto")
    with pytest.raises(ValueError, match="'auto' needs an urgency estimator"):
        plain.generate(PROMPTS[:2], urgency=[0.2, "auto"])
    assert plain.generate(PROMPTS[:1], urgency=0.2, max_new_tokens=2).urgency_used == [pytest.approx(0.2)]


def test_estimator_of_another_base_is_refused(tmp_path, model):
    wide = UrgencyEstimator(64, vocab_size=len(model.tokenizer), pause_id=model.settings.pause_id)
    with pytest.raises(ValueError, match="hidden_size: estimator=64, model=32"):
        AdaptivePauseModel(model.lm, model.tokenizer, model.policy, wide)
    with pytest.raises(ValueError, match="hidden_size: estimator=64, model=32"):
        model.generate(PROMPTS[:1], urgency="auto", urgency_estimator=wide)
    other_vocab = UrgencyEstimator(32, vocab_size=len(model.tokenizer) + 5, pause_id=model.settings.pause_id)
    with pytest.raises(ValueError, match="tokenizer vocab size"):
        model.generate(PROMPTS[:1], urgency="auto", urgency_estimator=other_vocab)
    model.save_pretrained(tmp_path / "run")
    save_estimator(UrgencyEstimator(32, vocab_size=len(model.tokenizer), pause_id=model.settings.pause_id + 1),
                   tmp_path / "run" / "urgency")
    with pytest.raises(ValueError, match="<pause> id"):
        AdaptivePauseModel.from_pretrained(tmp_path / "run")


def test_auto_on_a_run_without_an_estimator_and_a_layer_the_lm_lacks_are_clear_errors(tmp_path, model, capsys):
    AdaptivePauseModel(model.lm, model.tokenizer, model.policy).save_pretrained(tmp_path / "bare")
    assert cli_main(["generate", str(tmp_path / "bare"), "--urgency", "auto", "--max_new_tokens", "2", "1+2="]) == 2
    assert "error: urgency: 'auto' needs an urgency estimator" in capsys.readouterr().err
    deep = UrgencyEstimator(32, pooling="conv", layer=9, vocab_size=len(model.tokenizer),
                            pause_id=model.settings.pause_id)
    with pytest.raises(ValueError, match="layer: the LM has 3 hidden states"):
        model.generate(PROMPTS[:1], urgency="auto", urgency_estimator=deep)


def test_run_dir_round_trip_keeps_the_estimator(tmp_path, model):
    model.save_pretrained(tmp_path / "run")
    back = AdaptivePauseModel.from_pretrained(tmp_path / "run")
    assert back.urgency_estimator is not None and back.urgency_estimator.config() == model.urgency_estimator.config()
    assert back.estimate_urgency(PROMPTS).tolist() == pytest.approx(model.estimate_urgency(PROMPTS).tolist(),
                                                                    abs=1e-6)


def test_cli_generate_auto_and_adjust(tmp_path, model, capsys):
    model.save_pretrained(tmp_path / "run")
    assert cli_main(["generate", str(tmp_path / "run"), "--urgency", "auto,0.4", "--urgency_adjust",
                     "offset:0.1,clamp:0:0.5", "--json", "--max_new_tokens", "3", "1+2=", "34+5="]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert rows[1]["urgency_estimated"] is None and rows[1]["urgency_used"] == pytest.approx(0.4)
    assert rows[0]["urgency_used"] == pytest.approx(min(rows[0]["urgency_estimated"] + 0.1, 0.5), abs=1e-5)
    assert cli_main(["generate", str(tmp_path / "run"), "--urgency", "auto", "--urgency_adjust", "speed:2",
                     "1+2="]) == 2
    assert "error: urgency_adjust" in capsys.readouterr().err


# ---- train-urgency -----------------------------------------------------------------------------------------------
def _train_args(run, steps, *extra):
    return ["train-urgency", str(run), "--max_steps", str(steps), "--num_train", "56", "--num_validation", "28",
            "--num_test", "28", "--batch_size", "16", "--width", "16", "--eval_every", "5", "--checkpoint_every",
            "5", "--warmup_steps", "2", "--learning_rate", "0.01", "--progress", "false", *extra]


def test_train_urgency_end_to_end_then_generate_auto(tmp_path, capsys):
    run = tmp_path / "run"
    opinionated_model("slotted", policy=decisive_head(32)).save_pretrained(run)
    assert cli_main(_train_args(run, 10)) == 0
    out = capsys.readouterr().out
    assert "train-urgency: test: spearman=" in out
    stage = run / "urgency_train"
    assert (run / "urgency" / "urgency.safetensors").is_file() and (stage / "config.yaml").is_file()
    assert (stage / "state" / "optimizer.safetensors").is_file() and any((stage / "logs").rglob("events.*"))
    figures = json.loads((stage / "eval.json").read_text())
    for split in ("train", "validation", "test"):
        assert 0 <= figures[split]["mae"] <= 1 and len(figures[split]["mean_estimate_per_level"]) == LEVELS
    history = json.loads((stage / "history.json").read_text())
    assert len(history) == 10 and "eval/spearman" in history[-1]
    model = AdaptivePauseModel.from_pretrained(run)
    init = UrgencyEstimator(32, width=16)
    assert not torch.equal(model.urgency_estimator.mlp[1].weight, init.mlp[1].weight)  # parameters changed
    saved = json.loads((run / "urgency" / "config.json").read_text())["extra"]
    assert saved["phrase_blocks"] == ["base", "composed"] and saved["phrase_seed"] == 0  # what "auto" evals read
    from adaptive_pause.eval.urgency_auto import estimator_phrases

    assert estimator_phrases(run) == (0, ["base", "composed"]) and estimator_phrases(tmp_path) == (0, None)
    result = model.generate(PROMPTS, urgency="auto", max_new_tokens=3)
    assert all(0 <= u <= 1 for u in result.urgency_used)
    # A second run into the same directory is refused (it would overwrite another run's state).
    assert cli_main(_train_args(run, 10)) == 2
    assert "already holds an urgency run" in capsys.readouterr().err


class _Crash(RuntimeError):
    pass


# The default head, and the linear classifier over two layers' standardised means (the SmolLM2 recipe's head).
@pytest.mark.parametrize("head", [(), ("--pooling", "mean", "--loss", "ce", "--layer", "1", "2")],
                         ids=["meanmax", "mean_ce_two_layers"])
def test_train_urgency_resume_is_exact(tmp_path, capsys, monkeypatch, head):
    import adaptive_pause.training.urgency as stage

    straight, resumed = tmp_path / "a", tmp_path / "b"
    for run in (straight, resumed):
        opinionated_model("slotted", policy=decisive_head(32)).save_pretrained(run)
    assert cli_main(_train_args(straight, 10, *head)) == 0
    evaluations = []
    real_evaluate = stage.evaluate

    def crash_at_the_second_evaluation(*args):
        evaluations.append(1)
        if len(evaluations) == 2:  # step 10, after the checkpoint of step 5
            raise _Crash()
        return real_evaluate(*args)

    monkeypatch.setattr(stage, "evaluate", crash_at_the_second_evaluation)
    with pytest.raises(_Crash):
        cli_main(_train_args(resumed, 10, *head))
    monkeypatch.setattr(stage, "evaluate", real_evaluate)
    assert json.loads((resumed / "urgency_train" / "state" / "trainer.json").read_text())["step"] == 5
    assert cli_main(_train_args(resumed, 10, *head, "--resume", "true")) == 0
    assert cli_main(_train_args(resumed, 12, *head, "--resume", "true", "--width", "8")) == 2
    assert "resume: the config differs" in capsys.readouterr().err
    a = load_estimator(straight / "urgency").state_dict()
    b = load_estimator(resumed / "urgency").state_dict()
    if head:  # the classifier was trained, standardised with the training prompts, and is what "auto" reads
        estimator = load_estimator(straight / "urgency")
        assert estimator.classes == LEVELS and estimator.layers == (1, 2) and not torch.equal(a["scale"],
                                                                                              torch.ones(64))
        model = AdaptivePauseModel.from_pretrained(straight)
        assert model.estimate_urgency(PROMPTS).shape == (len(PROMPTS),)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    la = json.loads((straight / "urgency_train" / "history.json").read_text())
    lb = json.loads((resumed / "urgency_train" / "history.json").read_text())
    assert [r["step"] for r in lb] == list(range(1, 11))
    assert all(math.isclose(x["loss"], y["loss"], rel_tol=1e-5) for x, y in zip(la, lb))


def test_train_urgency_bad_config_names_the_field(tmp_path, capsys):
    assert cli_main(["train-urgency", str(tmp_path), "--placement", "middle"]) == 2
    assert "placement: must be one of" in capsys.readouterr().err
    assert cli_main(["train-urgency", str(tmp_path), "--layer", "1", "1"]) == 2
    assert "layer: needs one or more distinct hidden-state indices" in capsys.readouterr().err
    assert cli_main(["train-urgency", str(tmp_path), "--loss", "hinge"]) == 2
    assert "loss: must be one of ('bce', 'mse', 'ce')" in capsys.readouterr().err
    assert cli_main(["train-urgency", str(tmp_path), "--phrase_blocks", "base", "slang"]) == 2
    assert "phrase_blocks: must name blocks of ['base', 'composed']" in capsys.readouterr().err
    assert cli_main(["train-urgency", str(tmp_path)]) == 2
    assert "has no model/" in capsys.readouterr().err


def test_policies_with_the_estimator_never_import_adaptive_pause():
    import subprocess
    import sys

    code = ("import sys, policies; from policies import urgency; "
            "assert not [m for m in sys.modules if m.startswith('adaptive_pause')]")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- PPO under phrased urgency -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def long_model():
    """Phrased prompts are long: contiguous numbering keeps them inside the tiny model's context."""
    m = opinionated_model("contiguous")
    m.policy = decisive_head(m.hidden_size)
    m.urgency_estimator = _estimator(m)
    return m


def _phrased_ppo_config(run, out, **kwargs):
    from adaptive_pause.ppo.config import PPOConfig

    return PPOConfig(env="lm", model_run_dir=str(run), tasks=["addition:1-2"], max_pauses=3, max_new_tokens=3,
                     output_dir=str(out), urgency_from_phrases=True, progress=False, **kwargs)


def test_ppo_phrased_urgency_controller_reads_the_estimate_reward_reads_the_level(tmp_path, long_model):
    from adaptive_pause.ppo import trainer as ppo_trainer
    from adaptive_pause.urgency import estimate

    long_model.save_pretrained(tmp_path / "run")  # with its estimator: RUN/urgency/
    config = _phrased_ppo_config(tmp_path / "run", tmp_path / "out")
    reward = ppo_trainer.build_reward(config)
    source, _ = ppo_trainer.build_source(config, reward, torch.device("cpu"))
    policy = ppo_trainer.build_policy(config, source.hidden_size)
    phrased, sample = [], source.phrases.sample
    source.phrases.sample = lambda *args, **kw: phrased.append(sample(*args, **kw)) or phrased[-1]
    asked = torch.tensor([0.0, 0.1, 0.4, 0.55, 0.9, 1.0])
    rollout = source.collect(policy, asked, torch.Generator().manual_seed(0))
    rollout.validate()
    levels = (asked * (LEVELS - 1)).round()
    torch.testing.assert_close(rollout.urgency, levels / (LEVELS - 1))  # the reward's urgency: the phrase's level
    assert rollout.urgency_input is not None and not torch.allclose(rollout.urgency_input, rollout.urgency)
    # The controller's inputs carry the estimate, the reward the level.
    inputs = rollout.inputs(rollout.valid)
    expected = rollout.urgency_input[:, None].expand_as(rollout.valid)[rollout.valid]
    torch.testing.assert_close(inputs.urgency, expected)
    torch.testing.assert_close(rollout.episode_rewards(reward),
                               reward.reward(rollout.score, rollout.pauses, levels / (LEVELS - 1)))
    # The prompts carry train phrasings of those levels, and the controller's urgency is the run's estimate of them.
    assert [p.level for p in phrased] == levels.long().tolist()
    assert {p.template for p in phrased} <= {t.template for t in source.phrases.phrasings("train")}
    torch.testing.assert_close(rollout.urgency_input, estimate(source.model, source.model.encode(
        [p.prompt for p in phrased]), None))
def test_ppo_phrased_urgency_trains_and_needs_an_estimator(tmp_path, long_model):
    from adaptive_pause.ppo import trainer as ppo_trainer

    AdaptivePauseModel(long_model.lm, long_model.tokenizer).save_pretrained(tmp_path / "bare")  # no urgency/
    with pytest.raises(ValueError, match="urgency_from_phrases: .* has no urgency/"):
        ppo_trainer.build_source(_phrased_ppo_config(tmp_path / "bare", tmp_path / "o1"), None, torch.device("cpu"))
    with pytest.raises(ValueError, match="urgency_from_phrases: needs env 'lm'"):
        from adaptive_pause.ppo.config import PPOConfig

        PPOConfig(env="analytic", urgency_from_phrases=True)
    long_model.save_pretrained(tmp_path / "run")
    argv = ["--env", "lm", "--model_run_dir", str(tmp_path / "run"), "--tasks", "addition:1-2", "--output_dir",
            str(tmp_path / "ppo"), "--iterations", "2", "--episodes_per_iteration", "16", "--max_pauses", "3",
            "--max_new_tokens", "3", "--progress", "false", "--urgency_from_phrases", "true"]
    assert ppo_trainer.main(argv) == 0
    trained = AdaptivePauseModel.from_pretrained(tmp_path / "ppo")  # the estimator comes along with the controller
    assert trained.urgency_estimator is not None
    out = trained.generate(["Quick! 12+34="], urgency="auto", max_new_tokens=3, max_pauses=3)
    assert out.urgency_estimated[0] == pytest.approx(float(long_model.estimate_urgency(["Quick! 12+34="])[0]), abs=1e-5)


def test_sweep_auto_rows_match_generate_auto_on_the_held_out_phrasings(tmp_path, long_model):
    from adaptive_pause.eval.sweep import SweepConfig, run_sweep

    long_model.save_pretrained(tmp_path / "run")
    config = SweepConfig(run_dir=str(tmp_path / "run"), tasks=["addition:1-2"], urgencies=[0.0, 1.0], num_examples=4,
                         fixed_ks=[0], confidence_high=-1, random_ps=[], auto=True, max_pauses=3, progress=False,
                         output_dir=str(tmp_path / "sweep"))
    rows = [r for r in run_sweep(config) if r["difficulty"] == "all"]
    auto = {r["urgency"]: r for r in rows if r["policy"] == "auto"}
    phrased = {r["urgency"]: r for r in rows if r["policy"] == "phrased"}
    assert sorted(auto) == sorted(phrased) == [level_urgency(lv) for lv in range(LEVELS)]
    # A row is generate(urgency="auto") (else the level's urgency) on that level's test phrasings.
    task = get_task("addition:1-2")
    examples = UrgencyPhraseBank().examples([task], "test", 4, config.seed, "before", levels=[5])
    assert {e.template for e in examples} <= {p.template for p in UrgencyPhraseBank().phrasings("test", 5)}
    resolved = config.resolved(long_model.trained_decode)
    max_new = max(len(long_model.tokenizer(e.answer, add_special_tokens=False)["input_ids"])
                  for e in task.examples(4, config.seed, "test")) + 1  # as the sweep sizes its answers
    for mode, urgency in (("auto", "auto"), ("phrased", level_urgency(5))):
        out = long_model.generate([e.prompt for e in examples], urgency=urgency, max_new_tokens=max_new, max_pauses=3,
                             max_pauses_total=resolved.pause_budget(max_new),
                             first_token_pauses_only=resolved.first_token_pauses_only, seed=config.seed)
        row = (auto if mode == "auto" else phrased)[level_urgency(5)]
        assert row["mean_pauses"] == pytest.approx(sum(out.pauses) / 4), mode
    assert any(a["mean_pauses"] != p["mean_pauses"] for a, p in zip(auto.values(), phrased.values()))
    bare = tmp_path / "bare"
    AdaptivePauseModel(long_model.lm, long_model.tokenizer, long_model.policy).save_pretrained(bare)
    with pytest.raises(ValueError, match="auto: .* has no urgency estimator"):
        run_sweep(SweepConfig(**{**config.__dict__, "run_dir": str(bare)}))


def test_urgency_auto_benchmark_refuses_unknown_phrase_blocks(tmp_path, capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import urgency_auto

    with pytest.raises(SystemExit) as exit_info:
        urgency_auto.main([str(tmp_path), "--phrase_blocks", "base", "slang"])
    assert exit_info.value.code == 2
    assert "--phrase_blocks: must name blocks of ['base', 'composed']" in capsys.readouterr().err
