"""The `<pause>` token and the embedded character tokenizer.

Owns: adding `<pause>` (and the interruption markers `<interrupt>`, `</interrupt>`)
to any HF tokenizer and resizing a model's embeddings to match (idempotently),
finding their ids with a clear error when they are missing, the small character-level `PreTrainedTokenizerFast` used by the
embedded default model, and the prompt format (raw or chat template) with the
one function that encodes prompts (`encode_prompts`).

Must not: know about tasks, training or decoding.
"""

from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

PAUSE_TOKEN = "<pause>"
# An interruption's text enters a running answer between these two markers (decoding/interrupt.py says why two).
INTERRUPT_TOKEN, END_INTERRUPT_TOKEN = "<interrupt>", "</interrupt>"
INTERRUPT_MARKERS = (INTERRUPT_TOKEN, END_INTERRUPT_TOKEN)
PAD_TOKEN = "<pad>"
EOS_TOKEN = "</s>"
BOS_TOKEN = "<s>"
UNK_TOKEN = "<unk>"

# Every printable ASCII character except the vertical whitespace ones: enough
# for the synthetic tasks and for bring-your-own JSONL tasks in plain text.
CHARACTERS = [c for c in string.printable if c not in "\t\n\r\x0b\x0c"]


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer (one token per character) with `<pause>`.

    It is a real `PreTrainedTokenizerFast`: `save_pretrained(dir)` then
    `AutoTokenizer.from_pretrained(dir)` gives it back unchanged.
    """
    specials = [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN, PAUSE_TOKEN]
    vocab = {tok: i for i, tok in enumerate(specials + CHARACTERS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    # Each character is its own piece; special tokens are matched before this
    # runs, so "<pause>" stays one token.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        additional_special_tokens=[PAUSE_TOKEN],
        clean_up_tokenization_spaces=False,
        padding_side="left",
    )
    return tokenizer


def has_pause_token(tokenizer: PreTrainedTokenizerBase) -> bool:
    return PAUSE_TOKEN in tokenizer.get_vocab()


def pause_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id of `<pause>`; a `ValueError` that says how to fix it if absent."""
    if not has_pause_token(tokenizer):
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} (vocab size {len(tokenizer)}) has no "
            f"{PAUSE_TOKEN!r} token; call adaptive_pause.tokens.ensure_pause_token(tokenizer, model) first"
        )
    return tokenizer.convert_tokens_to_ids(PAUSE_TOKEN)


def ensure_pause_token(tokenizer: PreTrainedTokenizerBase, model=None) -> int:
    """Add `<pause>` (and a pad token if missing) and resize `model`'s embeddings.

    Idempotent: calling it twice changes nothing the second time. The new
    embedding rows are initialised by transformers' mean-resizing (the mean of
    the existing rows), which keeps a pretrained model's outputs sane before
    the pause row is trained.
    """
    if not has_pause_token(tokenizer):
        tokenizer.add_special_tokens({"additional_special_tokens": [PAUSE_TOKEN]}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        # Pretrained causal LMs often ship without a pad token; EOS is the usual stand-in.
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else PAD_TOKEN
    if model is not None:
        vocab_size = model.get_input_embeddings().weight.shape[0]
        if vocab_size < len(tokenizer):
            model.resize_token_embeddings(len(tokenizer))
    return pause_token_id(tokenizer)


def interrupt_token_ids(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
    """The ids of `<interrupt>` and `</interrupt>`; a `ValueError` that says how to fix it if absent."""
    vocab = tokenizer.get_vocab()
    missing = [m for m in INTERRUPT_MARKERS if m not in vocab]
    if missing:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no {missing} token(s); call "
                         "adaptive_pause.tokens.ensure_interrupt_tokens(tokenizer, model) first")
    return vocab[INTERRUPT_TOKEN], vocab[END_INTERRUPT_TOKEN]


def ensure_interrupt_tokens(tokenizer: PreTrainedTokenizerBase, model=None) -> tuple[int, int]:
    """Add the interruption markers as `ensure_pause_token` adds `<pause>` (idempotently, embeddings resized).
    Not built into the character tokenizer: a model trained without interruptions keeps its vocabulary (and
    its initialisation, so earlier runs reproduce); the stages add them when a task has interruptions."""
    missing = [m for m in INTERRUPT_MARKERS if m not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    if model is not None and model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    return interrupt_token_ids(tokenizer)


# ---- prompt format ----------------------------------------------------------------------------------------------
# Recorded in the tokenizer's own config (tokenizer_config.json), so that every stage that loads a run's tokenizer
# encodes prompts the same way without passing the setting along.
PROMPT_FORMAT_KEY = "pause_prompt_format"
SYSTEM_PROMPT_KEY = "pause_system_prompt"
PROMPT_FORMATS = ("raw", "chat")


def set_prompt_format(tokenizer: PreTrainedTokenizerBase, prompt_format: str = "auto",
                      system_prompt: str | None = None) -> str:
    """Record how prompts are encoded: 'raw' (the text, special tokens added), 'chat' (one user turn through the
    tokenizer's chat template, with `system_prompt` if given, and the assistant prefix), or 'auto' (chat when
    the tokenizer carries a template, else raw). Returns the resolved format."""
    if prompt_format not in PROMPT_FORMATS + ("auto",):
        raise ValueError(f"prompt_format: must be one of {PROMPT_FORMATS + ('auto',)}, got {prompt_format!r}")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if prompt_format == "auto":
        prompt_format = "chat" if has_template else "raw"
    if prompt_format == "chat" and not has_template:
        raise ValueError(f"prompt_format: 'chat' needs a tokenizer with a chat template; "
                         f"{type(tokenizer).__name__} has none (use 'raw')")
    if system_prompt is not None and prompt_format != "chat":
        raise ValueError("system_prompt: only used with prompt_format 'chat'")
    tokenizer.init_kwargs[PROMPT_FORMAT_KEY] = prompt_format
    tokenizer.init_kwargs[SYSTEM_PROMPT_KEY] = system_prompt
    return prompt_format


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: list[str]) -> list[list[int]]:
    """Prompt texts -> token ids in the tokenizer's recorded format (raw when none is recorded): the one place
    every stage (collators, `AdaptivePauseModel.encode`) encodes a prompt."""
    prompt_format = tokenizer.init_kwargs.get(PROMPT_FORMAT_KEY) or "raw"
    if prompt_format == "raw":
        return [encode_text(tokenizer, prompt, add_special_tokens=True, what=f"prompts[{i}]")
                for i, prompt in enumerate(prompts)]
    system = tokenizer.init_kwargs.get(SYSTEM_PROMPT_KEY)
    head = [{"role": "system", "content": system}] if system else []
    ids = []
    for i, prompt in enumerate(prompts):  # the template renders one conversation at a time
        # The template's own markup keeps its special tokens; the user's text goes through `encode_text`, so
        # `<pause>` or `</s>` typed in a prompt stays plain text. Rendered around a sentinel, then split.
        rendered = tokenizer.apply_chat_template(head + [{"role": "user", "content": _SENTINEL}],
                                                 add_generation_prompt=True, tokenize=False)
        before, _, after = rendered.partition(_SENTINEL)
        ids.append(tokenizer(before, add_special_tokens=False)["input_ids"]
                   + encode_text(tokenizer, prompt, what=f"prompts[{i}]")
                   + tokenizer(after, add_special_tokens=False)["input_ids"])
    return ids


_SENTINEL = "\u241fPROMPT\u241f"  # a placeholder no prompt contains, where the user's text goes in the template


def special_token_strings(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """Every special token's text in `tokenizer` (its named ones, `<pause>`, the interrupt markers and any other
    added special token), longest first."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    names = set(tokenizer.all_special_tokens) | {t.content for t in added.values() if getattr(t, "special", False)}
    return sorted((n for n in names if n), key=lambda n: (-len(n), n))


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str, add_special_tokens: bool = False,
                what: str = "text") -> list[int]:
    """User text -> ids. Special-token text in it (`<pause>`, `</s>`) is encoded as plain characters, never as
    the special token (`split_special_tokens`); a character the tokenizer cannot represent (the unknown token
    comes out: the character tokenizer knows printable ASCII only) is a ValueError that shows it, rather
    than a silent `<unk>` and a confident answer to another question."""
    ids = tokenizer(text, add_special_tokens=add_special_tokens, split_special_tokens=True)["input_ids"]
    unk = tokenizer.unk_token_id
    if unk is not None and unk in ids:
        vocab = tokenizer.get_vocab()
        unknown = sorted({c for c in text if c not in vocab}) or [tokenizer.unk_token]
        raise ValueError(f"{what}: characters the tokenizer does not know: {unknown!r} "
                         f"(the character tokenizer knows printable ASCII)")
    return ids
