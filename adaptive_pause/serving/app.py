"""The ASGI app (FastAPI): OpenAI-compatible endpoints over the scheduler, with limits and auth.

Owns: the routes (`/v1/completions`, `/v1/chat/completions`, `/v1/models`, `/health`, and the control
routes `POST /v1/requests/{id}/urgency`, `POST /v1/requests/{id}/interrupt`, `DELETE /v1/requests/{id}`),
turning a request into a `ServeRequest` (defaults from the server's `DecodeConfig`, checks against the model's context and
pause slots), streaming (server-sent events in OpenAI's chunk format), cancelling a request whose client
disconnects, the body-size limit, bearer auth (constant-time compare) and OpenAI-style error JSON for
every failure (no traceback reaches a client).

Must not: decode or schedule (scheduler.py), or define the wire shapes (py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import logging
import threading

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..decoding import DecodeConfig
from ..decoding.interrupt import check_interruption_text
from ..decoding.session import check_prompts
from ..tokens import interrupt_token_ids
from .protocol import (
    ChatRequest,
    CompletionRequest,
    FieldError,
    InterruptUpdate,
    UrgencyUpdate,
    chat_prompt,
    chunk,
    completion,
    error_body,
    parse,
    usage,
)
from .scheduler import QueueFull, Scheduler, ServeRequest

log = logging.getLogger("adaptive_pause.serving")


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str, param: str | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.headers = headers


class _Outbox:
    """Hands events from the scheduler thread to the event loop in batches: the loop is woken once for all
    events put before it runs (about once per decode step), not once per token. Why: each wake-up is a
    self-pipe write, and the woken loop thread then takes the GIL from the decode thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self._lock = threading.Lock()
        self._pending: list[tuple[asyncio.Queue, dict]] = []

    def put(self, queue: asyncio.Queue, event: dict) -> None:  # any thread
        with self._lock:
            self._pending.append((queue, event))
            wake = len(self._pending) == 1
        if wake:
            self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:  # the loop's thread
        with self._lock:
            pending, self._pending = self._pending, []
        for queue, event in pending:
            queue.put_nowait(event)


def _error(status: int, message: str, kind: str, param=None, code=None, headers=None) -> JSONResponse:
    return JSONResponse(error_body(message, kind, param, code), status_code=status, headers=headers)


def create_app(model, *, model_name: str = "adaptive-pause", decode_config: DecodeConfig | None = None,
               urgency: float | str = 0.3, max_batch: int = 64, max_queue: int = 256, api_key: str | None = None,
               max_body_bytes: int = 1 << 20) -> FastAPI:
    """An app serving `model` (an `AdaptivePauseModel` with a controller). `decode_config` holds the server's
    defaults and limits: its `max_new_tokens` is the default and the largest `max_tokens`, its `max_pauses`
    the default `max_pauses`; `urgency` is the default urgency ("auto": the run's urgency estimator reads each
    request's prompt, as a request's own `"urgency": "auto"`; the answer reports the value used)."""
    base = decode_config if decode_config is not None else DecodeConfig(record_features=False)
    if urgency == "auto":
        if model.urgency_estimator is None:
            raise ValueError("urgency: 'auto' needs a run with an urgency estimator (adaptive-pause train-urgency)")
    elif not 0.0 <= float(urgency) <= 1.0:
        raise ValueError(f"urgency: must lie in [0, 1], got {urgency}")
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes: must be >= 1, got {max_body_bytes}")
    scheduler = Scheduler(model, max_batch=max_batch, max_queue=max_queue)
    settings = model.settings

    @contextlib.asynccontextmanager
    async def lifespan(app_):
        app_.state.outbox = _Outbox(asyncio.get_running_loop())
        scheduler.start()
        try:
            yield
        finally:
            scheduler.stop()

    app = FastAPI(title="adaptive-pause", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.scheduler = scheduler

    @app.exception_handler(ApiError)
    async def _api_error(_request, err: ApiError):
        return _error(err.status, err.message, err.kind, err.param, err.code, err.headers)

    @app.exception_handler(FieldError)
    async def _field_error(_request, err: FieldError):
        return _error(400, str(err), "invalid_request_error", err.param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request, err: StarletteHTTPException):
        return _error(err.status_code, str(err.detail), "invalid_request_error")

    @app.exception_handler(Exception)
    async def _internal(_request, err: Exception):
        log.error("internal error: %s: %s", type(err).__name__, err)  # the traceback stays in the server log
        return _error(500, "internal server error", "server_error")

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise ApiError(401, "invalid or missing API key (Authorization: Bearer KEY)", "authentication_error",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    async def read_json(request: Request):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body_bytes):
            raise ApiError(413, f"request body larger than {max_body_bytes} bytes", "invalid_request_error")
        body = bytearray()
        async for part in request.stream():
            body += part
            if len(body) > max_body_bytes:
                raise ApiError(413, f"request body larger than {max_body_bytes} bytes", "invalid_request_error")
        try:
            return json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise FieldError("body", f"invalid JSON ({err})") from None

    def serve_request(parsed, prompt: str, emit, prefix: str) -> ServeRequest:
        if parsed.model != model_name:
            raise ApiError(404, f"model {parsed.model!r} does not exist; this server serves {model_name!r}",
                           "invalid_request_error", "model", "model_not_found")
        u = urgency if parsed.urgency is None else parsed.urgency
        if u == "auto" and model.urgency_estimator is None:
            raise FieldError("urgency", "'auto' needs a run with an urgency estimator (adaptive-pause train-urgency); "
                             "this server's has none: give a number in [0, 1]")
        if u != "auto" and not 0.0 <= float(u) <= 1.0:
            raise FieldError("urgency", f"must lie in [0, 1], got {u}")
        max_tokens = base.max_new_tokens if parsed.max_tokens is None else parsed.max_tokens
        if max_tokens > base.max_new_tokens:
            raise FieldError("max_tokens", f"at most {base.max_new_tokens} on this server (its --max_new_tokens)")
        overrides = {"stop_strings": (), "record_features": False}  # stop text is matched by the scheduler
        if parsed.max_pauses is not None:
            if settings.numbering == "slotted" and parsed.max_pauses > settings.pause_slots:
                raise FieldError("max_pauses", f"at most the model's pause_slots={settings.pause_slots}")
            overrides["max_pauses"] = parsed.max_pauses
        if parsed.temperature is not None:
            overrides["do_sample"] = parsed.temperature > 0
            if parsed.temperature > 0:
                overrides["temperature"] = parsed.temperature
        if parsed.top_p is not None:
            overrides["top_p"] = parsed.top_p
        try:
            config = model.decode_config(scheduler.policy, base, **overrides)
            ids = model.encode([prompt])[0]
            check_prompts(model.lm, [ids], config, settings.numbering, settings.pause_slots)
        except ValueError as err:
            text = str(err)
            field = text.split(":", 1)[0]
            param = {"prompts": "prompt", "prompts[0]": "prompt", "max_new_tokens": "prompt"}.get(field, field)
            if field == "max_new_tokens":  # sessions are checked at the server's limit, which rows share
                text += f" (this server's --max_new_tokens is {base.max_new_tokens})"
            raise FieldError(param, text.split(":", 1)[-1].strip()) from None
        return ServeRequest(id=scheduler.next_id(prefix), prompt_ids=ids, urgency=None if u == "auto" else float(u),
                            config=config, max_tokens=max_tokens, stop=parsed.stops(), emit=emit, seed=parsed.seed)

    async def generate(request: Request, chat: bool):
        authorize(request)
        data = await read_json(request)
        if chat:
            parsed = parse(ChatRequest, data)
            prompt = chat_prompt(model.tokenizer, parsed.messages)
        else:
            parsed = parse(CompletionRequest, data)
            prompt = parsed.text()
        events: asyncio.Queue = asyncio.Queue()
        outbox: _Outbox = request.app.state.outbox

        def emit(event: dict) -> None:  # called from the scheduler thread
            outbox.put(events, event)

        job = serve_request(parsed, prompt, emit, "chatcmpl" if chat else "cmpl")
        try:
            scheduler.submit(job)
        except QueueFull as err:
            raise ApiError(429, f"server busy: {err}; retry later", "rate_limit_error", code="queue_full",
                           headers={"Retry-After": "1"}) from None
        prompt_tokens = len(job.prompt_ids)
        if parsed.stream:
            return StreamingResponse(stream(job, events, chat, prompt_tokens), media_type="text/event-stream",
                                     headers={"X-Request-Id": job.id, "Cache-Control": "no-cache"})
        return await collect(request, job, events, chat, prompt_tokens)

    async def next_final(events: asyncio.Queue) -> dict:
        while True:
            event = await events.get()
            if event["type"] in ("done", "error"):
                return event

    async def wait_disconnect(request: Request) -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    async def collect(request: Request, job: ServeRequest, events, chat: bool, prompt_tokens: int):
        final = asyncio.ensure_future(next_final(events))
        gone = asyncio.ensure_future(wait_disconnect(request))
        await asyncio.wait({final, gone}, return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        if not final.done():  # the client left: free its row
            final.cancel()
            scheduler.cancel(job.id)
            return JSONResponse(error_body("client disconnected", "invalid_request_error"), 499)
        event = final.result()
        if event["type"] == "error":
            raise ApiError(500, event["message"], "server_error")
        counts = usage(prompt_tokens, event["completion_tokens"], event["pause_tokens"])
        return JSONResponse(completion(job.id, model_name, chat, event["text"], event["finish_reason"],
                                                event["pauses_per_token"], job.urgency, counts),
                            headers={"X-Request-Id": job.id})

    async def stream(job: ServeRequest, events, chat: bool, prompt_tokens: int):
        def sse(body: dict) -> str:
            return f"data: {json.dumps(body)}\n\n"

        ended, first = False, True
        try:
            while not ended:
                # Every event already here goes out in one write: fewer sends, and fewer wake-ups of the client.
                pending = [await events.get()]
                while not events.empty():
                    pending.append(events.get_nowait())
                out = []
                for event in pending:
                    if event["type"] == "token":
                        out.append(sse(chunk(job.id, model_name, chat, event["text"], event["pauses"], first=first)))
                        first = False
                        continue
                    if event["type"] == "interrupted":  # the answer restarts: the text so far is superseded
                        body = chunk(job.id, model_name, chat, None if chat else "", 0, first=first)
                        body["choices"][0]["interrupted"] = {"text": event["text"],
                                                             "dropped_tokens": event["dropped_tokens"]}
                        out.append(sse(body))
                        first = False
                        continue
                    ended = True
                    if event["type"] == "error":
                        out.append(sse(error_body(event["message"], "server_error")))
                    else:
                        per_token = event["pauses_per_token"]  # one more than the tokens when EOS was emitted
                        last = per_token[-1] if len(per_token) > event["completion_tokens"] else 0
                        counts = usage(prompt_tokens, event["completion_tokens"], event["pause_tokens"])
                        out.append(sse(chunk(job.id, model_name, chat, None if chat else "", last,
                                             event["finish_reason"], counts, first=first)))
                    out.append("data: [DONE]\n\n")
                    break
                yield "".join(out)
        finally:
            if not ended:  # the client disconnected (the response was cancelled): free its row
                scheduler.cancel(job.id)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await generate(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await generate(request, chat=True)

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(request)
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0,
                                            "owned_by": "adaptive-pause"}]}

    @app.get("/health")
    async def health():
        return {"status": "ok", **scheduler.counts()}

    @app.post("/v1/requests/{request_id}/urgency")
    async def change_urgency(request_id: str, request: Request):
        authorize(request)
        update = parse(UrgencyUpdate, await read_json(request))
        reply = await asyncio.to_thread(scheduler.set_urgency, request_id, update.urgency)
        if reply is None:
            raise ApiError(404, f"no running request {request_id!r}", "invalid_request_error", "id")
        return {"id": request_id, "urgency": update.urgency, **reply}

    @app.post("/v1/requests/{request_id}/interrupt")
    async def interrupt(request_id: str, request: Request):
        authorize(request)
        update = parse(InterruptUpdate, await read_json(request))
        try:
            interrupt_token_ids(scheduler.model.tokenizer)
        except ValueError:
            raise ApiError(400, "this model has no interrupt markers: it was not finetuned to be interrupted "
                           "(adaptive_pause/tasks/interruptions.py)", "invalid_request_error", "text") from None
        try:
            check_interruption_text(scheduler.model.tokenizer, update.text, "text")
        except ValueError as err:
            raise ApiError(400, str(err), "invalid_request_error", "text") from None
        reply = await asyncio.to_thread(scheduler.interrupt, request_id, update.text, update.urgency)
        if reply is None:
            raise ApiError(404, f"no running request {request_id!r}", "invalid_request_error", "id")
        if "error" in reply:
            raise ApiError(400, reply["error"], "invalid_request_error", "text")
        return {"id": request_id, "object": "interruption", "text": update.text, **reply}

    @app.delete("/v1/requests/{request_id}")
    async def cancel(request_id: str, request: Request):
        authorize(request)
        if not scheduler.cancel(request_id):
            raise ApiError(404, f"no running request {request_id!r}", "invalid_request_error", "id")
        return {"id": request_id, "object": "request", "cancelled": True}

    return app


def default_decode_config(**fields) -> DecodeConfig:
    """The server's DecodeConfig: record no features (nobody reads them) unless asked."""
    return dataclasses.replace(DecodeConfig(record_features=False), **fields)
