"""Urgency from the prompt at generation time: estimate, adjust, resolve per row.

Owns: reading prompts through the LM for the estimator (one prefill-shaped pass, left-padded,
positions by the model's own numbering rule, so a row's states do not depend on its batch),
`urgency_adjust` (a callable or a small declarative spec turning the estimate into the
controller's input, checked for NaN and [0, 1]), `resolve_urgency`: a per-row mix of
numbers and "auto" -> (urgency used, urgency estimated), and `interruption_reader` (the
estimator re-reading a prompt with an interruption after it).

Must not: train anything (`training/urgency.py`) or decode (`decoding/`).
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence, Union

import torch

from policies import UrgencyEstimator

from .positions import position_ids
from .tokens import encode_text

AUTO = "auto"
NO_ESTIMATOR = ("urgency: 'auto' needs an urgency estimator, and this model has none; train one with "
                "`adaptive-pause train-urgency RUN_DIR` (it writes RUN_DIR/urgency/) or pass urgency_estimator=...")
# A spec's steps, applied in this order: scale, offset, then max/min with the caller's value, then clamp.
ADJUST_KEYS = ("scale", "offset", "max", "min", "clamp")
UrgencyAdjust = Union[None, Callable[[torch.Tensor], object], Mapping[str, object], str]


@torch.no_grad()
def prompt_features(lm, prompt_ids: Sequence[Sequence[int]], pad_id: int, pause_id: int, numbering: str,
                    pause_slots: int, estimator: UrgencyEstimator, batch_size: int = 64,
                    progress: str | None = None) -> torch.Tensor:
    """`estimator.features` of the LM's hidden states at `estimator.layers` for each prompt (what its trainable
    part reads; no parameters). `progress`: a label to show a progress bar under (None: no bar)."""
    from tqdm.auto import tqdm

    device = next(lm.parameters()).device
    out = []
    was_training = lm.training
    lm.eval()
    try:
        for start in tqdm(range(0, len(prompt_ids), batch_size), desc=progress, disable=progress is None):
            chunk = prompt_ids[start:start + batch_size]
            width = max(len(ids) for ids in chunk)
            input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, ids in enumerate(chunk):  # left padding, as the decode loop's prefill
                input_ids[row, width - len(ids):] = torch.as_tensor(list(ids), dtype=torch.long)
                mask[row, width - len(ids):] = 1
            input_ids, mask = input_ids.to(device), mask.to(device)
            positions = position_ids(input_ids, mask, pause_id, numbering, pause_slots)
            # Only the states are read: the vocabulary projection runs at one position (as in the decode loop).
            hidden = lm(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False,
                        output_hidden_states=True, logits_to_keep=1).hidden_states
            out.append(estimator.features(estimator.select(hidden), mask).cpu())
    finally:
        lm.train(was_training)
    return UrgencyEstimator.pad_features(out)


def parse_adjust(spec: str) -> dict:
    """CLI spec 'scale:1.2,offset:-0.1,max:0.5,min:0.9,clamp:0.2:0.8' -> the mapping `make_adjust` takes."""
    result: dict = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, rest = part.partition(":")
        try:
            values = [float(v) for v in rest.split(":")] if rest else []
        except ValueError:
            raise ValueError(f"urgency_adjust: {part!r}: expected NAME:NUMBER (clamp:LOW:HIGH)") from None
        if name in result:
            raise ValueError(f"urgency_adjust: {name!r} given twice in {spec!r}; each applies once, in the order "
                             "scale, offset, max, min, clamp (combine them into one value)")
        if name == "clamp" and len(values) == 2:
            result[name] = values
        elif name in ADJUST_KEYS and name != "clamp" and len(values) == 1:
            result[name] = values[0]
        else:
            raise ValueError(f"urgency_adjust: {part!r}: expected one of scale:X, offset:X, max:X, min:X, "
                             "clamp:LOW:HIGH")
    return result


def make_adjust(adjust: UrgencyAdjust) -> Callable[[torch.Tensor], object] | None:
    """A callable (estimates (rows,) -> adjusted (rows,)) from a callable, a mapping or a CLI string.

    The mapping: scale (multiply), offset (add), max (at least the caller's value), min (at most the
    caller's value), clamp [low, high]; applied in that order."""
    if adjust is None or callable(adjust):
        return adjust
    spec = parse_adjust(adjust) if isinstance(adjust, str) else adjust
    if not isinstance(spec, Mapping):
        raise ValueError(f"urgency_adjust: expected a callable, a mapping or a spec string, got "
                         f"{type(adjust).__name__}")
    unknown = sorted(set(spec) - set(ADJUST_KEYS))
    if unknown:
        raise ValueError(f"urgency_adjust: unknown key(s) {unknown}; known: {list(ADJUST_KEYS)}")

    def number(key: str, value) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"urgency_adjust: {key} must be a finite number, got {value!r}")
        return float(value)

    scale = number("scale", spec.get("scale", 1.0))
    offset = number("offset", spec.get("offset", 0.0))
    floor = number("max", spec["max"]) if "max" in spec else None
    ceiling = number("min", spec["min"]) if "min" in spec else None
    clamp = spec.get("clamp")
    if clamp is not None:
        if not (isinstance(clamp, (list, tuple)) and len(clamp) == 2):
            raise ValueError(f"urgency_adjust: clamp must be [low, high], got {clamp!r}")
        low, high = number("clamp", clamp[0]), number("clamp", clamp[1])
        if not 0 <= low <= high <= 1:
            raise ValueError(f"urgency_adjust: clamp needs 0 <= low <= high <= 1, got {clamp!r}")

    def apply(estimate: torch.Tensor) -> torch.Tensor:
        u = estimate * scale + offset
        if floor is not None:
            u = u.clamp(min=floor)
        if ceiling is not None:
            u = u.clamp(max=ceiling)
        if clamp is not None:
            u = u.clamp(low, high)
        return u

    return apply


def _checked(adjusted, rows: int, auto_rows: list[int]) -> torch.Tensor:
    try:
        u = torch.as_tensor(adjusted, dtype=torch.float32).flatten()
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"urgency_adjust: must return numbers (one per 'auto' row), got {adjusted!r}") from err
    if u.numel() != rows:
        raise ValueError(f"urgency_adjust: returned {u.numel()} values for {rows} 'auto' row(s)")
    bad = [(auto_rows[i], float(v)) for i, v in enumerate(u.tolist()) if not (0.0 <= v <= 1.0)]  # NaN fails too
    if bad:
        raise ValueError("urgency_adjust: must return values in [0, 1] (not NaN); got " +
                         ", ".join(f"row {r}: {v}" for r, v in bad))
    return u


def is_auto(urgency) -> bool:
    """Whether `urgency` asks for the estimator anywhere: "auto" or a list holding it."""
    if isinstance(urgency, str):
        return True
    return isinstance(urgency, (list, tuple)) and any(isinstance(u, str) for u in urgency)


def resolve_urgency(urgency, batch: int, estimate: Callable[[list[int]], torch.Tensor] | None,
                    adjust: UrgencyAdjust = None) -> tuple[torch.Tensor, list[float | None]]:
    """(urgency used (batch,), urgency estimated per row or None) for "auto" / a list mixing numbers and "auto".

    `estimate(rows)` returns the estimator's output for those rows (batch-independent); only "auto" rows
    are estimated and adjusted. Rows given as numbers are used as given (the decode loop checks them)."""
    if isinstance(urgency, str):
        if urgency != AUTO:
            raise ValueError(f"urgency: expected a number in [0, 1], 'auto', or a list of them, got {urgency!r}")
        values = [AUTO] * batch
    else:
        values = list(urgency)
        if len(values) != batch:
            raise ValueError(f"urgency: got {len(values)} values for a batch of {batch} prompts")
        for i, v in enumerate(values):
            if isinstance(v, str) and v != AUTO:
                raise ValueError(f"urgency[{i}]: expected a number in [0, 1] or 'auto', got {v!r}")
            if not isinstance(v, str) and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ValueError(f"urgency[{i}]: expected a number in [0, 1] or 'auto', got {v!r}")
    auto_rows = [i for i, v in enumerate(values) if v == AUTO]
    estimated: list[float | None] = [None] * batch
    used = torch.tensor([0.0 if v == AUTO else float(v) for v in values], dtype=torch.float32)
    if auto_rows:
        if estimate is None:
            raise ValueError(NO_ESTIMATOR)
        raw = estimate(auto_rows).float().cpu()  # (len(auto_rows),)
        fn = make_adjust(adjust)
        adjusted = _checked(fn(raw.clone()) if fn is not None else raw, len(auto_rows), auto_rows)
        for j, row in enumerate(auto_rows):
            estimated[row] = float(raw[j])
            used[row] = adjusted[j]
    elif adjust is not None:
        make_adjust(adjust)  # a malformed spec is an error even when no row needs it
    return used, estimated


@torch.no_grad()
def estimate(model, prompt_ids: Sequence[Sequence[int]], estimator: UrgencyEstimator | None,
             batch_size: int = 64) -> torch.Tensor:  # (rows,) in [0, 1]
    """`estimator`'s (else the model's own) reading of already-encoded prompts through `model`'s LM."""
    estimator = model.urgency_estimator if estimator is None else estimator
    if estimator is None:
        raise ValueError(NO_ESTIMATOR)
    check_estimator(model, estimator)
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    settings = model.settings
    features = prompt_features(model.lm, prompt_ids, pad_id, settings.pause_id, settings.numbering,
                               settings.pause_slots, estimator, batch_size)
    was_training = estimator.training
    estimator.eval()
    try:
        return estimator.urgency_from_logits(
            estimator.logits_from_features(features.to(next(estimator.parameters()).device)))
    finally:
        estimator.train(was_training)


def check_estimator(model, estimator) -> None:
    """The estimator must be one, and read this base: hidden size, vocabulary, pause id."""
    if not isinstance(estimator, UrgencyEstimator):
        raise ValueError(f"urgency_estimator: expected a policies.UrgencyEstimator, got {type(estimator).__name__}")
    estimator.check_base(model.hidden_size, len(model.tokenizer), model.settings.pause_id)


def urgency_for_generate(model, urgency, prompt_ids, adjust: UrgencyAdjust, estimator) -> tuple[object, list | None]:
    """(the urgency the decode loop gets, the estimates per row or None): "auto" rows (or all) are estimated and
    adjusted; numbers pass through; an adjustment without any "auto" row is an error."""
    if not is_auto(urgency):
        if adjust is not None:
            raise ValueError("urgency_adjust: adjusts estimated urgency; give urgency='auto' (or 'auto' rows)")
        return urgency, None
    has_estimator = estimator is not None or model.urgency_estimator is not None
    reader = (lambda rows: estimate(model, [prompt_ids[r] for r in rows], estimator)) if has_estimator else None
    return resolve_urgency(urgency, len(prompt_ids), reader, adjust)


def interruption_reader(model, estimator: UrgencyEstimator | None = None):
    """What `DecodeSession.interrupt` calls for an interruption's urgency when its caller gives none: the
    estimator (`estimator`, else the run's) re-reads each interrupted row's prompt with the interruption after
    it, as it read phrases after prompts in training. None without an estimator (urgency then stays)."""
    if estimator is None and model.urgency_estimator is None:
        return None

    def read(session, rows: list[int], texts: list[str]) -> torch.Tensor:  # (len(rows),)
        width = session.prompt_len
        ids = [session._ids[r, :width][session._mask[r, :width].bool()].tolist()
               + encode_text(model.tokenizer, " " + text, what="interruption") for r, text in zip(rows, texts)]
        return estimate(model, ids, estimator)

    return read
