import json

import pytest

from adaptive_pause.tasks import SYNTHETIC_TASKS, get_task, get_scorer
from adaptive_pause.tasks.synthetic import ThreeSum


@pytest.mark.parametrize("name", sorted(SYNTHETIC_TASKS))
def test_tasks_are_deterministic_by_seed_and_labelled(name):
    task = get_task(name)
    a, b, c = task.examples(50, seed=3), task.examples(50, seed=3), task.examples(50, seed=4)
    assert a == b and a != c
    assert {e.difficulty for e in a} <= set(task.difficulties)
    # a cancelled request (interruption task) is answered with nothing: EOS at once
    assert all(e.prompt and (e.answer or getattr(e, "variant", None) == "cancel") and e.task == name for e in a)
    ds = task.to_dataset(5, seed=3)
    assert ds.column_names[:4] == ["prompt", "answer", "difficulty", "task"] and ds[0]["prompt"] == a[0].prompt


def test_answers_are_correct():
    for e in get_task("addition:1-4").examples(200, 0):
        a, b = e.prompt[:-1].split("+")
        assert len(a) == len(b) == e.difficulty and int(e.answer) == int(a) + int(b)
        assert len(e.answer) == e.difficulty + 1
    for e in get_task("parity").examples(100, 0):
        assert e.answer == str(e.prompt[3:-1].count("1") % 2)
    for e in get_task("sum_mod10").examples(100, 0):
        assert e.answer == str(sum(map(int, e.prompt[3:-1])) % 10)
    for e in get_task("threesum").examples(200, 0):
        xs = [tuple(map(int, v)) for v in e.prompt[2:-1].split(",")]
        assert e.answer == str(int(ThreeSum._has_triple(xs))) and len(xs) == e.difficulty
    e = next(x for x in get_task("primes").examples(500, 0) if x.prompt == "pr13,3=")
    assert e.answer == str((1 + 7 + 1 + 9 + 2 + 3) % 7)  # 17, 19, 23


def test_multihop_difficulty_is_hops():
    for e in get_task("multihop:1-3").examples(100, 1):
        env = dict(s.split("=") for s in e.prompt.split(";")[0].split(","))
        var, hops = e.prompt[-2], 0
        while not env[var].isdigit():
            var, hops = env[var], hops + 1
        assert env[var] == e.answer
        assert hops == e.difficulty


def test_scorers():
    assert get_scorer("exact")(" 0579", "0579") == 1.0 and get_scorer("exact")("579", "0579") == 0.0
    assert get_scorer("numeric")("579", "0579") == 1.0 and get_scorer("numeric")("x", "0579") == 0.0
    assert get_scorer("partial")("0589", "0579") == 0.75
    with pytest.raises(ValueError, match="unknown scorer 'fuzzy'"):
        get_scorer("fuzzy")


def test_unknown_task_and_bad_range():
    with pytest.raises(ValueError, match="unknown task 'addtion'"):
        get_task("addtion")
    with pytest.raises(ValueError, match="difficulty range"):
        get_task("addition:4-2")


def test_jsonl_task(tmp_path):
    path = tmp_path / "qa.jsonl"
    rows = [{"prompt": f"{i}+{i}=", "answer": 2 * i, "difficulty": i % 2} for i in range(60)]
    rows.append({"prompt": "10*10=", "answer": "100"})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    task = get_task(f"jsonl:{path}:numeric")
    assert task.name == "qa" and task.scorer == "numeric" and task.difficulties == (0, 1)
    test = task.splits["test"]
    assert test and sorted(e.prompt for e in task.examples(len(test), 0)) == sorted(e.prompt for e in test)
    assert task.score("4.0", "4") == 1.0


def test_jsonl_malformed_line_names_its_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "answer": "b"}\n\n{"prompt": "c", "answer": \n')
    with pytest.raises(ValueError, match=r"bad.jsonl:3: not valid JSON"):
        get_task(f"jsonl:{path}")
    path.write_text('{"prompt": "a"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: missing field\(s\) \['answer'\]"):
        get_task(f"jsonl:{path}")
    path.write_bytes(b'{"prompt": "a", "answer": "b"}\n{"prompt": "\xff", "answer": "b"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not UTF-8 text \(byte 0xff at column 13\)"):
        get_task(f"jsonl:{path}")
    path.write_text('{"prompt": "a", "answer": "b"}\n')
    with pytest.raises(ValueError, match=r"unknown scorer 'bogus'; known: \["):
        get_task(f"jsonl:{path}:bogus")


# ---- phrased:SPEC (urgency wording on any task's prompts) ---------------------------------------------------------
def test_phrased_task_wraps_the_bare_example_with_a_phrase_of_the_stage_split():
    import random

    from adaptive_pause.tasks.urgency_phrases import PHRASE_SPLIT_FOR, PhrasedTask, UrgencyPhraseBank

    inner, task = get_task("addition:1-3"), get_task("phrased:addition:1-3")
    assert isinstance(task, PhrasedTask) and task.name == "phrased:addition:1-3"
    assert task.difficulties == inner.difficulties and task.scorer == inner.scorer
    bank = UrgencyPhraseBank(0, blocks=("base",))  # the worded-prompt task reads the base block
    for split in ("train", "dev", "test"):
        levels = set()
        for seed in range(60):
            got = task.sample(random.Random(seed), split)
            rng = random.Random(seed)
            bare = inner.sample(rng, split)
            phrased = bank.sample(rng, PHRASE_SPLIT_FOR[split], bare)
            assert got.prompt == phrased.prompt != bare.prompt and bare.prompt in got.prompt
            assert (got.answer, got.difficulty, got.task) == (bare.answer, bare.difficulty, "phrased:addition:1-3")
            assert phrased.template in {p.template for p in bank.phrasings(PHRASE_SPLIT_FOR[split])}
            levels.add(phrased.level)
        assert len(levels) > 3  # the phrase's level is drawn, not fixed
    # the LM's training and PPO stages never see the phrasings held out for evaluation
    assert PHRASE_SPLIT_FOR == {"train": "train", "dev": "train", "test": "test"}
    assert task.examples(20, seed=1) == task.examples(20, seed=1) != task.examples(20, seed=2)
    assert task.score(" 123", "123") == inner.score(" 123", "123")
    assert get_task("phrased@1:addition:1-3").bank.seed == 1
    assert task.split_rule.startswith("seed streams") and "test phrasings for test" in task.split_rule
    for side in ("before", "after"):
        one_side = get_task(f"phrased-{side}@2:addition:1-3")
        assert one_side.bank.seed == 2 and one_side.placement == side
        for e in one_side.examples(40, seed=0, split="train"):
            bare = e.prompt.split(" ")[0 if side == "after" else -1]
            assert (e.prompt.startswith(bare) if side == "after" else e.prompt.endswith(bare)) and "+" in bare


def test_phrased_task_over_a_jsonl_task_keeps_its_scorer_and_splits(tmp_path):
    rows = [{"prompt": f"{i} + {i} =", "answer": str(2 * i)} for i in range(200)]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    inner, task = get_task(f"jsonl:{tmp_path / 't.jsonl'}:numeric"), get_task(f"phrased:jsonl:{tmp_path / 't.jsonl'}:numeric")
    test_prompts = {e.prompt for e in inner.splits["test"]}
    for e in task.examples(30, seed=0, split="test"):
        assert any(p in e.prompt for p in test_prompts) and task.score(e.answer + ".0", e.answer) == 1.0
    assert task.split_rule.startswith(inner.split_rule)  # data.json keeps the file's own split rule


@pytest.mark.parametrize("spec", ["phrased", "phrased:", "phrased@x:addition", "phrasedx:addition", "phrased@:addition",
                                  "phrased-middle:addition", "phrased@1-before:addition"])
def test_bad_phrased_specs_say_the_form(spec):
    with pytest.raises(ValueError, match=r"phrased\[-before\|-after\]\[@SEED\]:SPEC"):
        get_task(spec)


def test_phrase_bank_examples_phrase_a_phrased_task_once_and_ppo_refuses_it_with_phrased_urgency():
    from adaptive_pause.ppo.config import PPOConfig
    from adaptive_pause.tasks.urgency_phrases import UrgencyPhraseBank

    bank = UrgencyPhraseBank(0)
    wrapped = bank.examples([get_task("phrased:addition:1-3")], "test", 30, seed=5)
    bare = bank.examples([get_task("addition:1-3")], "test", 30, seed=5)
    assert wrapped == bare  # the phrased task contributes its bare prompts: one phrase per prompt
    with pytest.raises(ValueError, match="urgency_from_phrases"):
        PPOConfig(env="lm", model_run_dir="runs/x", tasks=["addition:1-3", "phrased:addition:1-3"],
                  urgency_from_phrases=True)
