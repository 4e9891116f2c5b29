"""The scheduler without HTTP: a request that arrives just as every running row finishes is still answered,
and exactly as offline generate answers it."""

import threading

from helpers import PROMPTS, opinionated_model

from adaptive_pause.decoding import DecodeConfig
from adaptive_pause.serving.scheduler import Scheduler, ServeRequest
from policies import ConfidenceThreshold

CONFIG = DecodeConfig(max_new_tokens=6, max_pauses=4, record_features=False)


class ArrivesAsAllFinish(Scheduler):
    """Submits `late` at the first step boundary where every running row has finished (the step ran no
    forward pass, so the running session's cache is one column short of its length)."""

    def __init__(self, model, late: ServeRequest):
        super().__init__(model, max_batch=8)
        self.late, self.submitted_late = late, False

    def _on_step(self, session):
        if session.done and not self.submitted_late:
            self.submitted_late = True
            self.submit(self.late)
        super()._on_step(session)


def _request(model, scheduler_policy, prompt: str, urgency: float, name: str):
    done, events = threading.Event(), []

    def emit(event):
        events.append(event)
        if event["type"] in ("done", "error"):
            done.set()

    config = model.decode_config(scheduler_policy, CONFIG, stop_strings=(), record_features=False)
    request = ServeRequest(id=name, prompt_ids=model.encode([prompt])[0], urgency=urgency, config=config,
                           max_tokens=CONFIG.max_new_tokens, stop=(), emit=emit)
    return request, done, events


def test_a_request_arriving_as_every_row_finishes_is_answered_as_offline():
    model = opinionated_model("slotted", policy=ConfidenceThreshold(0.9))
    policy = model._policy(None)
    first, first_done, _ = _request(model, policy, PROMPTS[0], 0.2, "first")
    late, late_done, late_events = _request(model, policy, PROMPTS[1], 0.0, "late")
    scheduler = ArrivesAsAllFinish(model, late)
    scheduler.start()
    try:
        scheduler.submit(first)
        assert first_done.wait(30) and late_done.wait(30), "a request was lost"
    finally:
        scheduler.stop()
    assert scheduler.submitted_late and late_events[-1]["type"] == "done", late_events[-1]
    alone = model.generate([PROMPTS[1]], urgency=0.0, decode_config=CONFIG)
    assert late.answer_ids == alone.answer_ids[0] and late.pauses_per_token == alone.pauses_per_token[0]
