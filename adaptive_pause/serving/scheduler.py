"""Iteration-level scheduling (Orca, vLLM) of HTTP requests onto the one decode loop.

Owns: `ServeRequest` (one request's prompt, settings, live state and output events), `Scheduler` (a bounded
waiting queue; one background thread that drives `decoding.run_policy` over ONE running `DecodeSession`,
whose `on_step` hands out each step's tokens, applies urgency changes, interruptions and cancels, finishes
rows at their own `max_tokens` or stop text, drops finished rows and admits waiting requests between steps
through `decoding.batching`). Requests join the running batch only if their `DecodeConfig` equals its own (the
session's sampling and caps are shared); others wait until it drains, first come first served.

Must not: know about HTTP or JSON (app.py), or decode by itself (decoding/ does).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..decoding import DecodeConfig, DecodeSession, run_policy
from ..decoding.batching import admit, keep_rows, take_records
from ..decoding.trace import FINISH_NAMES
from ..tokens import encode_text
from ..urgency import estimate

log = logging.getLogger("adaptive_pause.serving")


class QueueFull(Exception):
    """The waiting queue is full; retry later."""


@dataclass
class ServeRequest:
    """One generation request. The scheduler thread owns the live fields; `emit(event)` delivers events
    (a dict: {"type": "token", "text", "pauses", "token_id"} or {"type": "done", "finish_reason", ...})."""

    id: str
    prompt_ids: list[int]
    urgency: float | None  # None: "auto", the run's urgency estimator reads the prompt when the request starts
    config: DecodeConfig
    max_tokens: int
    stop: tuple[str, ...]
    emit: Callable[[dict], None]
    seed: int | None = None
    answer_ids: list[int] = field(default_factory=list)
    pauses_per_token: list[int] = field(default_factory=list)
    text: str = ""  # the answer text handed out so far (stop text excluded)
    pauses: int = 0
    finished: bool = False
    cancel_requested: bool = False
    new_urgency: list = field(default_factory=list)  # [(urgency, threading.Event, reply dict)] not yet applied
    new_texts: list = field(default_factory=list)  # [(text, urgency or None, Event, reply dict)] not yet applied
    submitted: float = field(default_factory=time.perf_counter)

    @property
    def solo(self) -> bool:
        """A seeded sampled request decodes in its own session, so its generator (and sample) is its own."""
        return self.config.do_sample and self.seed is not None


class Scheduler:
    """A bounded queue in front of one running decode batch, stepped by one background thread."""

    def __init__(self, model, max_batch: int = 64, max_queue: int = 256):
        if max_batch < 1:
            raise ValueError(f"max_batch: must be >= 1, got {max_batch}")
        if max_queue < 1:
            raise ValueError(f"max_queue: must be >= 1, got {max_queue}")
        self.model, self.max_batch, self.max_queue = model, max_batch, max_queue
        self.policy = model._policy(None)
        self._lock = threading.Condition()
        self._waiting: deque[ServeRequest] = deque()
        self._live: dict[str, ServeRequest] = {}  # waiting and running, by id
        self._rows: list[ServeRequest] = []  # the running session's rows, in order (scheduler thread only)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._ids = itertools.count()
        self.steps = 0
        self.peak_rows = 0  # the most rows the running batch has held

    # ---- called from the server's threads -------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="adaptive-pause-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, request: ServeRequest) -> None:
        with self._lock:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are waiting (max_queue={self.max_queue})")
            self._waiting.append(request)
            self._live[request.id] = request
            self._lock.notify_all()

    def cancel(self, request_id: str) -> bool:
        """Cancel a waiting or running request (from the next step). False if it is unknown or finished."""
        with self._lock:
            request = self._live.get(request_id)
            if request is None:
                return False
            if request in self._waiting:
                self._waiting.remove(request)
                self._finish(request, "cancelled")
            else:
                request.cancel_requested = True
            return True

    def set_urgency(self, request_id: str, urgency: float, timeout: float = 30.0) -> dict | None:
        """Change a request's urgency from its next step; blocks until applied. Returns what the change met
        ({"answer_tokens": tokens emitted before it took effect, "pauses": spent so far}) or None if the
        request is unknown or finished."""
        applied, reply = threading.Event(), {}
        with self._lock:
            request = self._live.get(request_id)
            if request is None:
                return None
            if request in self._waiting:  # not prefilled yet: it starts at the new urgency
                request.urgency = urgency
                return {"answer_tokens": 0, "pauses": 0}
            request.new_urgency.append((urgency, applied, reply))
        applied.wait(timeout)
        return reply or None

    def interrupt(self, request_id: str, text: str, urgency: float | None = None,
                  timeout: float = 30.0) -> dict | None:
        """Words into a request's context (`DecodeSession.interrupt`) at its next step; blocks until applied.

        A request still waiting is interrupted at its first step. `urgency`: the request's urgency from then
        on (None: the run's urgency estimator re-reads the prompt with the interruption, else it stays).
        Returns {"answer_tokens": tokens of the answer it interrupted, "pauses": spent so far, "urgency": the
        urgency from now on} ({"error": message} if the session refused it, e.g. no room left in the model's
        context), or None if the request is unknown or ended before the step."""
        applied, reply = threading.Event(), {}
        with self._lock:
            request = self._live.get(request_id)
            if request is None:
                return None
            request.new_texts.append((text, urgency, applied, reply))
        applied.wait(timeout)
        return reply or None

    def counts(self) -> dict:
        with self._lock:
            return {"waiting": len(self._waiting), "running": len(self._live) - len(self._waiting),
                    "steps": self.steps, "peak_batch": self.peak_rows}

    # ---- the scheduler thread ---------------------------------------------------------------------------------
    def _finish(self, request: ServeRequest, reason: str) -> None:
        """Deliver the final event once (caller holds the lock or runs on the scheduler thread)."""
        if request.finished:
            return
        request.finished = True
        self._live.pop(request.id, None)
        for *_, applied, _ in request.new_urgency + request.new_texts:
            applied.set()  # the request ended first: the reply stays empty
        request.new_urgency.clear()
        request.new_texts.clear()
        request.emit({"type": "done", "finish_reason": reason, "completion_tokens": len(request.answer_ids),
                      "pause_tokens": request.pauses, "text": request.text,
                      "pauses_per_token": list(request.pauses_per_token)})

    def _take_admissible(self, config: DecodeConfig | None, room: int) -> list[ServeRequest]:
        """Waiting requests that may join a batch with `config` (None: start one), first come first served:
        the queue's head decides, and a request that cannot join stops admission (no overtaking)."""
        taken = []
        with self._lock:
            while self._waiting and len(taken) < room:
                head = self._waiting[0]
                if head.solo:  # a seeded sampled request starts a batch of its own
                    if config is None and not taken:
                        taken.append(self._waiting.popleft())
                    break
                config = head.config if config is None else config
                if head.config != config:
                    break
                taken.append(self._waiting.popleft())
        return taken

    def _prefill(self, requests: list[ServeRequest]) -> DecodeSession | None:
        s = self.model.settings
        auto = [r for r in requests if r.urgency is None]
        if auto:  # here, in the one thread that runs the model (as for an interruption's re-reading)
            for request, value in zip(auto, estimate(self.model, [r.prompt_ids for r in auto], None).tolist()):
                request.urgency = float(value)
        try:
            return DecodeSession(self.model.lm, self.model.tokenizer, [r.prompt_ids for r in requests],
                                 [r.urgency for r in requests], requests[0].config, s.pause_id, s.numbering,
                                 s.pause_slots, seed=requests[0].seed if requests[0].solo else None)
        except ValueError as err:  # checked before queueing; a request that still fails ends, the server lives
            log.warning("prefill failed: %s", err)
            with self._lock:
                for r in requests:
                    r.emit({"type": "error", "message": str(err)})
                    r.finished = True
                    self._live.pop(r.id, None)
            return None

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    for request in list(self._live.values()):
                        self._finish(request, "cancelled")
                    self._waiting.clear()
                    return
            requests = self._take_admissible(None, self.max_batch)
            session = self._prefill(requests)
            if session is None:
                continue
            self._rows = requests
            try:
                generator = None
                if requests[0].solo:
                    generator = torch.Generator(device=session.device).manual_seed(requests[0].seed + 1)
                run_policy(session, self.policy, generator=generator, on_step=self._on_step)
            except Exception:
                log.exception("decode loop failed")
                with self._lock:
                    for request in self._rows:
                        if not request.finished:
                            request.emit({"type": "error", "message": "internal error while decoding"})
                            request.finished = True
                            self._live.pop(request.id, None)
            self._rows = []

    def _on_step(self, session: DecodeSession) -> None:
        """Between two steps: hand out tokens, finish rows, apply control, drop finished rows, admit new ones."""
        self.steps += 1
        rows = self._rows
        tokenizer = self.model.tokenizer
        eos = set(session.eos_ids.tolist())
        for record in take_records(session):
            for i, (valid, token, pause, before) in enumerate(zip(
                    record.valid.tolist(), record.tokens.tolist(), record.is_pause.tolist(),
                    record.pauses_before_token.tolist())):
                request = rows[i]
                if not valid or request.finished:
                    continue
                if pause:
                    request.pauses += 1
                    continue
                request.pauses_per_token.append(before)
                if token in eos:
                    continue
                request.answer_ids.append(token)
                self._emit_text(request, tokenizer, before, token)
        cancel = torch.zeros(session.batch, dtype=torch.bool)
        active = session.active.tolist()
        reasons = session.finish_reason.tolist()
        with self._lock:
            stopping = self._stopping
            for i, request in enumerate(rows):
                if request.finished:  # stop text seen in _emit_text
                    cancel[i] = active[i]
                elif not active[i]:
                    name = FINISH_NAMES[reasons[i]]
                    self._finish(request, {"eos": "stop", "stop_string": "stop", "max_new_tokens": "length"}.get(
                        name, name))
                elif request.cancel_requested or stopping:
                    cancel[i] = True
                    self._finish(request, "cancelled")
                elif len(request.answer_ids) >= request.max_tokens:
                    cancel[i] = True
                    self._finish(request, "length")
                else:
                    for urgency, applied, reply in request.new_urgency:
                        session.set_urgency(urgency, [i])
                        request.urgency = urgency
                        reply.update(answer_tokens=len(request.pauses_per_token), pauses=request.pauses)
                        applied.set()
                    request.new_urgency.clear()
                    for text, urgency, applied, reply in request.new_texts:
                        self._interrupt_row(session, i, request, text, urgency, reply)
                        applied.set()
                    request.new_texts.clear()
        if bool(cancel.any()):
            session.cancel(cancel)
        keep = session.active.cpu()
        dropping = not bool(keep.all())
        if not stopping and not rows[0].solo:
            newcomers = self._take_admissible(session.config, self.max_batch - int(keep.sum()))
            fresh = self._prefill(newcomers) if newcomers else None
            if fresh is not None:  # finished rows leave in the same cache rebuild as the newcomers join
                self._rows = rows + newcomers  # should admit fail, the newcomers get the error too
                admit(session, fresh, keep if dropping else None)
                rows = [r for r, k in zip(rows, keep.tolist()) if k] if dropping else rows
                self._rows = rows = rows + newcomers
                self.peak_rows = max(self.peak_rows, len(rows))
                return
        if dropping and bool(keep.any()):
            keep_rows(session, keep)
            rows = [r for r, k in zip(rows, keep.tolist()) if k]
        self._rows = rows
        self.peak_rows = max(self.peak_rows, len(rows))

    def _interrupt_row(self, session: DecodeSession, row: int, request: ServeRequest, text: str,
                       urgency: float | None, reply: dict) -> None:
        """Apply one interruption to `row` (scheduler thread, lock held). The row's answer restarts, as in
        `generate`: the request's answer so far is dropped (a streaming client got an "interrupted" event)."""
        if urgency is None and self.model.urgency_estimator is not None:
            # The estimator re-reads the request's own prompt with the interruption after it, as `generate` does;
            # from the request's ids, which stay exact however the batch was rebuilt since.
            urgency = float(estimate(self.model, [request.prompt_ids + encode_text(
                self.model.tokenizer, " " + text, what="text")], None)[0])
        try:
            session.interrupt([row], [text], urgency=urgency)
        except ValueError as err:  # e.g. no room left in the model's context: the request runs on unchanged
            reply["error"] = str(err)
            return
        reply.update(answer_tokens=len(request.answer_ids), pauses=request.pauses,
                     urgency=float(session.urgency[row]))
        request.urgency = reply["urgency"]
        request.answer_ids, request.pauses_per_token, request.text = [], [], ""
        request.emit({"type": "interrupted", "text": text, "dropped_tokens": reply["answer_tokens"]})

    def _emit_text(self, request: ServeRequest, tokenizer, pauses: int, token: int) -> None:
        """Send the text this token adds (decoding the whole answer: a token may complete a multi-byte
        character); end the request at its first stop text (OpenAI: the stop text is not returned)."""
        text = tokenizer.decode(request.answer_ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an unfinished character: wait for the next token
            request.emit({"type": "token", "text": "", "pauses": pauses, "token_id": token})
            return
        for stop in request.stop:
            at = text.find(stop, max(0, len(request.text) - len(stop)))
            if at >= 0:
                delta = text[len(request.text):at]
                request.text = text[:at]
                request.emit({"type": "token", "text": delta, "pauses": pauses, "token_id": token})
                with self._lock:
                    self._finish(request, "stop")
                return
        delta, request.text = text[len(request.text):], text
        request.emit({"type": "token", "text": delta, "pauses": pauses, "token_id": token})

    def next_id(self, prefix: str) -> str:
        return f"{prefix}-{time.time_ns():x}{next(self._ids):x}"
