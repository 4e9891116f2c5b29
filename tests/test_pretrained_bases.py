"""Pretrained bases: a plain HF directory and an imported GGUF file load through `AdaptivePauseModel.from_pretrained`
(with `<pause>` added, contiguous numbering) and decode with controller-free policies."""

import numpy as np
import pytest
import torch
from helpers import bpe_tokenizer
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from adaptive_pause.cli import main as cli_main
from adaptive_pause.modeling import AdaptivePauseModel
from adaptive_pause.tokens import PAUSE_TOKEN
from policies import ConfidenceThreshold, FixedPauses

PROMPTS = ["What is 17 + 25?", "Hi", "Count: one two three"]


def plain_llama(seed: int = 0):
    tokenizer = bpe_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=128, max_position_embeddings=256,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.eos_token_id)
    return LlamaForCausalLM(config).eval(), tokenizer


def test_plain_hf_directory_loads_with_pause_and_decodes_without_a_controller(tmp_path):
    model, tokenizer = plain_llama()
    model.save_pretrained(tmp_path / "plain")
    tokenizer.save_pretrained(tmp_path / "plain")
    loaded = AdaptivePauseModel.from_pretrained(tmp_path / "plain")
    assert loaded.settings.numbering == "contiguous"
    assert loaded.tokenizer.convert_ids_to_tokens(loaded.settings.pause_id) == PAUSE_TOKEN
    assert loaded.lm.get_input_embeddings().weight.shape[0] == len(tokenizer) + 1  # the <pause> row added
    assert loaded.policy is None
    fixed = loaded.generate(PROMPTS, policy=FixedPauses(2), max_new_tokens=4, max_pauses=4)
    assert fixed.pauses == [2] * len(PROMPTS)
    confident = loaded.generate(PROMPTS, urgency=0.0, policy=ConfidenceThreshold(high=1.0), max_new_tokens=2,
                                max_pauses=3)
    assert confident.pauses == [6] * len(PROMPTS)  # never sure enough at u=0: pauses up to the cap per token
    with pytest.raises(ValueError, match="no saved controller"):
        loaded.generate(PROMPTS)


def write_tiny_gguf(path, model, tokenizer) -> None:
    """A float32 llama GGUF written with the gguf package: HF tensor names mapped to GGUF's, GPT-2 style BPE
    vocabulary and merges, so that transformers' GGUF reader sees a file like llama.cpp's converter writes."""
    import json

    gguf = pytest.importorskip("gguf")
    config = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_vocab_size(config.vocab_size)
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = sorted(backend["model"]["vocab"].items(), key=lambda item: item[1])
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([token for token, _ in vocab])
    writer.add_token_types([3 if token == tokenizer.eos_token else 1 for token, _ in vocab])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in backend["model"]["merges"]])
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_bos_token_id(tokenizer.eos_token_id)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            continue  # tied to token_embd
        writer.add_tensor(names.get_name(name, try_suffixes=(".weight",)), tensor.float().numpy().astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_import_gguf_gives_an_hf_directory_with_the_same_logits(tmp_path, capsys):
    model, tokenizer = plain_llama(seed=3)
    write_tiny_gguf(tmp_path / "tiny.gguf", model, tokenizer)
    assert cli_main(["import-gguf", str(tmp_path / "tiny.gguf"), "--output_dir", str(tmp_path / "hf")]) == 0
    direct = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="tiny.gguf").eval()
    imported = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
    assert getattr(imported.config, "quantization_config", None) is None
    ids = tokenizer(PROMPTS[0], return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(direct(ids).logits, imported(ids).logits)
    loaded = AdaptivePauseModel.from_pretrained(tmp_path / "hf")
    assert loaded.generate(PROMPTS, policy=FixedPauses(1), max_new_tokens=3).pauses == [1] * len(PROMPTS)
    # Bad input: a clear error naming the file or field, no traceback.
    assert cli_main(["import-gguf", str(tmp_path / "missing.gguf"), "--output_dir", str(tmp_path / "x")]) == 2
    assert "missing.gguf: no such GGUF file" in capsys.readouterr().err
    assert cli_main(["import-gguf", str(tmp_path / "tiny.gguf"), "--output_dir", str(tmp_path / "hf")]) == 2
    assert "output_dir" in capsys.readouterr().err


TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|endoftext|>{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def test_chat_format_round_trip_and_one_encoding_for_every_stage(tmp_path):
    from adaptive_pause.tasks import Example
    from adaptive_pause.training.collators import FinetuneCollator

    model, tokenizer = plain_llama()
    tokenizer.chat_template = TEMPLATE
    model.save_pretrained(tmp_path / "plain")
    tokenizer.save_pretrained(tmp_path / "plain")
    loaded = AdaptivePauseModel.from_pretrained(tmp_path / "plain")  # a template: 'auto' chooses chat
    rendered = "<|user|>What is 17 + 25?<|endoftext|><|assistant|>"
    expected = loaded.tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert loaded.encode([PROMPTS[0]]) == [expected]
    loaded.save_pretrained(tmp_path / "run")
    again = AdaptivePauseModel.from_pretrained(tmp_path / "run")
    assert again.encode(PROMPTS) == loaded.encode(PROMPTS)
    s = again.settings
    collate = FinetuneCollator(again.tokenizer, s.pause_id, s.numbering, s.pause_slots, max_pauses=0, max_length=256)
    assert collate.encode(Example(prompt=PROMPTS[0], answer="42", difficulty=1, task="t"))[0] == expected
    assert again.generate(PROMPTS, policy=FixedPauses(1), max_new_tokens=2).pauses == [1] * len(PROMPTS)


def test_prompt_format_choices_and_errors(tmp_path):
    from adaptive_pause.modeling import ModelConfig, load_lm

    model, tokenizer = plain_llama()
    tokenizer.chat_template = TEMPLATE
    model.save_pretrained(tmp_path / "plain")
    tokenizer.save_pretrained(tmp_path / "plain")
    _, raw = load_lm(ModelConfig(name_or_path=str(tmp_path / "plain"), prompt_format="raw"))
    assert AdaptivePauseModel(*load_lm(ModelConfig(name_or_path=str(tmp_path / "plain"), prompt_format="raw"))
                              ).encode(["Hi"]) == [raw("Hi")["input_ids"]]
    system = AdaptivePauseModel(*load_lm(ModelConfig(name_or_path=str(tmp_path / "plain"), prompt_format="chat",
                                                     system_prompt="Be brief.")))
    assert system.tokenizer.decode(system.encode(["Hi"])[0]) == \
        "<|system|>Be brief.<|endoftext|><|user|>Hi<|endoftext|><|assistant|>"
    tiny = AdaptivePauseModel(*load_lm(ModelConfig(hidden_size=16, num_heads=2)))  # no template: raw
    assert tiny.encode(["7+5="]) == [tiny.tokenizer("7+5=")["input_ids"]]
    with pytest.raises(ValueError, match="prompt_format: 'chat' needs a tokenizer with a chat template"):
        load_lm(ModelConfig(hidden_size=16, num_heads=2, prompt_format="chat"))
    with pytest.raises(ValueError, match="prompt_format"):
        ModelConfig(prompt_format="markdown")


def test_run_over_a_large_base_refers_to_it_and_checks_its_fingerprint(tmp_path, monkeypatch):
    from policies import PauseControllerHead

    from adaptive_pause.base_ref import REFERENCE_FILE, THRESHOLD_ENV

    model, tokenizer = plain_llama()
    model.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    base_bytes = (tmp_path / "base" / "model.safetensors").stat().st_size
    monkeypatch.setenv(THRESHOLD_ENV, str(base_bytes / 2**20 / 2))  # this tiny base counts as "large"
    loaded = AdaptivePauseModel.from_pretrained(tmp_path / "base")
    head = PauseControllerHead(loaded.hidden_size)
    AdaptivePauseModel(loaded.lm, loaded.tokenizer, head).save_pretrained(tmp_path / "run")  # as PPO saves its run
    files = {p.relative_to(tmp_path / "run").as_posix(): p.stat().st_size
             for p in (tmp_path / "run").rglob("*") if p.is_file()}
    assert "model/model.safetensors" not in files and f"model/{REFERENCE_FILE}" in files
    assert sum(files.values()) < base_bytes / 2  # tokenizer, config, added rows, controller: no weight copy
    reloaded = AdaptivePauseModel.from_pretrained(tmp_path / "run")
    ids = torch.tensor(loaded.encode(PROMPTS[:1]))
    with torch.no_grad():
        assert torch.equal(reloaded.lm(ids).logits, loaded.lm(ids).logits)  # the <pause> row included
    assert reloaded.settings == loaded.settings and reloaded.policy is not None
    # Below the threshold the base is copied as before.
    monkeypatch.setenv(THRESHOLD_ENV, "50")
    AdaptivePauseModel.from_pretrained(tmp_path / "base").save_pretrained(tmp_path / "copied")
    assert (tmp_path / "copied" / "model" / "model.safetensors").is_file()
    # A changed base: the error names the base and the expected fingerprint.
    with torch.no_grad():
        model.get_input_embeddings().weight.add_(1.0)
    model.save_pretrained(tmp_path / "base")
    with pytest.raises(ValueError, match=r"base model .*base changed since this run was written: expected weight "
                                         r"files \{'model.safetensors': '[0-9a-f]{64}'\}"):
        AdaptivePauseModel.from_pretrained(tmp_path / "run")
    (tmp_path / "base").rename(tmp_path / "moved")
    with pytest.raises(ValueError, match=r"the base model directory .*base is missing"):
        AdaptivePauseModel.from_pretrained(tmp_path / "run")


def test_controller_run_over_a_lora_wrapped_large_base_stores_no_base_weights(tmp_path, monkeypatch):
    """finetune (LoRA) -> controller PPO over a base counted as large: each run holds its adapter, controller and
    state, never the base's weights; a changed base is refused by name and fingerprint."""
    from adaptive_pause.base_ref import REFERENCE_FILE, ROWS_FILE, THRESHOLD_ENV, weight_files
    from adaptive_pause.ppo.trainer import main as train_main
    from adaptive_pause.training.finetune import FinetuneConfig, run_finetune

    model, tokenizer = plain_llama()
    model.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    base_bytes = sum(p.stat().st_size for p in weight_files(tmp_path / "base"))
    monkeypatch.setenv(THRESHOLD_ENV, str(base_bytes / 2**20 / 2))  # this tiny base counts as "large"
    run_finetune(FinetuneConfig(output_dir=str(tmp_path / "ft"), base_model=str(tmp_path / "base"),
                                tasks=["addition:1-2"], max_pauses=2, max_steps=2, batch_size=4, warmup_steps=1,
                                progress=False))
    assert train_main(["--env", "lm", "--model_run_dir", str(tmp_path / "ft"), "--tasks", "addition:1-2",
                       "--output_dir", str(tmp_path / "ctl"), "--iterations", "1", "--episodes_per_iteration", "8",
                       "--max_pauses", "2", "--max_new_tokens", "3", "--progress", "false"]) == 0
    for run in ("ft", "ctl"):
        files = {p.relative_to(tmp_path / run).as_posix(): p.stat().st_size
                 for p in (tmp_path / run).rglob("*") if p.is_file()}
        assert f"model/{REFERENCE_FILE}" in files, files
        assert [p.name for p in weight_files(tmp_path / run / "model")] == [ROWS_FILE]  # only the <pause> row
        assert any(name.startswith("adapter/") for name in files)
        tensors = [name for name in files if name.endswith((".safetensors", ".bin", ".pt"))]
        assert all(name.split("/")[0] in ("adapter", "controller", "state") for name in tensors
                   if name != f"model/{ROWS_FILE}"), tensors  # no weight file of the base anywhere
    assert any(name.startswith("controller/") for name in
               (p.relative_to(tmp_path / "ctl").as_posix() for p in (tmp_path / "ctl").rglob("*")))
    loaded = AdaptivePauseModel.from_pretrained(tmp_path / "ctl")
    assert loaded.policy is not None and hasattr(loaded.lm, "peft_config")  # the adapter is on
    loaded.generate(PROMPTS[:2], urgency=0.5, max_new_tokens=3)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(1.5)
    model.save_pretrained(tmp_path / "base")
    for run in ("ft", "ctl"):
        with pytest.raises(ValueError, match=r"base changed since this run was written: expected weight files"):
            AdaptivePauseModel.from_pretrained(tmp_path / run)
