"""The language model side: building or loading the base LM with `<pause>`, its pause settings, and
`AdaptivePauseModel` (LM + optional LoRA adapter + controller) with its `generate` API.

Owns: the embedded tiny Llama (built from a config, no download), loading any HF id or local directory, making
sure `<pause>` exists, and the model-level pause settings (position numbering, pause slots) that are saved inside
the model's own `config.json` so every later stage honours them identically. `AdaptivePauseModel` owns the
run-directory round trip of model/, adapter/ and controller/ (with the agreement check), prompt encoding, input
validation for `generate`, and the `adaptive-pause generate` command.

Must not: contain a decode loop (that is `decoding/`; `generate` is a policy-driven run of it) or training code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from policies import PausePolicy, UrgencyEstimator, load_estimator, load_policy, save_estimator, save_policy

from .base_ref import BASE_ATTR, is_reference, load_reference, should_refer, write_reference
from .checkpoint import atomic_dir, check_agreement, verify_checksums
from .countdown import load_countdown, save_countdown
from .config import check, help_field
from .decoding import DecodeConfig, DecodeResult, DecodeSession, UrgencyLike, UrgencySchedule, decode
from .trained_decode import read_trained_decode, warn_outside_training, write_trained_decode
from .urgency import UrgencyAdjust, check_estimator, estimate, interruption_reader, urgency_for_generate
from .positions import NUMBERINGS, check_numbering
from .saved_weights import base_model, base_state_dict, without_tied_copy
from .tokens import (PROMPT_FORMAT_KEY, build_char_tokenizer, encode_prompts, ensure_pause_token,
                     pause_token_id, set_prompt_format)

# Keys added to the HF model config (saved in config.json by save_pretrained).
NUMBERING_KEY = "pause_position_numbering"
SLOTS_KEY = "pause_slots"
PAUSE_ID_KEY = "pause_token_id"


@dataclass
class ModelConfig:
    """Which LM to start from, and how pauses are numbered."""

    name_or_path: Optional[str] = help_field(
        "HF model id or local directory; empty builds the embedded tiny Llama from the fields below", default=None
    )
    hidden_size: int = help_field("tiny model: hidden size (d_model)", default=128)
    num_layers: int = help_field("tiny model: transformer layers", default=2)
    num_heads: int = help_field("tiny model: attention heads", default=4)
    intermediate_size: int = help_field("tiny model: MLP width", default=512)
    max_position_embeddings: int = help_field("tiny model: longest position id the model is built for", default=4096)
    position_numbering: str = help_field(
        "how pauses take position ids: 'slotted' (from-scratch default), 'contiguous' (required for a "
        "pretrained HF base), or 'auto' (slotted for the tiny model, contiguous otherwise)",
        default="auto",
    )
    pause_slots: int = help_field("slotted numbering: position slots reserved for pauses before each token", default=16)
    prompt_format: str = help_field(
        "how prompts are encoded: 'raw' (the text), 'chat' (one user turn through the tokenizer's chat template) or "
        "'auto' (chat when the tokenizer has a template, else raw); recorded with the tokenizer for later stages",
        default="auto")
    system_prompt: Optional[str] = help_field("chat format: a system message before each prompt", default=None)
    pause_countdown: bool = help_field("pauses also read an embedding of the pauses still to come (countdown.py)", default=False)

    def __post_init__(self):
        check(self.position_numbering in NUMBERINGS + ("auto",), "position_numbering",
               f"must be one of {NUMBERINGS + ('auto',)}, got {self.position_numbering!r}")
        for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_position_embeddings"):
            check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        check(self.hidden_size % self.num_heads == 0, "hidden_size",
               f"must be divisible by num_heads={self.num_heads}, got {self.hidden_size}")
        check(self.pause_slots >= 0, "pause_slots", f"must be >= 0, got {self.pause_slots}")
        check(self.pause_slots >= 1 or self.resolved_numbering() != "slotted", "pause_slots",
              "must be >= 1 with slotted numbering (0 slots leave no room for a pause: it would train without any)")
        check(self.prompt_format in ("auto", "raw", "chat"), "prompt_format",
              f"must be one of ('auto', 'raw', 'chat'), got {self.prompt_format!r}")

    def resolved_numbering(self) -> str:
        if self.position_numbering != "auto":
            return self.position_numbering
        return "slotted" if not self.name_or_path else "contiguous"


@dataclass(frozen=True)
class PauseSettings:
    pause_id: int
    numbering: str
    pause_slots: int


def build_tiny_lm(config: ModelConfig, vocab_size: int, pad_id: int, bos_id: int, eos_id: int) -> LlamaForCausalLM:
    """The embedded default: a small Llama built from a config (0.54M parameters at the defaults)."""
    lm_config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        intermediate_size=config.intermediate_size,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=pad_id,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
    )
    return LlamaForCausalLM(lm_config)


def set_pause_settings(model, numbering: str, pause_slots: int, pause_id: int | None = None) -> None:
    check_numbering(numbering, pause_slots)
    setattr(model.config, NUMBERING_KEY, numbering)
    setattr(model.config, SLOTS_KEY, pause_slots)
    if pause_id is not None:  # recorded so that a later load can check the tokenizer agrees
        setattr(model.config, PAUSE_ID_KEY, int(pause_id))


def pause_settings(model, tokenizer) -> PauseSettings:
    """The settings a model was trained with; a clear error when they are missing."""
    base_config = getattr(model, "get_base_model", lambda: model)().config
    numbering = getattr(base_config, NUMBERING_KEY, None)
    slots = getattr(base_config, SLOTS_KEY, None)
    if numbering is None or slots is None:
        raise ValueError(f"model config has no {NUMBERING_KEY!r}/{SLOTS_KEY!r}; load the model with adaptive_pause."
                         "modeling.load_lm (or call set_pause_settings) so pauses are numbered consistently")
    return PauseSettings(pause_token_id(tokenizer), numbering, int(slots))


def load_lm(config: ModelConfig, seed: int = 0):
    """(model, tokenizer) with `<pause>` present and pause settings recorded.

    `config.name_or_path` may be empty (the tiny model, built from the config), an HF id, a local HF model
    directory, or a run directory of ours (which holds `model/`).
    """
    path = config.name_or_path
    if not path:
        torch.manual_seed(seed)
        tokenizer = build_char_tokenizer()
        model = build_tiny_lm(config, len(tokenizer), tokenizer.pad_token_id, tokenizer.bos_token_id,
                              tokenizer.eos_token_id)
        set_pause_settings(model, config.resolved_numbering(), config.pause_slots, pause_token_id(tokenizer))
        set_prompt_format(tokenizer, config.prompt_format, config.system_prompt)
        return model, tokenizer
    model, tokenizer = load_saved_lm(path)
    if getattr(model.config, NUMBERING_KEY, None) is None:
        # A plain HF model: its positions were learned contiguously.
        set_pause_settings(model, config.resolved_numbering(), config.pause_slots, pause_token_id(tokenizer))
    if PROMPT_FORMAT_KEY not in tokenizer.init_kwargs:  # a plain HF tokenizer (one of our runs recorded its format)
        set_prompt_format(tokenizer, config.prompt_format, config.system_prompt)
    return model, tokenizer


def load_saved_lm(path: str | os.PathLike):
    """Load a model + tokenizer from a run dir (`model/` inside), a local model dir, or an HF id."""
    path = str(path)
    if (Path(path) / "model").is_dir():
        path = str(Path(path) / "model")
    local = Path(path).expanduser()
    if not local.exists() and (local.is_absolute() or path.startswith((".", "~")) or path.count("/") > 1):
        raise ValueError(f"{path}: no such model or run directory")
    if local.is_dir():
        verify_checksums(local)
    if is_reference(local):  # a lean run: model/ refers to its (fingerprinted) base
        return load_countdown(*load_reference(local), local)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path)
    except Exception as err:  # noqa: BLE001 - re-raised with the path and the cause, never swallowed
        kind = "a corrupt or incomplete model directory" if local.is_dir() else "not a local directory or loadable HF id"
        raise ValueError(f"{path}: {kind}: {type(err).__name__}: {err}") from err
    if getattr(model.config, NUMBERING_KEY, None) is None:
        ensure_pause_token(tokenizer, model)  # a plain HF model: add <pause> and resize
        if local.is_dir():  # runs over it may refer to it instead of copying it (base_ref.should_refer)
            setattr(model, BASE_ATTR, local.resolve())
    else:
        # One of our runs: its tokenizer must already have the <pause> the model was trained with.
        saved_id = getattr(model.config, PAUSE_ID_KEY, None)
        tokenizer_id = pause_token_id(tokenizer)
        if saved_id is not None and saved_id != tokenizer_id:
            raise ValueError(f"{path}: tokenizer and model disagree on <pause>: tokenizer id {tokenizer_id}, "
                             f"model trained with id {saved_id}")
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    rows = model.get_input_embeddings().weight.shape[0]
    if rows < len(tokenizer):
        raise ValueError(f"{path}: tokenizer has {len(tokenizer)} tokens but the model only {rows} embedding rows")
    return load_countdown(model, tokenizer, local)


def save_lm(model, tokenizer, path: str | os.PathLike, state_dict: dict | None = None) -> None:
    """save_pretrained (safetensors) of model and tokenizer, written atomically.

    `state_dict`: the full weights when they are sharded (FSDP: `accelerator.get_state_dict(model)`).
    """
    base = should_refer(model) if state_dict is None else None
    if state_dict is not None:
        state_dict = without_tied_copy(model, state_dict)
    with atomic_dir(path) as tmp:
        save_countdown(model, tmp, state_dict)
        if base is not None:
            write_reference(model, tokenizer, base, tmp)
            return
        model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)


@contextlib.contextmanager
def peft_quietly():
    """peft (0.21) still calls transformers' `*gradient_checkpointing*` names, which transformers 5 deprecates:
    a FutureWarning at every load that no user of ours can act on. Filtered here, where we call peft, not
    globally."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.* is deprecated", category=FutureWarning)
        yield


# ---- AdaptivePauseModel -------------------------------------------------------------------------------------------

ADAPTER_DIR = "adapter"
CONTROLLER_DIR = "controller"
URGENCY_DIR = "urgency"
MODEL_DIR = "model"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
PARTS = "parts.json"  # which parts a run directory's model is made of, so a missing one is an error


def write_parts(run_dir: str | os.PathLike, adapter: bool) -> None:
    (Path(run_dir) / PARTS).write_text(json.dumps({"adapter": adapter}) + "\n")


def load_adapter(lm, adapter_dir: Path, trainable: bool = False):
    """`lm` wrapped in the LoRA adapter saved in `adapter_dir` (checksummed; trainable to continue training it)."""
    from peft import PeftModel

    # Without weights peft would look the directory's name up on the HF hub: refuse first.
    if not any((adapter_dir / name).is_file() for name in ADAPTER_WEIGHTS):
        raise ValueError(f"{adapter_dir}: no adapter weights ({' or '.join(ADAPTER_WEIGHTS)})")
    verify_checksums(adapter_dir)
    try:
        with peft_quietly():
            return PeftModel.from_pretrained(lm, str(adapter_dir), is_trainable=trainable)
    except Exception as err:  # noqa: BLE001 - peft raises several types; re-raised with the path
        raise ValueError(f"{adapter_dir}: corrupt or mismatched adapter: {type(err).__name__}: {err}") from err


def _adapter_expected(run_dir: Path) -> bool:
    try:
        return bool(json.loads((run_dir / PARTS).read_text()).get("adapter"))
    except (OSError, ValueError, AttributeError):
        return False  # runs written before parts.json, or a plain model directory


@dataclass
class GenerateOutput:
    """What `AdaptivePauseModel.generate` returns; lists are per prompt."""

    texts: list[str]  # decoded answers (pauses and EOS removed)
    answer_ids: list[list[int]]  # answer token ids (EOS excluded)
    pauses: list[int]  # pauses spent on each answer
    pauses_per_token: list[list[int]]  # pauses before each answer token (and before EOS when emitted)
    steps: list[int]  # tokens appended after the prompt (pauses + answer tokens)
    forward_passes: int  # sequential forward passes after prefill (latency in model calls)
    finish_reasons: list[str]  # eos | stop_string | max_new_tokens | cancelled
    time_s: list[float]  # wall-clock per row, prefill included
    result: DecodeResult  # the full record (trace of actions, log-probs, values, controller inputs)
    urgency_estimated: list[float | None] | None = None  # the estimator's output for "auto" rows, else None
    urgency_used: list[float] | None = None  # the controller's urgency input per row (before any urgency_schedule)


class AdaptivePauseModel:
    """An LM (optionally with a peft adapter) plus a pause controller, behind one `generate` call.

    lm: a HF causal LM or a peft model around one, with pause settings in its
    config (`load_lm` / `set_pause_settings`); tokenizer: with `<pause>`;
    policy: any `PausePolicy` (None: pass one to `generate`).
    """

    def __init__(self, lm, tokenizer, policy: PausePolicy | None = None,
                 urgency_estimator: UrgencyEstimator | None = None):
        self.lm = lm
        self.tokenizer = tokenizer
        self.settings = pause_settings(lm, tokenizer)
        if policy is not None:
            policy.check_hidden_size(self.hidden_size)
        self.policy = policy
        if urgency_estimator is not None:
            check_estimator(self, urgency_estimator)
        self.urgency_estimator = urgency_estimator  # reads urgency from the prompt: generate(urgency="auto")
        # The pause settings the saved controller was trained under (RUN_DIR/decode.yaml, written by
        # train-controller): generate's defaults, so that a run is decoded as it was trained.
        self.trained_decode: dict = {}

    @property
    def hidden_size(self) -> int:
        return int(base_model(self.lm).config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.lm.parameters()).device

    def to(self, device) -> "AdaptivePauseModel":
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"device: {device!r} is not a torch device ({err})") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device: cuda was asked for, but torch sees no CUDA device (or this torch has no CUDA)")
        self.lm.to(device)
        for part in (self.policy, self.urgency_estimator):
            if part is not None:
                part.to(device)
        return self

    # ---- run directory round trip --------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, run_dir: str | os.PathLike, merge_adapter: bool = False,
                        device: str | torch.device | None = None) -> "AdaptivePauseModel":
        """Load run_dir/model (or a plain HF model dir: `<pause>` added, contiguous numbering; pass a policy such
        as `policies.FixedPauses(k)` to `generate`), run_dir/adapter if present, run_dir/controller if present.

        merge_adapter folds LoRA into the weights (faster decoding; the result is a plain HF model).
        """
        run_dir = Path(run_dir)
        if not run_dir.expanduser().is_dir():  # a run is local: never ask the hub for a mistyped path
            raise ValueError(f"run_dir: {run_dir} is not a directory (a run directory or a local HF model directory)")
        lm, tokenizer = load_saved_lm(run_dir)
        if getattr(lm.config, NUMBERING_KEY, None) is None:
            # A plain HF directory (load_saved_lm added <pause>): numbered as load_lm numbers a pretrained base.
            plain = ModelConfig(name_or_path=str(run_dir))
            set_pause_settings(lm, plain.resolved_numbering(), plain.pause_slots, pause_token_id(tokenizer))
        if PROMPT_FORMAT_KEY not in tokenizer.init_kwargs:
            set_prompt_format(tokenizer, "auto")
        settings = pause_settings(lm, tokenizer)
        hidden = int(lm.config.hidden_size)
        adapter_dir = run_dir / ADAPTER_DIR
        if not adapter_dir.is_dir() and _adapter_expected(run_dir):
            raise ValueError(f"{adapter_dir}: missing, but {run_dir / 'model'} is the base of a LoRA run "
                             "(its parts.json lists an adapter); the bare base would answer without it")
        if adapter_dir.is_dir():
            lm = load_adapter(lm, adapter_dir)
            if merge_adapter:
                lm = lm.merge_and_unload()
                if hasattr(lm, BASE_ATTR):  # merged weights are no longer the base's: save them in full
                    delattr(lm, BASE_ATTR)
        policy = None
        if (run_dir / CONTROLLER_DIR).is_dir():
            policy = load_policy(run_dir / CONTROLLER_DIR, hidden_size=hidden)
        facts = {"tokenizer": {"pause_id": settings.pause_id},
                 "model": {"hidden_size": hidden, "embedding_rows": int(lm.get_input_embeddings().weight.shape[0])}}
        if policy is not None and policy.hidden_size is not None:
            facts["controller"] = {"hidden_size": int(policy.hidden_size)}
        check_agreement(facts)
        lm.eval()
        estimator = None
        if (run_dir / URGENCY_DIR).is_dir():
            estimator = load_estimator(run_dir / URGENCY_DIR, hidden_size=hidden, vocab_size=len(tokenizer),
                                       pause_id=settings.pause_id)
        model = cls(lm, tokenizer, policy, estimator)
        model.trained_decode = read_trained_decode(run_dir) if policy is not None else {}
        return model.to(device) if device is not None else model

    def save_pretrained(self, run_dir: str | os.PathLike, state_dict: dict | None = None,
                        policy_state_dict: dict | None = None) -> None:
        """Write run_dir/model (base LM + tokenizer), run_dir/adapter (if peft), run_dir/controller (if a policy).

        `state_dict`, `policy_state_dict`: the LM's and the policy's full weights, gathered on this process, when
        their own are shards (FSDP: reading a shard's state dict is a collective the other processes skip)."""
        run_dir = Path(run_dir)
        is_peft = hasattr(self.lm, "get_base_model")
        with atomic_dir(run_dir / MODEL_DIR) as tmp:
            base = base_model(self.lm)
            reference = should_refer(base)
            save_countdown(base, tmp)
            if reference is not None:  # a large base: refer to it (path + fingerprint), do not copy it
                write_reference(base, self.tokenizer, reference, tmp)
            elif is_peft:
                base.save_pretrained(tmp, state_dict=base_state_dict(self.lm, state_dict), safe_serialization=True)
            else:
                base.save_pretrained(tmp, safe_serialization=True,
                                     state_dict=None if state_dict is None else without_tied_copy(base, state_dict))
            if reference is None:
                self.tokenizer.save_pretrained(tmp)
        if is_peft:
            with atomic_dir(run_dir / ADAPTER_DIR) as tmp:
                self.lm.save_pretrained(tmp, save_embedding_layers=False, state_dict=state_dict)
        if self.policy is not None:
            save_policy(self.policy, run_dir / CONTROLLER_DIR, policy_state_dict)
            if self.trained_decode:
                write_trained_decode(run_dir, self.trained_decode)
        if self.urgency_estimator is not None:
            save_estimator(self.urgency_estimator, run_dir / URGENCY_DIR)
        write_parts(run_dir, adapter=is_peft)

    # ---- generation ----------------------------------------------------------------------------------------------
    def encode(self, prompts: Sequence[str]) -> list[list[int]]:
        """Prompt texts -> token ids, exactly as the collators encode prompts (`tokens.encode_prompts`)."""
        if not isinstance(prompts, (list, tuple)):
            raise ValueError("prompts: expected a list of strings, got " + ("a single string (wrap it in a list)"
                             if isinstance(prompts, str) else type(prompts).__name__))
        if len(prompts) == 0:
            raise ValueError("prompts: need at least one prompt")
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise ValueError(f"prompts[{i}]: expected a string, got {type(prompt).__name__}")
            if not prompt:
                raise ValueError(f"prompts[{i}]: empty prompt")
        return encode_prompts(self.tokenizer, list(prompts))

    def _policy(self, policy: PausePolicy | None) -> PausePolicy:
        policy = self.policy if policy is None else policy
        if policy is None:
            raise ValueError("policy: this model has no saved controller; pass policy=... "
                             "(e.g. policies.FixedPauses(k) or a PauseControllerHead)")
        if not isinstance(policy, PausePolicy):
            raise ValueError(f"policy: expected a policies.PausePolicy, got {type(policy).__name__}")
        policy.check_hidden_size(self.hidden_size)
        return policy

    def session(self, prompts: Sequence[str], urgency: UrgencyLike, config: DecodeConfig,
                seed: int | None = None) -> DecodeSession:
        """A prefilled `DecodeSession` over `prompts`: what the env and PPO rollouts step themselves."""
        return DecodeSession(self.lm, self.tokenizer, self.encode(prompts), urgency, config, self.settings.pause_id,
                             self.settings.numbering, self.settings.pause_slots, seed)

    def decode_config(self, policy: PausePolicy, decode_config: DecodeConfig | None = None,
                      **overrides) -> DecodeConfig:
        """`decode_config` (default: `DecodeConfig(record_features=False)` with the pause settings the saved
        controller was trained under, `trained_decode`) with `overrides` (DecodeConfig fields) applied, and the
        prompt summary the policy reads. Unknown fields raise ValueError naming them; overrides that take the
        saved controller outside the settings it was trained under are warned about."""
        if decode_config is None:
            trained = self.trained_decode if policy is self.policy else {}
            base = DecodeConfig(record_features=False, **trained)
        elif not isinstance(decode_config, DecodeConfig):
            raise ValueError(f"decode_config: expected a DecodeConfig, got {type(decode_config).__name__}")
        else:
            base = decode_config
        known = {f.name for f in dataclasses.fields(DecodeConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"{unknown[0]}: not a generate argument or DecodeConfig field; known: {sorted(known)}")
        overrides.setdefault("prompt_summary", policy.prompt_summary)
        config = dataclasses.replace(base, **overrides)
        if policy is self.policy:
            warn_outside_training(config, self.trained_decode)
        return config

    def estimate_urgency(self, prompts: Sequence[str], estimator: UrgencyEstimator | None = None) -> torch.Tensor:
        """The urgency estimator's reading of each prompt (the run's estimator unless one is passed): (rows,)."""
        return estimate(self, self.encode(prompts), estimator)

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], urgency: UrgencyLike | str | Sequence = 0.3,
                 policy: PausePolicy | None = None, decode_config: DecodeConfig | None = None, *,
                 seed: int | None = None, urgency_schedule: UrgencySchedule | None = None,
                 on_step: Callable[[DecodeSession], None] | None = None, urgency_adjust: UrgencyAdjust = None,
                 urgency_estimator: UrgencyEstimator | None = None, **overrides) -> GenerateOutput:
        """Answer `prompts` under `urgency`: one number in [0, 1] or "auto", or one per prompt (a list mixing them).

        "auto" rows take their urgency from the urgency estimator (the run's, or `urgency_estimator`), passed
        through `urgency_adjust` (a callable on the (rows,) estimates, or a spec such as {"scale": 1.2,
        "offset": -0.1, "max": 0.5, "min": 0.9, "clamp": [0.2, 0.8]}); the output reports per row the estimate
        and the urgency used. As transformers' `generate(..., generation_config=None, **kwargs)`: `decode_config` holds the limits
        and sampling (`DecodeConfig`), and any of its fields may be passed as keyword overrides
        (`max_new_tokens=5, max_pauses=16, first_token_pauses_only=True`). The controller (`policy`, else the
        saved one) decides pause/emit before each answer token; at a cap the emit is forced.
        `urgency_schedule` ({step: urgency} or callback(session) -> urgency | None) changes urgency
        mid-generation; `on_step(session)` may `session.cancel(rows)` or `session.interrupt(rows, texts)`.
        """
        policy = self._policy(policy)
        prompt_ids = self.encode(prompts)
        urgency, estimated = urgency_for_generate(self, urgency, prompt_ids, urgency_adjust, urgency_estimator)
        config = self.decode_config(policy, decode_config, **overrides)
        was_training = self.lm.training
        self.lm.eval()
        try:
            result = decode(self.lm, self.tokenizer, prompt_ids, policy, urgency, config, self.settings.pause_id,
                            self.settings.numbering, self.settings.pause_slots, seed=seed,
                            urgency_schedule=urgency_schedule, on_step=on_step, urgency_reader=interruption_reader(
                                self, urgency_estimator))
        finally:
            self.lm.train(was_training)
        texts = self.tokenizer.batch_decode(result.answer_ids, skip_special_tokens=True)
        return GenerateOutput(texts=texts, answer_ids=result.answer_ids, pauses=result.pauses_total.tolist(),
                              pauses_per_token=result.pauses_per_token, steps=result.steps.tolist(),
                              forward_passes=result.forward_passes, finish_reasons=result.finish_reasons,
                              time_s=result.time_s.tolist(), result=result,
                              urgency_estimated=estimated if estimated is not None else [None] * len(prompt_ids),
                              urgency_used=torch.as_tensor(urgency, dtype=torch.float32).flatten()
                              .expand(len(prompt_ids)).tolist())  # before any urgency_schedule
