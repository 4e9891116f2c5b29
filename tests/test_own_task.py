"""Your own task end to end (issue 13): JSONL splits, `demo --tasks`, each stage reading its split, evaluation that
never passes training data off as held-out, decode settings carried from training, summaries that cannot mislead."""

import json
import random

import pytest
from helpers import REPO

from adaptive_pause.demo import DemoConfig, run_demo
from adaptive_pause.eval.eval_pauses import EvalPausesConfig, run_eval_pauses
from adaptive_pause.eval.sweep import SweepConfig, controller_summary, run_sweep, write_outputs
from adaptive_pause.modeling import AdaptivePauseModel
from adaptive_pause.tasks import Example, example_id, get_task
from adaptive_pause.tasks.jsonl import split_of
from policies import FixedPauses

DATA = REPO / "tests" / "data"


def _write_task(directory, seed=0):
    """A small "reverse the digits" task: train/dev/test files with disjoint prompts."""
    rng = random.Random(seed)
    prompts = sorted({"".join(rng.choice("0123456789") for _ in range(rng.randint(2, 3))) for _ in range(400)})
    rng.shuffle(prompts)
    splits = {"test": prompts[:40], "dev": prompts[40:80], "train": prompts[80:]}
    directory.mkdir()
    for split, items in splits.items():
        with (directory / f"{split}.jsonl").open("w") as f:
            for p in items:
                f.write(json.dumps({"prompt": f"rev{p}=", "answer": p[::-1], "difficulty": len(p)}) + "\n")
    return {split: {example_id(Example(f"rev{p}=", p[::-1], len(p), "rev")) for p in items}
            for split, items in splits.items()}


def test_jsonl_splits_by_file_and_by_prompt_hash(tmp_path):
    ids = _write_task(tmp_path / "rev")
    task = get_task(f"jsonl:{tmp_path / 'rev'}")
    assert task.name == "rev" and {example_id(e) for e in task.splits["test"]} == ids["test"]
    assert {e.task for e in task.examples(10, 0)} == {"rev"}
    assert all(example_id(e) in ids["test"] for e in task.examples(40, 3))  # eval reads test by default
    one_file = tmp_path / "all.jsonl"
    one_file.write_text("".join(json.dumps({"prompt": f"q{i}=", "answer": str(i)}) + "\n" for i in range(300)))
    single = get_task(f"jsonl:{one_file}:numeric")
    assert single.name == "all" and single.scorer == "numeric"
    for split, items in single.splits.items():
        assert items and all(split_of(e.prompt) == split for e in items)  # the documented rule
    assert sum(len(v) for v in single.splits.values()) == 300
    (tmp_path / "leak").mkdir()
    (tmp_path / "leak" / "train.jsonl").write_text('{"prompt": "a=", "answer": "1"}\n')
    (tmp_path / "leak" / "test.jsonl").write_text('{"prompt": "a=", "answer": "1"}\n')
    with pytest.raises(ValueError, match="in both train and test"):
        get_task(f"jsonl:{tmp_path / 'leak'}")


def test_demo_on_your_own_task_reads_each_split(tmp_path, capsys):
    ids = _write_task(tmp_path / "rev")
    spec = f"jsonl:{tmp_path / 'rev'}"
    result = run_demo(DemoConfig(out=str(tmp_path / "demo"), tasks=[spec], progress=False,
                                 pretrain_config=str(DATA / "demo_pretrain.yaml"),
                                 pretrain_words_config=str(DATA / "demo_pretrain_words.yaml"),
                                 finetune_config=str(DATA / "demo_finetune.yaml"),
                                 controller_config=str(DATA / "demo_controller.yaml"),
                                 urgency_config=str(DATA / "demo_urgency.yaml"), auto_per_level=3,
                                 sweep_config=str(DATA / "demo_sweep.yaml")))
    demo = tmp_path / "demo"
    for stage, split in (("pretrain", "train"), ("finetune", "train"), ("controller", "dev")):
        record = json.loads((demo / stage / "data.json").read_text())
        assert record["split"] == split and list(record["tasks"]) == ["rev"], stage
        seen = set(record["tasks"]["rev"]["example_ids"])
        assert seen and seen <= ids[split], stage  # read only its own split
    # the second pretraining stage reads the task bare and worded, from the training split
    words = json.loads((demo / "pretrain_words" / "data.json").read_text())
    assert words["split"] == "train" and len(words["tasks"]) == 2, words["tasks"].keys()
    sweep = json.loads((demo / "sweep" / "sweep.json").read_text())
    assert sweep["split"] == "test" and sweep["held_out"] and {r["task"] for r in sweep["rows"]} == {"rev"}
    assert "| rev " in result["table"]  # the task's name, not its path
    # evaluating on the training split is possible, but labelled as such, never as held-out
    payload = run_eval_pauses(EvalPausesConfig(run_dir=str(demo / "finetune"), ks=[0], num_examples=8,
                                               split="train", output=str(tmp_path / "train_eval.json")))
    assert payload["split"] == "train" and payload["held_out"] is False
    assert "TRAINING examples, not held out" in capsys.readouterr().out


def test_a_controller_run_carries_its_decode_settings(tmp_path, tiny_run):
    """A controller trained with first_token_pauses_only and a total cap: generate and sweep use them unasked."""
    from adaptive_pause.ppo.config import PPOConfig
    from adaptive_pause.ppo.trainer import train

    run_dir = tmp_path / "ctl"
    train(PPOConfig(env="lm", model_run_dir=str(tiny_run / "ft"), tasks=["addition:1-2"], output_dir=str(run_dir),
                    max_pauses=4, max_pauses_total=4, max_new_tokens=4, first_token_pauses_only=True,
                    iterations=1, episodes_per_iteration=16, initial_pause_prob=0.9, progress=False))
    model = AdaptivePauseModel.from_pretrained(run_dir)
    assert model.trained_decode == {"max_pauses": 4, "max_pauses_total": 4, "first_token_pauses_only": True}
    prompts = [e.prompt for e in get_task("addition:1-2").examples(32, 0)]
    out = model.generate(prompts, urgency=0.0, max_new_tokens=4)
    assert max(out.pauses) > 0  # the head pauses ...
    assert all(sum(per[1:]) == 0 for per in out.pauses_per_token)  # ... but only before the first token
    with pytest.warns(UserWarning, match="first_token_pauses_only=False"):
        model.generate(prompts[:2], urgency=0.0, max_new_tokens=4, first_token_pauses_only=False)
    from adaptive_pause.envs.lm import PauseEnv

    env = PauseEnv(model)  # the gym view takes them too
    assert env.config.first_token_pauses_only and env.config.max_pauses_total == 4 and env.config.max_pauses == 4
    rows = run_sweep(SweepConfig(run_dir=str(run_dir), urgencies=[0.0], num_examples=16, fixed_ks=[2],
                                 confidence_high=-1, random_ps=[], progress=False))
    learned = [r for r in rows if r["policy"] == "learned" and r["difficulty"] == "all"]
    assert learned and learned[0]["mean_pauses"] <= 4  # the trained total cap, not 16 x tokens


def test_constant_pauses_give_valid_json_and_say_constant(tmp_path, tiny_run):
    import shutil

    from policies import save_policy

    run_dir = tmp_path / "const"
    shutil.copytree(tiny_run / "ft", run_dir)
    save_policy(FixedPauses(2), run_dir / "controller")  # the "learned" controller never varies its pauses
    config = SweepConfig(run_dir=str(run_dir), tasks=["addition:1-2"], urgencies=[0.0, 0.5, 1.0], num_examples=24,
                         fixed_ks=[0, 2], max_pauses=4, max_pauses_total=4, random_ps=[], confidence_high=-1,
                         progress=False, output_dir=str(tmp_path / "out"))
    rows = run_sweep(config)
    write_outputs(rows, config)
    text = (tmp_path / "out" / "sweep.json").read_text()
    data = json.loads(text, parse_constant=lambda name: pytest.fail(f"non-JSON constant {name}"))
    summary = data["controller"][0]
    assert summary["spearman_urgency_pauses"] == "constant" and summary["spearman_difficulty_pauses"] == "constant"
    line = __import__("adaptive_pause.eval.sweep", fromlist=["format_summary"]).format_summary(summary)
    assert "spearman_urgency_pauses=constant" in line
    for row in data["rows"]:
        assert row["accuracy_low"] <= row["accuracy"] <= row["accuracy_high"]


def test_best_fixed_k_is_the_smallest_within_noise():
    def row(k, acc, pauses):
        return {"task": "t", "difficulty": "all", "policy": "fixed", "param": str(k), "urgency": 0.0,
                "accuracy": acc, "mean_pauses": pauses, "n": 500}

    rows = [row(0, 0.900, 0), row(4, 0.905, 4), row(16, 0.914, 16), row(1, 0.80, 1)]
    summary = controller_summary(rows, "t")
    assert summary["most_accurate_fixed_k"] == 16 and summary["best_fixed_k"] == 0  # +1.4 points is noise at n=500
    rows = [row(0, 0.60, 0), row(4, 0.90, 4)]
    assert controller_summary(rows, "t")["best_fixed_k"] == 4
