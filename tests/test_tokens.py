import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from adaptive_pause.tokens import PAUSE_TOKEN, build_char_tokenizer, ensure_pause_token, pause_token_id


def _word_tokenizer_without_pause():
    backend = Tokenizer(models.WordLevel({"a": 0, "b": 1, "<eos>": 2, "<unk>": 3}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", unk_token="<unk>")


def test_char_tokenizer_roundtrip_through_autotokenizer(tmp_path):
    tok = build_char_tokenizer()
    text = "12+34=" + PAUSE_TOKEN * 2 + "046"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids.count(pause_token_id(tok)) == 2
    assert len(ids) == len("12+34=046") + 2  # one token per character, <pause> is one token
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(text, add_special_tokens=False)["input_ids"] == ids
    assert loaded.decode(ids, skip_special_tokens=True) == "12+34=046"
    assert loaded.padding_side == "left"
    assert pause_token_id(loaded) == pause_token_id(tok)


def test_ensure_pause_token_adds_resizes_and_is_idempotent():
    tok = _word_tokenizer_without_pause()
    model = LlamaForCausalLM(LlamaConfig(vocab_size=4, hidden_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=32))
    pause_id = ensure_pause_token(tok, model)
    assert tok.convert_ids_to_tokens(pause_id) == PAUSE_TOKEN
    assert model.get_input_embeddings().weight.shape[0] == len(tok) == 5
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert ensure_pause_token(tok, model) == pause_id
    assert len(tok) == 5 and model.get_input_embeddings().weight.shape[0] == 5
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert tok.pad_token is not None


def test_tokenizer_without_pause_gives_clear_error():
    with pytest.raises(ValueError, match="has no '<pause>' token.*ensure_pause_token"):
        pause_token_id(_word_tokenizer_without_pause())
