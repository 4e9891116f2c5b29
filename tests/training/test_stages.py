"""pretrain -> finetune -> eval-pauses on tiny models: parameters change, runs round-trip, bad input is caught."""

import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from adaptive_pause.training import loop as training
from adaptive_pause.config import parse_cli
from adaptive_pause.eval.eval_pauses import EvalPausesConfig
from adaptive_pause.training.finetune import FinetuneConfig
from adaptive_pause.training.pretrain import PretrainConfig
from adaptive_pause.eval.eval_pauses import greedy_correct, load_run, run_eval_pauses
from adaptive_pause.training.finetune import run_finetune
from adaptive_pause.modeling import load_lm, load_saved_lm
from adaptive_pause.training.pretrain import run_pretrain
from adaptive_pause.tasks import get_task
from helpers import decisive_head, tiny_model

from adaptive_pause.modeling import AdaptivePauseModel

FAST = dict(max_steps=6, batch_size=16, warmup_steps=1, log_every=2, progress=False)


@pytest.fixture
def runs(tiny_run):
    return tiny_run


def test_pretrain_changes_weights_and_saves(runs):
    trained, _ = load_saved_lm(runs / "pre")
    init, _ = load_lm(tiny_model(), seed=0)
    changed = [not torch.equal(a, b) for a, b in zip(init.state_dict().values(), trained.state_dict().values())]
    assert all(changed)
    history = json.loads((runs / "pre" / "history.json").read_text())
    assert len(history) == 6 and all(r["loss"] > 0 for r in history)
    assert (runs / "pre" / "logs").is_dir() and (runs / "pre" / "config.yaml").is_file()


def test_finetune_trains_adapter_and_pause_row_only(runs):
    base_before, _ = load_saved_lm(runs / "pre")
    base_saved, _ = load_saved_lm(runs / "ft")
    for (name, a), b in zip(base_before.state_dict().items(), base_saved.state_dict().values()):
        assert torch.equal(a, b), name  # the base is untouched by finetuning
    from safetensors.torch import load_file

    adapter = load_file(runs / "ft" / "adapter" / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # LoRA B starts at zero: it moved
    deltas = [v for k, v in adapter.items() if "trainable_tokens" in k]
    assert len(deltas) == 1 and deltas[0].shape[0] == 1 and deltas[0].abs().sum() > 0  # the <pause> row


def test_run_round_trip_gives_identical_outputs(runs, tmp_path):
    """The in-memory model (LM + adapter + a head) saved and loaded again answers and scores identically."""
    model = AdaptivePauseModel.from_pretrained(runs / "ft")
    model.policy = decisive_head(model.hidden_size)
    model.save_pretrained(tmp_path / "copy")
    again = AdaptivePauseModel.from_pretrained(tmp_path / "copy")
    ids = torch.tensor([[6, 7, 4, 4, 8]])
    assert torch.equal(model.lm(input_ids=ids).logits, again.lm(input_ids=ids).logits)
    prompts = [e.prompt for e in get_task("addition:1-2").examples(16, 5)]
    first = model.generate(prompts, urgency=0.3, max_new_tokens=4, max_pauses=4)
    second = again.generate(prompts, urgency=0.3, max_new_tokens=4, max_pauses=4)
    assert first.texts == second.texts and first.pauses_per_token == second.pauses_per_token
    examples = get_task("addition:1-2").examples(32, 5)
    assert torch.equal(greedy_correct(load_run(runs / "ft"), examples, 2, 16),
                       greedy_correct(load_run(tmp_path / "copy"), examples, 2, 16))


def test_eval_pauses_writes_table_and_json(runs, capsys):
    out = runs / "eval.json"
    run_eval_pauses(EvalPausesConfig(run_dir=str(runs / "ft"), ks=[0, 1, 8], num_examples=40, output=str(out),
                                     control_dir=str(runs / "pre")))
    printed = capsys.readouterr().out
    assert "| addition:1-2 | exact  | all" in printed and "control k=0" in printed
    data = json.loads(out.read_text())
    by_k = data["results"]["addition:1-2"]["by_k"]
    assert set(by_k) == {"0", "1", "8"} and set(by_k["0"]["by_difficulty"]) == {"1", "2"}


def test_eval_pauses_rejects_k_beyond_slots(runs):
    run = load_run(runs / "ft")
    with pytest.raises(ValueError, match="pause_slots=8"):
        greedy_correct(run, get_task("addition").examples(4, 0), 9, 4)


def test_not_a_run_dir(tmp_path):
    with pytest.raises(ValueError, match="is not a run directory"):
        load_run(tmp_path)


def test_finetune_from_a_local_hf_model_without_pause(tmp_path):
    """The real loading path: a local HF directory whose tokenizer has no <pause>."""
    vocab = {c: i for i, c in enumerate("0123456789+=") }
    vocab.update({"<eos>": len(vocab), "<unk>": len(vocab) + 1, "<pad>": len(vocab) + 2})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", unk_token="<unk>", pad_token="<pad>")
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=64))
    model.save_pretrained(tmp_path / "hf")
    tok.save_pretrained(tmp_path / "hf")
    run_finetune(FinetuneConfig(output_dir=str(tmp_path / "ft"), base_model=str(tmp_path / "hf"),
                                tasks=["addition"], max_pauses=2, **FAST))
    run = load_run(tmp_path / "ft")
    assert run.settings.numbering == "contiguous"  # a pretrained base keeps HF numbering
    assert run.tokenizer.convert_ids_to_tokens(run.settings.pause_id) == "<pause>"
    assert run.model.get_input_embeddings().weight.shape[0] == len(vocab) + 1


def test_nan_loss_stops_without_saving(tmp_path, monkeypatch):
    monkeypatch.setattr(training, "token_loss_sum", lambda model, batch: torch.tensor(float("nan"), requires_grad=True))
    out = tmp_path / "nan"
    with pytest.raises(training.NonFiniteLossError, match="loss became nan at step 0"):
        run_pretrain(PretrainConfig(output_dir=str(out), tasks=["addition"], model=tiny_model(), **FAST))
    assert not (out / "model").exists()


def test_bad_config_values_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="max_pauses: K must be >= 0"):
        FinetuneConfig(max_pauses=-1)
    with pytest.raises(ValueError, match="k_weights: needs max_pauses \\+ 1 = 3"):
        FinetuneConfig(max_pauses=2, k_weights=[1.0])
    with pytest.raises(ValueError, match="position_numbering"):
        PretrainConfig(model=tiny_model(position_numbering="rope"))
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        run_pretrain(PretrainConfig(output_dir=str(tmp_path / "x"), tasks=["nope"], model=tiny_model(), **FAST))
    (tmp_path / "c.yaml").write_text("max_step: 3\n")
    with pytest.raises(ValueError, match=r"max_step: unknown field of PretrainConfig"):
        parse_cli(PretrainConfig, ["--config", str(tmp_path / "c.yaml")])


def test_yaml_then_cli_override(tmp_path):
    (tmp_path / "c.yaml").write_text("max_steps: 3\ntasks: [parity]\nlearning_rate: 0.01\n")
    config = parse_cli(PretrainConfig, ["--config", str(tmp_path / "c.yaml"), "--learning_rate", "0.5"])
    assert config.max_steps == 3 and config.tasks == ["parity"] and config.learning_rate == 0.5
    config = parse_cli(EvalPausesConfig, ["some/run", "--ks", "0", "2"], positional=("run_dir",))
    assert config.run_dir == "some/run" and config.ks == [0, 2]


def test_missing_or_corrupt_model_directory_is_a_clear_error(runs, tmp_path):
    import shutil

    with pytest.raises(ValueError, match="no such model or run directory"):
        load_saved_lm(tmp_path / "does-not-exist")
    broken = tmp_path / "broken"
    shutil.copytree(runs / "pre" / "model", broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="broken/model.safetensors: sha256 differs"):
        load_saved_lm(broken)
    (broken / "checksums.json").unlink()  # a directory written without sidecars: the loader's own error
    with pytest.raises(ValueError, match="broken: a corrupt or incomplete model directory"):
        load_saved_lm(broken)


def test_config_file_in_either_spelling_and_supplying_required_fields(tmp_path):
    (tmp_path / "c.yaml").write_text("max_steps: 3\n")
    assert parse_cli(PretrainConfig, [f"--config={tmp_path / 'c.yaml'}"]).max_steps == 3
    (tmp_path / "e.yaml").write_text("run_dir: some/run\nks: [0, 2]\n")
    config = parse_cli(EvalPausesConfig, ["--config", str(tmp_path / "e.yaml")], positional=("run_dir",))
    assert config.run_dir == "some/run" and config.ks == [0, 2]


def test_mismatched_tokenizer_is_a_clear_error(runs, tmp_path):
    import shutil

    import json

    bad = tmp_path / "bad"
    shutil.copytree(runs / "pre" / "model", bad)

    config = json.loads((bad / "config.json").read_text())
    config["pause_token_id"] = 7
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="tokenizer and model disagree on <pause>: tokenizer id 4, model trained with id 7"):
        load_saved_lm(bad)


def test_corrupt_controller_or_adapter_is_a_clear_error(runs, tmp_path):
    import shutil

    from adaptive_pause.modeling import AdaptivePauseModel
    from policies import PauseControllerHead, save_policy

    run = tmp_path / "run"
    shutil.copytree(runs / "ft", run)
    save_policy(PauseControllerHead(32), run / "controller")
    assert AdaptivePauseModel.from_pretrained(run).policy is not None
    (run / "controller" / "controller.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="controller.safetensors: sha256 differs"):
        AdaptivePauseModel.from_pretrained(run)
    (run / "controller" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt or mismatched controller config"):
        AdaptivePauseModel.from_pretrained(run)
    shutil.rmtree(run / "controller")
    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="adapter_model.safetensors: sha256 differs"):
        AdaptivePauseModel.from_pretrained(run)
