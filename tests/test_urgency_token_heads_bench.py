"""benchmarks/urgency_token_heads.py on a tiny config-built Llama: the token states it keeps are the model's own
at every real position, the attention head's estimate does not depend on how far a row was padded, and a short
run writes its table's JSON. The full benchmark (SmolLM2) is not run here."""

import json
import sys
from pathlib import Path

import torch
from helpers import tiny_llama_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import urgency_token_heads  # noqa: E402


def test_token_states_are_the_models_own_and_padding_does_not_move_the_estimate(tmp_path):
    model, tokenizer = tiny_llama_dir(tmp_path)
    rows = [tokenizer("quick, 12+34=", add_special_tokens=False)["input_ids"],
            tokenizer("no rush", add_special_tokens=False)["input_ids"]]
    states, mask = urgency_token_heads.token_states(model, rows, [1, 2], batch_size=2)
    for row, r in enumerate(rows):
        alone = model(input_ids=torch.tensor([r]), output_hidden_states=True).hidden_states
        kept = states[row][mask[row]].float()
        torch.testing.assert_close(kept, torch.cat([alone[1][0], alone[2][0]], -1), atol=2e-3, rtol=1e-2)
    torch.manual_seed(1)
    head = urgency_token_heads.TokenHead("attention", torch.zeros(64), torch.ones(64), width=8).eval()
    padded = torch.cat([torch.zeros(2, 3, 64, dtype=states.dtype), states], 1)
    wider = torch.cat([torch.zeros(2, 3, dtype=torch.bool), mask], 1)
    torch.testing.assert_close(head(padded, wider), head(states, mask))


def test_a_short_run_reports_both_heads_per_seed(tmp_path, capsys):
    tiny_llama_dir(tmp_path)
    out = tmp_path / "token_heads.json"
    assert urgency_token_heads.main(["--model", str(tmp_path / "lm"), "--prompt_format", "raw", "--layers", "1",
                                     "2", "--phrase_seeds", "0", "1", "--per_template", "1", "--per_apart", "1",
                                     "--epochs", "2", "--width", "8", "--output", str(out)]) == 0
    record = json.loads(out.read_text())
    assert set(record["runs"]) == {"tokenmean", "attention"}
    for runs in record["runs"].values():
        assert [r["phrase_seed"] for r in runs] == [0, 1]
        for r in runs:
            assert r["epoch"] in (0, 1)
            for source in ("validation", "test", "apart"):
                assert 0 <= r[source]["mae"] <= 1 and -1 <= r[source]["spearman"] <= 1
    assert capsys.readouterr().out.splitlines()[-1].startswith("urgency_token_heads: test_spearman_tokenmean=")
