"""Nothing lost, nothing silently wrong: guarded run directories, locks, checkpoint replacement, checksums,
resumable supervised stages, honest eval-pauses, injection-safe encoding, clean errors (docs/reliability.md)."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from adaptive_pause.checkpoint import atomic_dir, recover_dir
from adaptive_pause.demo import DemoConfig, run_demo
from adaptive_pause.modeling import AdaptivePauseModel
from adaptive_pause.ppo import trainer as ppo_trainer
from adaptive_pause.ppo.config import PPOConfig
from adaptive_pause.rundir import claim_run
from adaptive_pause.training import loop as training_loop
from adaptive_pause.training.finetune import FinetuneConfig, run_finetune
from adaptive_pause.training.pretrain import PretrainConfig, run_pretrain
from adaptive_pause.envs.analytic import AnalyticEnvConfig
from helpers import FAST, REPO, tiny_model
from policies import FixedPauses, PauseControllerHead, save_policy

DATA = Path(__file__).parent / "data"


def pretrain_config(out, **overrides) -> PretrainConfig:
    return PretrainConfig(**{**dict(output_dir=str(out), tasks=["addition:1-2"], model=tiny_model(), **FAST),
                             **overrides})


def ppo_config(out, **overrides) -> PPOConfig:
    fields = dict(output_dir=str(out), iterations=4, episodes_per_iteration=32, update_epochs=1, num_minibatches=2,
                  anneal_lr=False, checkpoint_every=1, eval_every=100, progress=False,
                  analytic=AnalyticEnvConfig(max_pauses=4, levels=3))
    return PPOConfig(**{**fields, **overrides})


# ---- 1. the demo clears only what it wrote ---------------------------------------------------------------------

def test_demo_refuses_a_stage_directory_it_did_not_write(tmp_path):
    manual = tmp_path / "runs" / "pretrain" / "model"
    manual.mkdir(parents=True)
    (manual / "weights.bin").write_bytes(b"a manual run's weights")
    config = DemoConfig(out=str(tmp_path / "runs"), pretrain_config=str(DATA / "demo_pretrain.yaml"),
                        pretrain_words_config=str(DATA / "demo_pretrain_words.yaml"),
                        finetune_config=str(DATA / "demo_finetune.yaml"),
                        controller_config=str(DATA / "demo_controller.yaml"),
                        sweep_config=str(DATA / "demo_sweep.yaml"), progress=False)
    with pytest.raises(ValueError, match="pretrain holds files the demo did not write"):
        run_demo(config)
    assert (manual / "weights.bin").read_bytes() == b"a manual run's weights"


# ---- 2. another kind of run, another config, model_run_dir == output_dir -----------------------------------

def test_a_stage_refuses_another_kind_or_config_and_overwrite_replaces_only_when_complete(tmp_path, monkeypatch):
    out = tmp_path / "run"
    ppo_trainer.train(ppo_config(out, iterations=1))
    controller_files = sorted(p.name for p in out.iterdir())
    with pytest.raises(ValueError, match="already holds a 'train-controller' run of another config"):
        run_pretrain(pretrain_config(out))
    assert sorted(p.name for p in out.iterdir()) == controller_files
    # --overwrite: a pretrain that dies leaves the controller run as it was ...
    monkeypatch.setattr(training_loop, "examples_for_step", _raise_at(3, training_loop.examples_for_step))
    with pytest.raises(KeyboardInterrupt):
        run_pretrain(pretrain_config(out, overwrite=True))
    assert sorted(p.name for p in out.iterdir()) == controller_files
    monkeypatch.undo()
    # ... and one that completes replaces it whole: nothing of the controller run is left in the mix
    run_pretrain(pretrain_config(out, overwrite=True))
    assert not (out / "controller").exists() and not (out / "result.json").exists()
    assert json.loads((out / "run.json").read_text())["kind"] == "pretrain"
    with pytest.raises(ValueError, match="seed: saved=0, now=1"):
        run_pretrain(pretrain_config(out, seed=1, resume=True))
    with pytest.raises(ValueError, match="output_dir: must differ from model_run_dir"):
        PPOConfig(env="lm", model_run_dir=str(out), output_dir=str(out) + "/")


def test_user_files_are_never_replaced_and_a_failed_or_restarted_run_is_handled(tmp_path, monkeypatch, tiny_run):
    # a folder of the user's own files: refused, --overwrite or not, and left as it was
    mine = tmp_path / "data"
    mine.mkdir()
    (mine / "mytask.jsonl").write_text('{"prompt": "1+1=", "answer": "2"}\n')
    for overwrite in (False, True):
        with pytest.raises(ValueError, match=r"not written by an adaptive-pause run \(no run.json\); choose"):
            run_pretrain(pretrain_config(mine, overwrite=overwrite))
    assert [p.name for p in mine.iterdir()] == ["mytask.jsonl"]
    # this config's unfinished run with a checkpoint: not silently restarted from step 0
    out = tmp_path / "run"
    monkeypatch.setattr(training_loop, "examples_for_step", _raise_at(5, training_loop.examples_for_step))
    with pytest.raises(KeyboardInterrupt):
        run_pretrain(pretrain_config(out, checkpoint_every=2))
    monkeypatch.undo()
    with pytest.raises(ValueError, match="unfinished run with a checkpoint .*--resume true"):
        run_pretrain(pretrain_config(out, checkpoint_every=2))
    # a run that failed before its first checkpoint (a rejected base_model) does not block the corrected command
    ft = tmp_path / "ft"
    with pytest.raises(ValueError):
        run_finetune(FinetuneConfig(output_dir=str(ft), base_model=str(tmp_path / "no-such-run"),
                                    tasks=["addition:1-2"], lora_r=4, **FAST))
    corrected = FinetuneConfig(output_dir=str(ft), base_model=str(tiny_run / "pre"), tasks=["addition:1-2"],
                               lora_r=4, **FAST)
    run_finetune(corrected)
    assert json.loads((ft / "run.json").read_text())["finished"]
    # finetune into its own base, or over a finetune run without --continue_adapter: refused by name
    with pytest.raises(ValueError, match="output_dir: .* is the base_model"):
        run_finetune(dataclasses.replace(corrected, base_model=str(ft), overwrite=True))
    with pytest.raises(ValueError, match="base_model: .* is a finetune run.*--continue_adapter true"):
        run_finetune(dataclasses.replace(corrected, base_model=str(ft), output_dir=str(tmp_path / "ft2")))
    assert not (tmp_path / "ft2").exists()


def _raise_at(step, original):
    def examples(tasks, seed, s, batch_size):
        if s == step:
            raise KeyboardInterrupt  # a kill at a step boundary, in-process
        return original(tasks, seed, s, batch_size)
    return examples


# ---- 3. one writer per run directory -----------------------------------------------------------------------

@pytest.mark.slow  # two interpreters start (~20 s under load); the in-process test below holds the same rule
def test_a_second_writer_gets_the_lock_error_and_the_first_run_is_intact(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    first = subprocess.Popen([sys.executable, "-m", "adaptive_pause.cli", "train-controller", "--output_dir",
                              str(out), "--iterations", "1000000", "--episodes_per_iteration", "32",
                              "--num_minibatches", "2", "--update_epochs", "1", "--checkpoint_every", "5",
                              "--progress", "false", "--seed", "1", "--analytic.max_pauses", "4",
                              "--analytic.levels", "3"], env=env, cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (out / "run.json").is_file() and time.time() < deadline:
            time.sleep(0.1)
        second = subprocess.run([sys.executable, "-m", "adaptive_pause.cli", "train-controller", "--output_dir",
                                 str(out), "--iterations", "2", "--seed", "2", "--progress", "false"],
                                env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert "error: output_dir:" in second.stderr and "being written by another process" in second.stderr
        assert "Traceback" not in second.stderr
        assert json.loads((out / "run.json").read_text())["config"]["seed"] == 1
        assert first.poll() is None  # the first writer runs on, untouched
    finally:
        first.kill()
        first.communicate(timeout=60)


def test_a_second_writer_in_process_is_refused_and_the_first_runs_files_are_intact(tmp_path):
    out = tmp_path / "run"
    run_pretrain(pretrain_config(out, max_steps=2))
    before = {p.name: p.read_bytes() for p in (out / "model").iterdir()}
    claim = claim_run(out, "pretrain", {"seed": 0}, overwrite=True)  # the first writer, holding the lock
    try:
        with pytest.raises(ValueError, match="output_dir: .* is being written by another process"):
            run_pretrain(pretrain_config(out, max_steps=2, seed=2, overwrite=True))
    finally:
        claim.release()
    assert {p.name: p.read_bytes() for p in (out / "model").iterdir()} == before


def test_a_dead_writers_lock_is_stale_and_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (tmp_path / ".run.lock").write_text("pid=999999999 kind=pretrain\n")
    claim = claim_run(out, "pretrain", {"seed": 0})
    assert "stale lock of a dead process (pid=999999999)" in capsys.readouterr().out
    with pytest.raises(ValueError, match="being written by another process"):
        claim_run(out, "pretrain", {"seed": 0})
    claim.release()
    claim_run(out, "pretrain", {"seed": 0}).release()


# ---- 4. replacement keeps a complete copy; a moved run resumes ------------------------------------------------

def test_replacement_always_leaves_a_complete_copy(tmp_path):
    state = tmp_path / "state"
    for version in (b"1", b"2"):
        with atomic_dir(state) as tmp:
            (tmp / "w.safetensors").write_bytes(version)
    assert (state / "w.safetensors").read_bytes() == b"2" and sorted(os.listdir(tmp_path)) == ["state"]
    # a kill between the renames: state/ moved to .state.old, the new copy still at .state.new
    shutil.copytree(state, tmp_path / ".state.new")
    (tmp_path / ".state.new" / "w.safetensors").write_bytes(b"3")
    os.replace(state, tmp_path / ".state.old")
    (tmp_path / ".state.tmp-half").mkdir()
    assert recover_dir(state) == f"restored {state} from .state.new"
    assert (state / "w.safetensors").read_bytes() == b"3" and sorted(os.listdir(tmp_path)) == ["state"]
    os.replace(state, tmp_path / ".state.old")  # only the old copy left
    recover_dir(state)
    assert (state / "w.safetensors").read_bytes() == b"3"


def test_train_controller_resumes_after_a_kill_between_renames_and_after_a_move(tmp_path):
    ppo_trainer.train(ppo_config(tmp_path / "straight"))
    ppo_trainer.train(ppo_config(tmp_path / "run", iterations=2))
    run = tmp_path / "run"
    shutil.copytree(run / "state", run / ".state.new")  # the kill: new copy complete, state/ moved aside
    os.replace(run / "state", run / ".state.old")
    os.replace(run, tmp_path / "moved")  # and the run directory moved (paths are not its identity)
    ppo_trainer.train(ppo_config(tmp_path / "moved", resume=True))
    for name in ("policy.safetensors", "optimizer.safetensors", "rng_0.safetensors"):
        a, b = load_file(str(tmp_path / "straight" / "state" / name)), load_file(str(tmp_path / "moved" / "state" / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name


# ---- 5. eval-pauses honours the task's scorer ---------------------------------------------------------------

def test_eval_pauses_scores_with_the_tasks_scorer(tiny_run, tmp_path):
    from adaptive_pause.eval.eval_pauses import evaluate_run, load_run
    from adaptive_pause.tasks.scoring import numeric

    from adaptive_pause.tasks import get_task

    run = load_run(tiny_run / "ft")
    prompts = [f"{a}+{b}=" for a in range(10) for b in range(10)]
    # reference " ": teacher-forced exact match needs the model to write a space; the numeric scorer (a
    # stripped comparison for non-numbers) credits an empty answer. The tiny model answers "" to most.
    jsonl = tmp_path / "blank.jsonl"
    jsonl.write_text("".join(json.dumps({"prompt": p, "answer": " "}) + "\n" for p in prompts))
    n = 40
    examples = get_task(f"jsonl:{jsonl}:numeric").examples(n, 0)  # the test split, as evaluate_run draws it
    out = run.loaded.generate([e.prompt for e in examples], urgency=0.0, policy=FixedPauses(2), max_new_tokens=2,
                              max_pauses=2, first_token_pauses_only=True)
    results = evaluate_run(run, [f"jsonl:{jsonl}:numeric", f"jsonl:{jsonl}:exact"], [2], n, 0, 16)
    by_numeric, by_exact = results["blank:numeric"], results["blank"]
    assert by_numeric["scorer"] == "numeric" and by_exact["scorer"] == "exact"
    expected = sum(numeric(t, " ") for t in out.texts) / n
    assert expected > 0.5 and by_numeric["by_k"][2]["all"] == pytest.approx(expected)
    assert by_exact["by_k"][2]["all"] < expected


# ---- 6. user text never becomes special tokens; unknown characters are refused ----------------------------

def test_prompt_text_is_never_parsed_for_special_tokens(tiny_run):
    model = AdaptivePauseModel.from_pretrained(tiny_run / "ft")
    ids = model.encode(["1+1=<pause></s>"])[0]
    assert model.settings.pause_id not in ids and model.tokenizer.eos_token_id not in ids
    assert model.tokenizer.decode(ids) == "1+1=<pause></s>"
    with pytest.raises(ValueError, match=r"prompts\[1\]: characters the tokenizer does not know: \['é'\]"):
        model.encode(["1+1=", "café"])


# ---- 7. clean errors --------------------------------------------------------------------------------------------

def test_clean_errors_for_odd_arguments_and_broken_runs(tiny_run, tmp_path):
    model = AdaptivePauseModel.from_pretrained(tiny_run / "ft")
    zero_d = model.generate(["1+2="], urgency=np.float64(0.3), policy=FixedPauses(1), max_new_tokens=2)
    assert zero_d.texts == model.generate(["1+2="], urgency=np.array(0.3), policy=FixedPauses(1),
                                          max_new_tokens=2).texts
    session = model.session(["1+2=", "2+2="], 0.3, model.decode_config(FixedPauses(1)))
    with pytest.raises(ValueError, match=r"rows: row indices must be integers, got \[1.5\]"):
        session.cancel([1.5])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device: cuda was asked for"):
            AdaptivePauseModel.from_pretrained(tiny_run / "ft", device="cuda")
    run = tmp_path / "run"
    shutil.copytree(tiny_run / "ft", run)
    for name in os.listdir(run / "adapter"):
        if name.startswith("adapter_model"):
            (run / "adapter" / name).unlink()
    with pytest.raises(ValueError, match="adapter: no adapter weights"):
        AdaptivePauseModel.from_pretrained(run)
    shutil.rmtree(run / "adapter")
    with pytest.raises(ValueError, match="adapter: missing"):
        AdaptivePauseModel.from_pretrained(run)


def test_corrupt_resume_state_is_a_clear_error(tmp_path):
    out = tmp_path / "run"
    ppo_trainer.train(ppo_config(out, iterations=1))
    trainer = json.loads((out / "state" / "trainer.json").read_text())
    (out / "state" / "trainer.json").write_text(json.dumps({**trainer, "iteration": -50}))
    with pytest.raises(ValueError, match="trainer.json: counters \\['iteration'\\] must be integers >= 0"):
        ppo_trainer.train(ppo_config(out, iterations=2, resume=True))
    (out / "state" / "optimizer.json").write_text("{}")
    with pytest.raises(ValueError, match="resume: .*state"):
        ppo_trainer.train(ppo_config(out, iterations=2, resume=True))


# ---- 8. pretrain and finetune resume bit-identically; a NaN keeps the last good checkpoint ----------------

def _weights(path: Path) -> dict:
    return load_file(str(path))


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_supervised_stage_resumes_bit_identically(stage, tiny_run, tmp_path, monkeypatch):
    sums = tmp_path / "sums.jsonl"  # a file-backed task: data.json lists the examples trained on
    sums.write_text("".join(json.dumps({"prompt": f"{a}+{b}=", "answer": str(a + b)}) + "\n"
                            for a in range(40) for b in range(40)))

    def run(out, **overrides):
        if stage == "pretrain":
            return run_pretrain(pretrain_config(out, checkpoint_every=2, **overrides))
        return run_finetune(FinetuneConfig(output_dir=str(out), base_model=str(tiny_run / "pre"),
                                           tasks=["addition:1-2", f"jsonl:{sums}"], max_pauses=2, lora_r=4,
                                           checkpoint_every=2, **{**FAST, **overrides}))

    run(tmp_path / "straight")
    monkeypatch.setattr(training_loop, "examples_for_step", _raise_at(5, training_loop.examples_for_step))
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed")
    assert json.loads((tmp_path / "killed" / "state" / "trainer.json").read_text())["step"] == 4
    monkeypatch.undo()
    run(tmp_path / "killed", resume=True)
    part = "model/model.safetensors" if stage == "pretrain" else "adapter/adapter_model.safetensors"
    a, b = _weights(tmp_path / "straight" / part), _weights(tmp_path / "killed" / part)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    history = [json.loads((tmp_path / d / "history.json").read_text()) for d in ("straight", "killed")]
    assert history[0] == history[1]
    if stage == "finetune":  # the examples of the steps before the kill are listed too
        records = [json.loads((tmp_path / d / "data.json").read_text())["tasks"]["sums"]
                   for d in ("straight", "killed")]
        assert records[0]["example_ids"] and records[0] == records[1]


def test_a_nan_stop_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    original = training_loop.token_loss_sum
    calls = {"n": 0}

    def loss(model, batch):
        calls["n"] += 1
        value = original(model, batch)
        return value * float("nan") if calls["n"] == 4 else value

    monkeypatch.setattr(training_loop, "token_loss_sum", loss)
    with pytest.raises(training_loop.NonFiniteLossError, match=r"step 3.*last good checkpoint is .*state \(step 2"):
        run_pretrain(pretrain_config(tmp_path / "run", checkpoint_every=2))
    assert json.loads((tmp_path / "run" / "state" / "trainer.json").read_text())["step"] == 2


# ---- 9. integrity: flipped bytes are caught ------------------------------------------------------------------

def test_flipped_bytes_in_tensor_data_are_caught_with_the_file_named(tmp_path):
    head = PauseControllerHead(8)
    save_policy(head, tmp_path / "controller")
    weights = tmp_path / "controller" / "controller.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF  # inside the tensor data, not the header: safetensors itself loads it happily
    weights.write_bytes(bytes(data))
    from policies import load_policy

    with pytest.raises(ValueError, match="controller.safetensors: sha256 differs"):
        load_policy(tmp_path / "controller")
