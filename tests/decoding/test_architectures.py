"""Every common HF architecture through the one decode loop: fixed k pauses are token-identical to HF `generate`
on the prompt + k pauses (batched, left-padded), for tiny random models built from config (no downloads).

Covers GQA (Llama, Mistral, Qwen2/3, Gemma, OLMo2 with fewer KV heads), tied embeddings (GPT2, Gemma), a
softcapped final logit (Gemma2), fused QKV (GPTNeoX, Falcon, Phi3) and sliding-window / hybrid caches whose
window the sequences pass (Mistral, Qwen2, Gemma2, Gemma3).
"""

import pytest
import torch
from helpers import bpe_tokenizer, opinionated_model
from transformers import (FalconConfig, FalconForCausalLM, Gemma2Config, Gemma2ForCausalLM, Gemma3ForCausalLM,
                          Gemma3TextConfig, GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM,
                          LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Olmo2Config,
                          Olmo2ForCausalLM, Phi3Config, Phi3ForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

from adaptive_pause.decoding.forward import forward_last_hidden
from adaptive_pause.modeling import AdaptivePauseModel, set_pause_settings
from adaptive_pause.tokens import ensure_pause_token
from policies import FixedPauses

PROMPTS = ["What is 17 + 25? The answer", "Hi", "Count: one two three four five six", "2+2="]
WINDOW = 4  # shorter than every prompt + pauses + answer below
MAX_NEW = 8


SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
             max_position_embeddings=256)
GQA = dict(SMALL, num_key_value_heads=2)
GEMMA = dict(GQA, head_dim=16, final_logit_softcapping=2.0, query_pre_attn_scalar=16)

# name -> (model class, config): hidden 64, 2 layers.
ARCHITECTURES = {
    "gpt2": (GPT2LMHeadModel, lambda v: GPT2Config(vocab_size=v, n_embd=64, n_layer=2, n_head=4, n_positions=256)),
    "gpt_neox": (GPTNeoXForCausalLM, lambda v: GPTNeoXConfig(vocab_size=v, **SMALL)),
    "llama": (LlamaForCausalLM, lambda v: LlamaConfig(vocab_size=v, tie_word_embeddings=True, **GQA)),
    "mistral": (MistralForCausalLM, lambda v: MistralConfig(vocab_size=v, sliding_window=None, **GQA)),
    "qwen2": (Qwen2ForCausalLM, lambda v: Qwen2Config(vocab_size=v, **GQA)),
    "qwen3": (Qwen3ForCausalLM, lambda v: Qwen3Config(vocab_size=v, head_dim=16, **GQA)),
    "phi3": (Phi3ForCausalLM, lambda v: Phi3Config(vocab_size=v, pad_token_id=0, **GQA)),
    "gemma2": (Gemma2ForCausalLM, lambda v: Gemma2Config(vocab_size=v, sliding_window=256, **GEMMA)),
    "gemma3": (Gemma3ForCausalLM, lambda v: Gemma3TextConfig(vocab_size=v, sliding_window=256, **GEMMA)),
    "olmo2": (Olmo2ForCausalLM, lambda v: Olmo2Config(vocab_size=v, pad_token_id=0, **GQA)),
    "falcon": (FalconForCausalLM, lambda v: FalconConfig(vocab_size=v, hidden_size=64, num_hidden_layers=2,
                                                         num_attention_heads=4, new_decoder_architecture=True,
                                                         num_kv_heads=2)),
}
# The same families with a window the sequences pass (Gemma3: sliding then full layer, a hybrid cache).
SLIDING = {
    "mistral_window": (MistralForCausalLM, lambda v: MistralConfig(vocab_size=v, sliding_window=WINDOW, **GQA)),
    "qwen2_window": (Qwen2ForCausalLM, lambda v: Qwen2Config(vocab_size=v, use_sliding_window=True,
                                                             sliding_window=WINDOW, max_window_layers=0, **GQA)),
    "gemma2_window": (Gemma2ForCausalLM, lambda v: Gemma2Config(vocab_size=v, sliding_window=WINDOW, **GEMMA)),
    "gemma3_window": (Gemma3ForCausalLM, lambda v: Gemma3TextConfig(
        vocab_size=v, sliding_window=WINDOW, layer_types=["sliding_attention", "full_attention"], **GEMMA)),
}
ALL = {**ARCHITECTURES, **SLIDING}


def build(name: str) -> AdaptivePauseModel:
    """A tiny random model of `name` with `<pause>` added the way a plain HF base gets it."""
    tokenizer = bpe_tokenizer()
    cls, make_config = ALL[name]
    config = make_config(len(tokenizer))
    config.eos_token_id = config.bos_token_id = tokenizer.eos_token_id
    torch.manual_seed(0)
    model = cls(config).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # larger weights than the 0.02 init, so that greedy outputs depend on the context
        for param in model.parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    pause_id = ensure_pause_token(tokenizer, model)
    set_pause_settings(model, "contiguous", 0, pause_id)
    return AdaptivePauseModel(model, tokenizer)


def hf_generate(model: AdaptivePauseModel, k: int) -> list[list[int]]:
    """HF generate, greedy, on left-padded prompt + k pauses with `<pause>` suppressed; new tokens cut at EOS."""
    ids = model.encode(PROMPTS)
    pause, pad, eos = model.settings.pause_id, model.tokenizer.pad_token_id, model.tokenizer.eos_token_id
    width = max(len(p) for p in ids) + k
    input_ids = torch.tensor([[pad] * (width - len(p) - k) + p + [pause] * k for p in ids])
    mask = (input_ids != pad).long()
    for row, p in enumerate(ids):  # a prompt token equal to pad must stay attended
        mask[row, width - len(p) - k:] = 1
    out = model.lm.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=MAX_NEW, do_sample=False,
                            suppress_tokens=[pause], pad_token_id=pad, eos_token_id=eos)
    return [row[: row.index(eos)] if eos in row else row for row in out[:, width:].tolist()]


@pytest.fixture(scope="module", params=sorted(ALL))
def arch_model(request):
    return request.param, build(request.param)


@pytest.mark.parametrize("k", [0, 3])
def test_fixed_pauses_token_identical_to_hf_generate(arch_model, k):
    name, model = arch_model
    out = model.generate(PROMPTS, policy=FixedPauses(k), max_new_tokens=MAX_NEW, max_pauses=4)
    assert out.answer_ids == hf_generate(model, k), name
    assert out.pauses == [k] * len(PROMPTS)
    assert len(set(map(tuple, out.answer_ids))) > 1  # the answers depend on the prompt: not a vacuous match
    longest = max(len(p) for p in model.encode(PROMPTS)) + k + max(map(len, out.answer_ids))
    if name in SLIDING:
        assert longest > WINDOW


def test_fast_path_only_where_exact():
    """The single-token fast path (one additive mask, the output head applied by hand) stays on for full
    attention without logit post-processing, and is off for sliding windows and softcapped logits."""
    fast = {}
    for name in ("llama", "gpt2", "gemma2", "mistral_window", "gemma3_window"):
        model = build(name)
        session = model.session(PROMPTS, 0.0, model.decode_config(FixedPauses(0), max_new_tokens=2))
        fast[name] = session._fast is not None
    embedded = opinionated_model("slotted")  # the embedded tiny Llama the benchmarks time
    fast["embedded"] = embedded.session(PROMPTS, 0.0, embedded.decode_config(FixedPauses(0), max_new_tokens=2,
                                                                            max_pauses=2))._fast is not None
    assert fast == {"embedded": True, "llama": True, "gpt2": True, "gemma2": False, "mistral_window": False,
                    "gemma3_window": False}


def test_decoder_hook_gives_the_last_hidden_state(arch_model):
    """The decode loop reads the last layer's states through a hook on the decoder instead of keeping every
    layer's (`forward_last_hidden`): the same tensor as the model's own `hidden_states[-1]`."""
    name, model = arch_model
    ids = model.encode(PROMPTS[:2])
    width = max(map(len, ids))
    input_ids = torch.tensor([[0] * (width - len(p)) + p for p in ids])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in ids])
    with torch.no_grad():
        reference = model.lm(input_ids=input_ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
        out, last = forward_last_hidden(model.lm, input_ids=input_ids, attention_mask=mask, logits_to_keep=1)
    assert out.hidden_states is None, name  # the other layers' states were not kept
    assert torch.equal(last, reference), name
