"""benchmarks/urgency_lora.py on a tiny config-built Llama: its block-by-block reader of right-padded prompts
matches the model's own forward at every real position, and a short run writes its table's JSON. The full
benchmark (SmolLM2) is not run here."""

import json
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_llama_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import urgency_lora  # noqa: E402


def test_reader_on_right_padded_rows_matches_the_models_forward(tmp_path):
    model, tokenizer = tiny_llama_dir(tmp_path)
    rows = [tokenizer("quick, 12+34=", add_special_tokens=False)["input_ids"],
            tokenizer("no rush", add_special_tokens=False)["input_ids"]]
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    reader = urgency_lora.Reader(model)
    with torch.no_grad():
        lower = reader.run(reader.base.embed_tokens(ids), 0, 1, {1})
        upper = reader.run(lower[1], 1, 3, {2, 3})  # the upper blocks restarted from kept states, as the benchmark
        for row, r in enumerate(rows):
            alone = model(input_ids=torch.tensor([r]), output_hidden_states=True).hidden_states
            # HF applies the final norm to its last hidden state; the reader's states are the blocks' own (as a
            # full-depth model's middle states are, which the estimator reads), so the top one is not compared.
            for index, states in ((1, lower[1]), (2, upper[2])):
                torch.testing.assert_close(states[row, :len(r)], alone[index][0], atol=1e-5, rtol=1e-4)


def test_a_short_run_reports_frozen_and_lora_figures_per_seed(tmp_path, capsys):
    tiny_llama_dir(tmp_path)
    out = tmp_path / "lora.json"
    assert urgency_lora.main(["--model", str(tmp_path / "lm"), "--prompt_format", "raw", "--layers", "1", "3",
                              "--lora_from", "1", "--phrase_seeds", "0", "1", "--per_template", "1",
                              "--per_apart", "1", "--steps", "3", "--batch_size", "8", "--output", str(out)]) == 0
    record = json.loads(out.read_text())
    assert [[row["step"] for row in history] for history in record["runs"]] == [[0, 1, 2, 3]] * 2
    for history in record["runs"]:
        for row in history:
            for source in ("validation", "test", "apart"):
                assert 0 <= row[source]["mae"] <= 1
    assert set(record["summary"]) == {"frozen", "LoRA"}
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("urgency_lora: test_spearman_frozen=")


@pytest.mark.parametrize("argv, field", [(["--lora_from", "3"], "--lora_from"), (["--lora_from", "0"], "--lora_from"),
                                         (["--steps", "2"], "--steps"), (["--rank", "0"], "--rank")])
def test_bad_arguments_are_refused_naming_the_field(tmp_path, argv, field):
    with pytest.raises(SystemExit, match=field):
        urgency_lora.parse_args(["--model", str(tmp_path), "--layers", "1", "3", "--lora_from", "1", *argv])
