"""benchmarks/interruptions.py end to end at a toy budget, with the demo's two-stage pretraining: the bare stage
has no interruption markers, the second stage continues from it and adds them, and the benchmark writes its
table's JSON. The figures at this budget mean nothing; the full benchmark is documented in docs/results.md."""

import json
import sys
from pathlib import Path

import pytest
import yaml
from transformers import AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import interruptions  # noqa: E402


def test_two_stage_pretraining_continues_from_the_bare_model_and_reports(tmp_path, capsys):
    out, report = tmp_path / "runs", tmp_path / "bench.json"
    rc = interruptions.main(["--seeds", "0", "--digits", "1-1", "--bare_pretrain_steps", "8", "--pretrain_steps",
                             "8", "--finetune_steps", "2", "--controller_iterations", "1", "--episodes", "16",
                             "--batch_size", "16", "--max_pauses", "2", "--num_examples", "14", "--prompt_summary",
                             "--threads", "1", "--out", str(out), "--json", str(report)])
    assert rc == 0
    seed = out / "seed0"
    stage2 = yaml.safe_load((seed / "pretrain" / "config.yaml").read_text())
    assert stage2["model"]["name_or_path"] == str(seed / "pretrain_bare")
    assert stage2["tasks"] == ["addition:1-1", "interrupt:1-1"]
    bare_vocab = AutoTokenizer.from_pretrained(seed / "pretrain_bare" / "model").get_vocab()
    mixed_vocab = AutoTokenizer.from_pretrained(seed / "pretrain" / "model").get_vocab()
    assert "<interrupt>" not in bare_vocab and "<interrupt>" in mixed_vocab
    controller = yaml.safe_load((seed / "controller" / "config.yaml").read_text())
    assert controller["prompt_summary"] is True and controller["episodes_per_iteration"] == 16
    written = json.loads(report.read_text())
    assert written["args"]["bare_pretrain_steps"] == 8
    assert set(written["per_seed"]["0"]["by_variant"]) <= set(interruptions.VARIANTS)
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("interruptions: seeds=[0]")

    # --merge reports seeds run as separate processes as one table, and refuses mismatched or repeated seeds
    merged = tmp_path / "merged.json"
    other = json.loads(report.read_text())
    other["per_seed"] = {"1": other["per_seed"]["0"]}
    (tmp_path / "seed1.json").write_text(json.dumps(other))
    assert interruptions.main(["--merge", str(report), str(tmp_path / "seed1.json"), "--json", str(merged)]) == 0
    both = json.loads(merged.read_text())
    assert both["summary"]["seeds"] == [0, 1] and both["args"]["bare_pretrain_steps"] == 8
    assert both["summary"]["cancelled"] == pytest.approx(written["summary"]["cancelled"])
    with pytest.raises(SystemExit, match="seed 0 appears twice"):
        interruptions.main(["--merge", str(report), str(report), "--json", str(merged)])
    other["args"]["pretrain_steps"] = 9
    (tmp_path / "seed1.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="pretrain_steps"):
        interruptions.main(["--merge", str(report), str(tmp_path / "seed1.json"), "--json", str(merged)])
    (tmp_path / "other.json").write_text(json.dumps({"summary": {}}))
    for path in (tmp_path / "missing.json", tmp_path / "other.json"):
        with pytest.raises(SystemExit, match=f"--merge: {path} is not this benchmark's JSON"):
            interruptions.main(["--merge", str(report), str(path), "--json", str(merged)])
    assert json.loads(merged.read_text())["summary"]["seeds"] == [0, 1]  # a refused merge writes nothing


def test_pretrained_base_in_chat_form_without_a_controller(tmp_path, capsys):
    """--base_model: no pretraining, LoRA finetuning of the given HF directory in its chat format (markers added
    there), and with --controller_iterations 0 the finetuned LM decodes with --fixed_k pauses; the learned
    "pauses after" figures are then absent rather than set by k."""
    from helpers import bpe_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = bpe_tokenizer()
    tokenizer.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|endoftext|>{% endfor %}"
                               "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, intermediate_size=64, max_position_embeddings=256,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    out, report = tmp_path / "runs", tmp_path / "bench.json"
    rc = interruptions.main(["--seeds", "0", "--digits", "1-1", "--base_model", str(tmp_path / "base"),
                             "--system_prompt", "Digits only.", "--finetune_steps", "2", "--lora_r", "4",
                             "--controller_iterations", "0", "--fixed_k", "1", "--batch_size", "8",
                             "--max_pauses", "2", "--num_examples", "14", "--eval_batch_size", "7",
                             "--extra_tasks", "interrupt@reverse:1-1", "--out", str(out), "--json", str(report)])
    assert rc == 0
    seed = out / "seed0"
    assert not (seed / "pretrain").exists() and not (seed / "controller").exists()
    finetune = yaml.safe_load((seed / "finetune" / "config.yaml").read_text())
    assert finetune["base_model"] == str(tmp_path / "base") and finetune["lora_r"] == 4
    assert (finetune["prompt_format"], finetune["system_prompt"]) == ("chat", "Digits only.")
    assert finetune["tasks"] == ["addition:1-1", "interrupt:1-1", "interrupt@reverse:1-1"]
    assert "<interrupt>" in AutoTokenizer.from_pretrained(seed / "finetune" / "model").get_vocab()
    written = json.loads(report.read_text())
    rows = written["per_seed"]["0"]["by_variant"].values()
    assert rows and all("pauses_after" not in row for row in rows)
    assert written["summary"]["pauses_after_hurry"] is None and written["args"]["fixed_k"] == 1
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("interruptions: seeds=[0]")

    # --continue_from: a second stage trains that adapter further on another mix, into another --out
    again = tmp_path / "again"
    rc = interruptions.main(["--seeds", "0", "--digits", "1-1", "--continue_from", str(out), "--finetune_steps", "2",
                             "--lora_r", "4", "--controller_iterations", "0", "--fixed_k", "1", "--batch_size", "8",
                             "--max_pauses", "2", "--num_examples", "14", "--eval_batch_size", "7",
                             "--extra_tasks", "interrupt@cancel:1-1", "--out", str(again), "--json", str(report)])
    assert rc == 0
    second = yaml.safe_load((again / "seed0" / "finetune" / "config.yaml").read_text())
    assert second["base_model"] == str(seed / "finetune") and second["continue_adapter"] is True
    assert second["tasks"][-1] == "interrupt@cancel:1-1"
    assert (seed / "finetune" / "adapter").is_dir()  # the run it continued is left as it was


@pytest.mark.parametrize("argv, message", [
    (["--base_model", "/no/such/dir", "--controller_iterations", "0"], "--base_model: /no/such/dir is not a directory"),
    (["--fixed_k", "1"], "--fixed_k: only without a controller"),
    (["--extra_tasks", "interrupt@shout:1-2"], "--extra_tasks: task spec 'interrupt@shout:1-2'"),
    (["--controller_iterations", "0", "--fixed_k", "5", "--max_pauses", "4"], "--fixed_k: must be in 0..--max_pauses"),
    (["--controller_iterations", "0", "--fixed_k", "-1"], "--fixed_k: must be in 0..--max_pauses"),
    (["--continue_from", "/no/such/out", "--controller_iterations", "0"], "--continue_from: /no/such/out/seed0"),
])
def test_bad_settings_are_refused_before_any_training(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit):
        interruptions.main(argv + ["--out", str(tmp_path / "runs"), "--json", str(tmp_path / "bench.json")])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "bench.json").exists()
