"""The config machinery: YAML and flags typed and checked on the way in, nested configs, errors that name
the field or file (the CLI prints them as `adaptive-pause COMMAND: error: ...`, without a traceback)."""

import pytest

from adaptive_pause.cli import main as cli_main
from adaptive_pause.config import from_dict, load_yaml, parse_cli, save_yaml
from adaptive_pause.envs.analytic import AnalyticEnvConfig
from adaptive_pause.ppo.config import PPOConfig
from adaptive_pause.training.pretrain import PretrainConfig


def test_nested_configs_from_flags_and_yaml_round_trip(tmp_path):
    config = parse_cli(PPOConfig, ["--analytic.levels", "5", "--analytic.max_pauses", "7", "--iterations", "3"])
    assert config.analytic == AnalyticEnvConfig(levels=5, max_pauses=7) and config.iterations == 3
    save_yaml(config, tmp_path / "c.yaml")
    assert load_yaml(PPOConfig, tmp_path / "c.yaml") == config
    pre = parse_cli(PretrainConfig, ["--model.hidden_size", "48", "--model.num_heads", "3", "--max_steps", "2"])
    assert pre.model.hidden_size == 48 and pre.model.num_heads == 3 and pre.max_steps == 2


def test_an_lm_run_config_holds_no_analytic_fields(tmp_path):
    config = PPOConfig(env="lm", model_run_dir="somewhere", output_dir=str(tmp_path))
    save_yaml(config, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    assert "analytic" not in text and "levels" not in text and "observation_noise" not in text
    with pytest.raises(ValueError, match="analytic: is read only with env 'analytic'"):
        PPOConfig(env="lm", model_run_dir="x", analytic=AnalyticEnvConfig())


@pytest.mark.parametrize("argv,message", [
    (["--iterations", "3.7"], "iterations: expected an integer, got '3.7'"),
    (["--learning_rate", "fast"], "learning_rate: expected a number"),
    (["--anneal_lr", "maybe"], "anneal_lr: expected true or false"),
    (["--analytic.levels", "x"], "analytic.levels: expected an integer"),
    (["--config", "/nonexistent/c.yaml"], "--config: /nonexistent/c.yaml is not a file"),
])
def test_bad_flags_name_the_field(argv, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
        parse_cli(PPOConfig, argv)


@pytest.mark.parametrize("text,message", [
    ("3\n", "must hold a mapping of field: value, got int"),
    ("- a\n- b\n", "must hold a mapping of field: value, got list"),
    ("a: [\n", "is not valid YAML"),
    ("iterations: 3.5\n", "iterations: expected an integer"),
    ("bogus: 1\n", "bogus: unknown field of PPOConfig"),
])
def test_bad_yaml_names_the_file_or_field(tmp_path, text, message):
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ValueError, match=message):
        parse_cli(PPOConfig, ["--config", str(tmp_path / "c.yaml")])


def test_yaml_values_are_typed_on_the_way_in():
    # PyYAML reads 1e-3 as a string; a lone task is a one-item list
    config = from_dict(PretrainConfig, {"learning_rate": "1e-3", "tasks": "addition:1-2"})
    assert config.learning_rate == 1e-3 and config.tasks == ["addition:1-2"]


def test_cli_prints_file_errors_and_interrupts_without_a_traceback(capsys, tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("mine\n")
    assert cli_main(["pretrain", "--output_dir", str(tmp_path / "a_file" / "run"), "--max_steps", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("adaptive-pause pretrain: error: ") and "a_file" in err and "Traceback" not in err
    assert (tmp_path / "a_file").read_text() == "mine\n"

    import adaptive_pause.eval.eval_pauses as eval_pauses

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(eval_pauses, "main", interrupted)
    assert cli_main(["eval-pauses", "x"]) == 130
    assert "interrupted" in capsys.readouterr().err
    # a run directory is local: a mistyped relative path fails at once, without asking the hub
    from adaptive_pause.modeling import AdaptivePauseModel

    with pytest.raises(ValueError, match="run_dir: runs/no-such-run is not a directory"):
        AdaptivePauseModel.from_pretrained("runs/no-such-run")


def test_zero_pause_slots_are_refused_where_numbering_is_slotted():
    from adaptive_pause.modeling import ModelConfig

    with pytest.raises(ValueError, match="pause_slots: must be >= 1 with slotted numbering"):
        ModelConfig(pause_slots=0)
    assert ModelConfig(pause_slots=0, position_numbering="contiguous").pause_slots == 0


def test_cli_prints_config_errors_without_a_traceback(capsys, tmp_path):
    assert cli_main(["train-controller", "--iterations", "3.7", "--output_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "adaptive-pause train-controller: error: iterations: expected an integer" in err
    assert "Traceback" not in err
