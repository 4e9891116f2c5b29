"""The smollm2 preset's stages run end to end (and skip when rerun) over a tiny stand-in base with a chat
template: the real SmolLM2 import is not needed by the default suite."""

import json

import pytest
from helpers import bpe_tokenizer
from transformers import LlamaConfig, LlamaForCausalLM

from adaptive_pause.demo import DemoConfig, main as demo_main
from adaptive_pause.smollm2 import DIGITS, write_addition_task
from adaptive_pause.tasks import get_task

TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|endoftext|>{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def tiny_chat_base(path):
    tokenizer = bpe_tokenizer()
    tokenizer.chat_template = TEMPLATE
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, intermediate_size=64, max_position_embeddings=256,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)


def test_addition_task_file_is_balanced_and_split_by_prompt(tmp_path):
    path = write_addition_task(tmp_path / "a.jsonl", per_difficulty=200)
    task = get_task(f"jsonl:{path}")
    assert task.difficulties == DIGITS
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 200 * len(DIGITS) == len({r["prompt"] for r in rows})
    assert all(int(r["answer"]) == sum(map(int, r["prompt"][8:-1].split(" + "))) for r in rows)
    assert {e.prompt for e in task.splits["test"]}.isdisjoint(e.prompt for e in task.splits["train"])


def test_preset_runs_every_stage_with_the_control_then_skips(tmp_path, capsys):
    tiny_chat_base(tmp_path / "base")
    small = {"finetune": "max_steps: 2\nbatch_size: 4\nwarmup_steps: 1\nlora_r: 4\n",
             "controller": "iterations: 1\nepisodes_per_iteration: 8\nmax_pauses: 4\nmax_pauses_total: 4\n"
                           "max_new_tokens: 3\nfirst_token_pauses_only: true\nprompt_summary: true\n",
             "sweep": "urgencies: [0.0, 1.0]\nnum_examples: 6\nfixed_ks: [0, 2]\nrandom_ps: []\nmax_pauses: 4\n"
                      "max_pauses_total: 4\nfirst_token_pauses_only: true\n",
             # The shipped recipe's head (the standardised means of several layers -> a classifier over the levels)
             # on the tiny base (embeddings and its one layer).
             "urgency": "num_train: 280\nnum_validation: 140\nnum_test: 140\nlayer: [0, 1]\npooling: mean\n"
                        "loss: ce\nmax_steps: 3\nbatch_size: 8\nwarmup_steps: 1\neval_every: 3\n"}
    for stage, text in small.items():
        (tmp_path / f"{stage}.yaml").write_text(
            (text + "prompt_format: chat\nsystem_prompt: Answer with the number only.\nmax_pauses: 4\n")
            if stage == "finetune" else text)
    argv = ["--preset", "smollm2", "--out", str(tmp_path / "out"), "--base_dir", str(tmp_path / "base"),
            "--scale", "0.05", "--control", "true", "--urgency", "true", "--progress", "false"] + \
        [a for s in small for a in (f"--{s}_config", str(tmp_path / f"{s}.yaml"))]
    assert demo_main(argv) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("smollm2: seconds=")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert set(summary["timings"]) == {"raw", "finetune", "eval", "control", "control_eval", "controller", "sweep",
                                       "urgency"}
    assert summary["urgency"]["test"]["n"] == 7  # 140 held-out prompts at scale 0.05
    assert "held-out test phrasings: spearman=" in out
    assert (tmp_path / "out" / "controller" / "urgency" / "urgency.safetensors").is_file()
    saved = json.loads((tmp_path / "out" / "controller" / "urgency" / "config.json").read_text())["config"]
    assert (saved["layer"], saved["pooling"], saved["classes"]) == ([0, 1], "mean", 7)
    assert set(summary["finetune_by_k"]) == set(summary["control_by_k"]) == {"0", "1", "2", "4", "8", "16"}
    evaluated = json.loads((tmp_path / "out" / "eval" / "eval_pauses.json").read_text())["results"]["addition"]
    assert evaluated["n"] == 12 and set(evaluated["n_by_difficulty"]) <= {str(d) for d in DIGITS}
    assert "max_pauses: 0" in (tmp_path / "out" / "control" / "config.yaml").read_text()
    assert (tmp_path / "out" / "sweep" / "pareto.png").is_file()
    assert demo_main(argv) == 0  # every stage finished before: skipped
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["timings"] == {}


def test_preset_flags_need_a_preset():
    with pytest.raises(ValueError, match="preset"):
        DemoConfig(scale=2.0)
    with pytest.raises(ValueError, match="preset"):
        DemoConfig(urgency=True)
    with pytest.raises(ValueError, match="preset: must be 'smollm2'"):
        DemoConfig(preset="gpt5")
