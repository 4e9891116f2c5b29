"""The OpenAI-compatible wire format: request models (pydantic), error bodies and response/chunk builders.

Owns: which fields a request may carry and their checks (unknown fields are refused, each error names its
field), OpenAI-style error JSON, the shapes of completions, chat completions and their stream chunks
(plus our `urgency`, `max_pauses`, per-choice `pauses` and `usage.pause_tokens`), and `chat_prompt`.

Must not: run models, schedule, or know about sockets.
"""

from __future__ import annotations

import time
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Request(BaseModel):
    # strict: "0.5" is not a number and true is not an integer; forbid: a misspelt field is an error, not ignored
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict | None = None  # accepted for client compatibility; usage is always in the last chunk
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**64)  # what torch's manual_seed takes
    n: int = Field(default=1, ge=1, le=1)
    user: str | None = None
    urgency: float | Literal["auto"] | None = None
    max_pauses: int | None = Field(default=None, ge=0)

    def stops(self) -> tuple[str, ...]:
        stops = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        if len(stops) > 4 or not all(stops):
            raise FieldError("stop", "up to 4 non-empty strings")
        return stops


class CompletionRequest(_Request):
    prompt: str | list[str]

    def text(self) -> str:
        prompts = [self.prompt] if isinstance(self.prompt, str) else self.prompt
        if len(prompts) != 1:
            raise FieldError("prompt", f"expected one prompt (a string or a list of one), got {len(prompts)}")
        if not prompts[0]:
            raise FieldError("prompt", "empty prompt")
        return prompts[0]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: Literal["system", "user", "assistant", "developer"]
    content: str
    name: str | None = None


class ChatRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)


class UrgencyUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    urgency: float = Field(ge=0, le=1)


class InterruptUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    text: str = Field(min_length=1, max_length=4000)
    urgency: Optional[float] = Field(default=None, ge=0, le=1)


class FieldError(ValueError):
    """A request field is invalid: `param` names it (OpenAI's `error.param`)."""

    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}")
        self.param, self.message = param, message


def parse(model: type[BaseModel], data) -> BaseModel:
    """Validate `data` into `model`; the first error becomes a FieldError naming its field."""
    if not isinstance(data, dict):
        raise FieldError("body", "expected a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = [str(part) for part in first.get("loc", ()) if not str(part).startswith(("function-", "literal["))]
        # pydantic adds the union member's type to the location ("urgency.float"); keep the field's path
        loc = [p for p in loc if p not in ("str", "float", "int", "list[str]", "list", "dict", "bool")] or ["body"]
        message = "unknown field" if first.get("type") == "extra_forbidden" else first.get("msg", "invalid value")
        raise FieldError(".".join(loc), message) from None


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def chat_prompt(tokenizer, messages: list[ChatMessage]) -> str:
    """The prompt text of a chat: the tokenizer's chat template if it has one, else the contents joined by
    newlines (the demo's models are prompted with the bare task text)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([m.model_dump(exclude_none=True) for m in messages], tokenize=False,
                                             add_generation_prompt=True)
    return "\n".join(m.content for m in messages)


def usage(prompt_tokens: int, completion_tokens: int, pause_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens, "pause_tokens": pause_tokens}


def completion(request_id: str, model: str, chat: bool, text: str, finish_reason: str, pauses: list[int],
               urgency: float, usage_: dict) -> dict:
    """A whole response. `pauses`: the pauses before each answer token (and before EOS when emitted)."""
    choice = {"index": 0, "finish_reason": finish_reason, "pauses": pauses, "urgency": urgency, "logprobs": None}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {"id": request_id, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
            "model": model, "choices": [choice], "usage": usage_}


def chunk(request_id: str, model: str, chat: bool, text: str | None, pauses: int, finish_reason: str | None = None,
          usage_: dict | None = None, first: bool = False) -> dict:
    """One stream chunk: the text one answer token adds and the pauses spent before it."""
    choice: dict = {"index": 0, "finish_reason": finish_reason, "pauses": pauses, "logprobs": None}
    if chat:
        delta: dict = {"role": "assistant"} if first else {}
        if text is not None:
            delta["content"] = text
        choice["delta"] = delta
    else:
        choice["text"] = text or ""
    body = {"id": request_id, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()), "model": model, "choices": [choice]}
    if usage_ is not None:
        body["usage"] = usage_
    return body
