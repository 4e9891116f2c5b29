"""The demo runs every stage end to end on tiny configs, and skips finished stages when rerun."""

from pathlib import Path

from helpers import REPO

from adaptive_pause.demo import STAGES, DemoConfig, run_demo

DATA = REPO / "tests" / "data"


def test_demo_end_to_end_then_skips(tmp_path, capsys):
    config = DemoConfig(out=str(tmp_path / "demo"), pretrain_config=str(DATA / "demo_pretrain.yaml"),
                        pretrain_words_config=str(DATA / "demo_pretrain_words.yaml"),
                        finetune_config=str(DATA / "demo_finetune.yaml"),
                        controller_config=str(DATA / "demo_controller.yaml"),
                        urgency_config=str(DATA / "demo_urgency.yaml"), sweep_config=str(DATA / "demo_sweep.yaml"),
                        auto_per_level=3, progress=False)
    first = run_demo(config)
    assert set(first["timings"]) == {"pretrain", "pretrain_words", "finetune", "controller", "urgency", "sweep"}
    assert (tmp_path / "demo" / "controller" / "urgency" / "urgency.safetensors").is_file()
    # the second pretraining stage continues the first's weights on bare and worded prompts; finetune builds on it
    import yaml

    words = yaml.safe_load((tmp_path / "demo" / "pretrain_words" / "config.yaml").read_text())
    assert words["model"]["name_or_path"] == str(tmp_path / "demo" / "pretrain")
    assert words["tasks"] == ["parity:2-6", "phrased-before:parity:2-6"]
    finetune = yaml.safe_load((tmp_path / "demo" / "finetune" / "config.yaml").read_text())
    assert finetune["base_model"] == str(tmp_path / "demo" / "pretrain_words")
    assert len(first["auto"]["table"]) == 7 and "spearman_level_pauses" in first["auto"]
    for part in ("model", "adapter", "controller"):
        assert (tmp_path / "demo" / "controller" / part).is_dir()
    assert Path(first["pareto"]).is_file() and Path(first["by_difficulty"]).is_file()
    import json

    rows = json.loads((tmp_path / "demo" / "sweep" / "sweep.json").read_text())["rows"]
    overall = {(r["policy"], r["param"], r["urgency"]) for r in rows if r["difficulty"] == "all"}
    policies = {("learned", ""), ("fixed", "0"), ("fixed", "2"), ("fixed", "8"), ("confidence", "0.95"),
                ("random", "0.5")}
    assert overall == {(p, q, u) for p, q in policies for u in (0.0, 0.5, 1.0)}  # every policy at every urgency
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("demo: seconds=")
    # the finetuned LM's pause gain is checked before PPO; the tiny LM gains nothing, and the demo says so twice
    assert "demo: finetuned LM on parity:2-6 (dev, 400 examples): accuracy" in out
    assert set(first["lm_check"]) == {"accuracy_k0", "accuracy_k1", "accuracy_k8", "warning", "note"}
    if first["lm_check"]["accuracy_k8"] - first["lm_check"]["accuracy_k0"] < 0.02:
        assert out.count("demo: WARNING: 8 pauses gain") == 2
    assert "controller: task=parity:2-6 spearman_urgency_pauses=" in out  # the controller against the baselines
    second = run_demo(config)
    assert second["timings"] == {}  # every stage was skipped
    again = capsys.readouterr().out
    assert "finished before" in again and "controller: task=parity:2-6" in again
    assert "spearman_auto_level_pauses=" in again.strip().splitlines()[-1]  # read back from urgency_train/auto.json
    # a changed sweep config reruns the sweep only; a changed controller config reruns it and the sweep
    sweep_yaml = tmp_path / "sweep.yaml"
    sweep_yaml.write_text((DATA / "demo_sweep.yaml").read_text().replace("num_examples: 20", "num_examples: 12"))
    third = run_demo(DemoConfig(**{**config.__dict__, "sweep_config": str(sweep_yaml)}))
    assert set(third["timings"]) == {"sweep"}
    assert "sweep: rerunning into" in capsys.readouterr().out
    forced = run_demo(DemoConfig(**{**config.__dict__, "sweep_config": str(sweep_yaml), "force": True}))
    assert set(forced["timings"]) == set(STAGES)  # --force reruns every stage over its old outputs


def test_the_pause_gain_check_warns_only_when_pauses_do_not_pay(monkeypatch, capsys):
    import adaptive_pause.eval.eval_pauses as eval_pauses
    from adaptive_pause import demo

    def fake(accuracies):
        return lambda run, tasks, ks, *args, **kwargs: {
            "t": {"by_k": {k: {"all": accuracies[i]} for i, k in enumerate(ks)}}}

    monkeypatch.setattr(eval_pauses, "load_run", lambda run_dir: None)
    monkeypatch.setattr(eval_pauses, "evaluate_run", fake([0.55, 0.80, 0.95]))  # k = 0, 1, 16
    checked = demo.check_pauses_pay(Path("x"), "addition:1-3", 16)
    assert checked["warning"] is None and checked["note"] is None
    monkeypatch.setattr(eval_pauses, "evaluate_run", fake([0.40, 0.40, 0.41]))
    warned = demo.check_pauses_pay(Path("x"), "addition:1-3", 16)
    assert warned["accuracy_k16"] == 0.41 and "16 pauses gain +1.0 points" in warned["warning"]
    assert warned["note"] is None and "--seed" in capsys.readouterr().out
    # one pause buys the whole gain (session 14's seed 1): no warning, a note that urgency may hardly matter
    monkeypatch.setattr(eval_pauses, "evaluate_run", fake([0.68, 0.996, 0.994]))
    noted = demo.check_pauses_pay(Path("x"), "addition:1-3", 16)
    assert noted["warning"] is None and "one pause buys the whole gain" in noted["note"]
    assert "0.996 at k=1" in capsys.readouterr().out
