"""The HTTP server, in-process on loopback: served answers equal offline generate, mid-stream urgency changes,
cancel and disconnect, limits, bad inputs and auth."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
from helpers import PROMPTS, opinionated_model
from openai import OpenAI

from adaptive_pause import cli
from adaptive_pause.decoding import DecodeConfig
from adaptive_pause.serving import create_app
from adaptive_pause.serving.command import background_server
from adaptive_pause.tokens import encode_text, ensure_interrupt_tokens
from adaptive_pause.urgency import estimate
from policies import ConfidenceThreshold, UrgencyEstimator

NAME = "tiny"
CONFIG = DecodeConfig(max_new_tokens=16, max_pauses=4, record_features=False)


class SlowThreshold(ConfidenceThreshold):
    """ConfidenceThreshold that takes a few ms per decision, so a request is still running when a test acts."""

    def decide(self, inputs, greedy=False, generator=None):
        time.sleep(0.004)
        return super().decide(inputs, greedy, generator)


@pytest.fixture(scope="module")
def model():
    return opinionated_model("slotted", policy=ConfidenceThreshold(0.9))


@pytest.fixture(scope="module")
def url(model):
    with background_server(create_app(model, model_name=NAME, decode_config=CONFIG, max_batch=8)) as base:
        yield base


@pytest.fixture(scope="module")
def slow_url():
    slow = opinionated_model("slotted", policy=SlowThreshold(0.9))
    app = create_app(slow, model_name=NAME, decode_config=DecodeConfig(max_new_tokens=48, max_pauses=4,
                                                                       record_features=False),
                     max_batch=1, max_queue=1)
    with background_server(app) as base:
        yield base


@pytest.fixture(scope="module")
def interruptible():
    """A model with the interrupt markers, served one request at a time with a slow policy (contiguous numbering:
    slotted positions would leave no room in the tiny model's context for an interruption and a new answer)."""
    slow = opinionated_model("contiguous", policy=SlowThreshold(0.9))
    ensure_interrupt_tokens(slow.tokenizer, slow.lm)
    app = create_app(slow, model_name=NAME, decode_config=DecodeConfig(max_new_tokens=48, max_pauses=4,
                                                                       record_features=False), max_batch=1)
    with background_server(app) as base:
        yield slow, base


def _events(response):
    """Parsed SSE chunks of a streaming response (until [DONE])."""
    for line in response.iter_lines():
        if line.startswith("data: "):
            if line == "data: [DONE]":
                return
            yield json.loads(line[6:])


def _health(base):
    return httpx.get(f"{base}/health").json()


def _wait_idle(base, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = _health(base)
        if counts["running"] == 0 and counts["waiting"] == 0:
            return counts
        time.sleep(0.02)
    raise AssertionError(f"rows still held: {_health(base)}")


def test_served_greedy_answers_equal_offline_generate_with_requests_in_flight(model, url):
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    prompts = PROMPTS + ["5+5=", "1+2+3=", "77+1=", "4="]
    urgencies = [0.0, 0.2, 0.5, 1.0, 0.1, 0.3, 0.0, 0.7]

    def ask(i):
        extra = {"urgency": urgencies[i]}
        if i % 3 == 1:  # chat, same prompt text (this tokenizer has no chat template)
            r = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": prompts[i]}],
                                               max_tokens=8, extra_body=extra)
            return r.choices[0].message.content, r.choices[0].pauses, r.usage
        if i % 3 == 2:  # streamed: the text and the pauses come chunk by chunk
            text, pauses, usage = "", [], None
            for c in client.completions.create(model=NAME, prompt=prompts[i], max_tokens=8, stream=True,
                                               extra_body=extra):
                text += c.choices[0].text
                pauses.append(c.choices[0].pauses)
                usage = getattr(c, "usage", None) or usage
            return text, pauses, usage
        r = client.completions.create(model=NAME, prompt=prompts[i], max_tokens=8, extra_body=extra)
        return r.choices[0].text, r.choices[0].pauses, r.usage

    with ThreadPoolExecutor(len(prompts)) as pool:
        served = list(pool.map(ask, range(len(prompts))))
    paused = 0
    for i, (text, pauses, usage) in enumerate(served):
        alone = model.generate([prompts[i]], urgency=urgencies[i], decode_config=CONFIG, max_new_tokens=8)
        expected = list(alone.pauses_per_token[0])
        if i % 3 == 2 and len(expected) == len(alone.answer_ids[0]):
            expected.append(0)  # no EOS: the last chunk (finish_reason) carries no pauses
        assert (text, pauses) == (alone.texts[0], expected), prompts[i]
        assert usage.pause_tokens == alone.pauses[0] and usage.completion_tokens == len(alone.answer_ids[0])
        paused += alone.pauses[0]
    assert paused > 0  # the controller paused, so pause accounting was exercised
    assert _health(url)["peak_batch"] >= 2  # several requests shared the running batch


def test_urgency_switch_mid_stream_stops_pausing_from_the_next_step(slow_url):
    body = {"model": NAME, "prompt": "12+34=", "max_tokens": 40, "urgency": 0.0, "stream": True}
    with httpx.stream("POST", f"{slow_url}/v1/completions", json=body, timeout=30) as response:
        events = _events(response)
        first = next(events)
        assert first["choices"][0]["pauses"] > 0  # at u = 0 the model pauses before its first token
        reply = httpx.post(f"{slow_url}/v1/requests/{first['id']}/urgency", json={"urgency": 1.0}).json()
        rest = list(events)
    assert reply["urgency"] == 1.0 and reply["answer_tokens"] >= 1
    pauses = [first["choices"][0]["pauses"]] + [c["choices"][0]["pauses"] for c in rest]
    assert rest[-1]["usage"]["pause_tokens"] == reply["pauses"]  # not one pause after the switch
    assert all(p == 0 for p in pauses[reply["answer_tokens"] + 1:])
    assert len(pauses) > reply["answer_tokens"] + 2  # the stream went on after the switch


def test_interrupt_mid_stream_restarts_the_answer_as_offline(interruptible):
    """Words sent into a running answer (POST /v1/requests/{id}/interrupt) enter its context at the next step;
    the stream marks the restart, and the answer after it is what offline `generate` gives with the same
    interruption at the same step."""
    model, base = interruptible
    body = {"model": NAME, "prompt": "12+34=", "max_tokens": 48, "urgency": 0.0, "stream": True}
    text = "oh, and add 5"
    with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=30) as response:
        events = _events(response)
        first = next(events)
        reply = httpx.post(f"{base}/v1/requests/{first['id']}/interrupt", json={"text": text, "urgency": 0.5},
                           timeout=30).json()
        rest = list(events)
    assert reply["object"] == "interruption" and reply["urgency"] == 0.5 and reply["answer_tokens"] >= 1
    marks = [i for i, c in enumerate(rest) if "interrupted" in c["choices"][0]]
    assert len(marks) == 1 and rest[marks[0]]["choices"][0]["interrupted"] == {
        "text": text, "dropped_tokens": reply["answer_tokens"]}
    served = "".join(c["choices"][0]["text"] for c in rest[marks[0] + 1:])

    steps_before = reply["answer_tokens"] + reply["pauses"]  # one token slot per step at batch 1
    calls = []

    def interrupt_then(session):
        calls.append(1)
        if len(calls) == steps_before:
            session.interrupt([0], [text], urgency=0.5)

    offline = model.generate(["12+34="], urgency=0.0, max_new_tokens=48, max_pauses=4, on_step=interrupt_then)
    assert served == offline.texts[0]
    assert rest[-1]["usage"]["completion_tokens"] == len(offline.answer_ids[0])


def test_interrupt_without_urgency_rereads_the_prompt_with_the_estimator(interruptible):
    """No urgency given: the run's estimator reads the request's prompt with the interruption after it."""
    model, base = interruptible
    torch.manual_seed(0)
    model.urgency_estimator = UrgencyEstimator(model.hidden_size, width=8, vocab_size=len(model.tokenizer),
                                               pause_id=model.settings.pause_id).eval()
    try:
        body = {"model": NAME, "prompt": "12+34=", "max_tokens": 48, "urgency": 0.0, "stream": True}
        with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=30) as response:
            events = _events(response)
            first = next(events)
            reply = httpx.post(f"{base}/v1/requests/{first['id']}/interrupt", json={"text": "hurry up"},
                               timeout=30).json()
            list(events)
        ids = model.encode(["12+34="])[0] + encode_text(model.tokenizer, " hurry up")
        assert reply["urgency"] == pytest.approx(float(estimate(model, [ids], None)[0]), abs=1e-5)
    finally:
        model.urgency_estimator = None


def test_auto_urgency_is_the_estimators_reading_of_the_prompt_as_offline(model, url):
    """`"urgency": "auto"`: the run's estimator reads the request's prompt when it starts (in the scheduler's
    thread); the answer and the urgency reported are offline `generate(urgency="auto")`'s."""
    torch.manual_seed(5)
    model.urgency_estimator = UrgencyEstimator(model.hidden_size, width=8, vocab_size=len(model.tokenizer),
                                               pause_id=model.settings.pause_id).eval()
    try:
        prompts = ["12+34=", "7+8="]
        offline = model.generate(prompts, urgency="auto", decode_config=CONFIG)
        for prompt, text, used in zip(prompts, offline.texts, offline.urgency_used):
            body = httpx.post(f"{url}/v1/completions", json={"model": NAME, "prompt": prompt, "urgency": "auto",
                                                               "max_tokens": 16}, timeout=60).json()
            choice = body["choices"][0]
            assert choice["text"] == text and choice["urgency"] == pytest.approx(used, abs=1e-6)
    finally:
        model.urgency_estimator = None


def test_interrupt_errors(interruptible, url):
    _, base = interruptible
    assert httpx.post(f"{base}/v1/requests/cmpl-nope/interrupt", json={"text": "hi"}).status_code == 404
    bad = httpx.post(f"{base}/v1/requests/cmpl-nope/interrupt", json={"text": "stop <pause> now"})
    assert bad.status_code == 400 and "special-token text" in bad.json()["error"]["message"]
    assert bad.json()["error"]["param"] == "text"
    assert httpx.post(f"{base}/v1/requests/x/interrupt", json={"text": ""}).status_code == 400
    assert httpx.post(f"{base}/v1/requests/x/interrupt", json={"text": "a", "urgency": 2}).status_code == 400
    unmarked = httpx.post(f"{url}/v1/requests/x/interrupt", json={"text": "hurry"})  # no markers in this model
    assert unmarked.status_code == 400 and "interrupt markers" in unmarked.json()["error"]["message"]


def test_cancel_and_disconnect_free_the_row(slow_url):
    body = {"model": NAME, "prompt": "7+5=", "max_tokens": 48, "urgency": 0.0, "stream": True}
    with httpx.stream("POST", f"{slow_url}/v1/completions", json=body, timeout=30) as response:
        events = _events(response)
        first = next(events)
        assert httpx.delete(f"{slow_url}/v1/requests/{first['id']}").json()["cancelled"] is True
        last = list(events)[-1]
    assert last["choices"][0]["finish_reason"] == "cancelled"
    _wait_idle(slow_url)
    assert httpx.delete(f"{slow_url}/v1/requests/{first['id']}").status_code == 404

    with httpx.stream("POST", f"{slow_url}/v1/completions", json=body, timeout=30) as response:
        events = _events(response)  # held: dropping the generator would already close the stream
        next(events)
        assert _health(slow_url)["running"] == 1
    _wait_idle(slow_url)  # the client closed the stream mid-answer: the row was freed

    with pytest.raises(httpx.ReadTimeout):  # a non-streaming client that gives up
        httpx.post(f"{slow_url}/v1/completions", json={**body, "stream": False}, timeout=0.3)
    _wait_idle(slow_url)


def test_full_queue_answers_429_with_retry_after(slow_url):
    body = {"model": NAME, "prompt": "9+99=", "max_tokens": 2, "urgency": 0.0}
    long = {**body, "max_tokens": 48, "stream": True}
    with httpx.stream("POST", f"{slow_url}/v1/completions", json=long, timeout=30) as running:
        events = _events(running)
        first = next(events)  # the one batch row is taken
        waiting = threading.Thread(target=httpx.post, args=(f"{slow_url}/v1/completions",),
                                   kwargs={"json": body, "timeout": 30})
        waiting.start()
        while _health(slow_url)["waiting"] < 1:
            time.sleep(0.01)
        refused = httpx.post(f"{slow_url}/v1/completions", json=body)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["type"] == "rate_limit_error"
        httpx.delete(f"{slow_url}/v1/requests/{first['id']}")
    waiting.join(30)
    _wait_idle(slow_url)


@pytest.mark.parametrize("body, status, param", [
    ({"prompt": "1+1=", "temperature": "hot"}, 400, "temperature"),
    ({"prompt": "1+1=", "colour": "red"}, 400, "colour"),
    ({"prompt": "1+1=", "n": 2}, 400, "n"),
    ({"prompt": "1+1=", "urgency": 1.5}, 400, "urgency"),
    ({"prompt": "1+1=", "urgency": "auto"}, 400, "urgency"),  # this run has no urgency estimator
    ({"prompt": "1+1=", "seed": 2**70, "temperature": 1}, 400, "seed"),
    ({"prompt": "1+1=", "max_tokens": 100000}, 400, "max_tokens"),
    ({"prompt": "1+1=", "max_tokens": True}, 400, "max_tokens"),
    ({"prompt": "1+1=", "max_pauses": 99}, 400, "max_pauses"),
    ({"prompt": ""}, 400, "prompt"),
    ({"prompt": "1+" * 400 + "1="}, 400, "prompt"),
    ({"prompt": ["a", "b"]}, 400, "prompt"),
    ({"prompt": "1+1=", "stop": ["", "x"]}, 400, "stop"),
    ({"prompt": "1+1=", "model": "gpt-4"}, 404, "model"),
    ({}, 400, "prompt"),
])
def test_bad_inputs_get_openai_errors_naming_the_field(url, body, status, param):
    response = httpx.post(f"{url}/v1/completions", json={"model": NAME, **body})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"] and "Traceback" not in response.text


def test_malformed_bodies_and_the_server_keeps_serving(url):
    assert httpx.post(f"{url}/v1/completions", content=b"{not json").json()["error"]["param"] == "body"
    big = httpx.post(f"{url}/v1/completions", content=b"x" * ((1 << 20) + 1))
    assert big.status_code == 413 and "error" in big.json()
    assert httpx.post(f"{url}/v1/chat/completions", json={"model": NAME, "messages": []}).json()[
        "error"]["param"] == "messages"
    assert httpx.post(f"{url}/v1/requests/nope/urgency", json={"urgency": 2}).json()["error"]["param"] == "urgency"
    assert httpx.post(f"{url}/v1/requests/nope/urgency", json={"urgency": 0.5}).status_code == 404
    assert httpx.get(f"{url}/v1/nothing").status_code == 404
    ok = httpx.post(f"{url}/v1/completions", json={"model": NAME, "prompt": "1+1=", "max_tokens": 3})
    assert ok.status_code == 200 and ok.json()["choices"][0]["finish_reason"] in ("stop", "length")
    assert httpx.get(f"{url}/v1/models").json()["data"][0]["id"] == NAME


def test_api_key_is_required_when_set_and_for_non_loopback_hosts(model, capsys):
    app = create_app(model, model_name=NAME, decode_config=CONFIG, api_key="s3cret")
    with background_server(app) as base:
        assert httpx.get(f"{base}/v1/models").status_code == 401
        wrong = httpx.get(f"{base}/v1/models", headers={"Authorization": "Bearer s3cre"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        client = OpenAI(base_url=f"{base}/v1", api_key="s3cret", max_retries=0)
        assert client.models.list().data[0].id == NAME
        assert httpx.get(f"{base}/health").status_code == 200  # health is open
    assert cli.main(["serve", "some/run", "--host", "0.0.0.0"]) == 2
    assert "needs --api_key" in capsys.readouterr().err


def test_stop_text_ends_the_answer_before_it(model, url):
    alone = model.generate(["12+34="], urgency=0.5, decode_config=CONFIG, max_new_tokens=8).texts[0]
    stop = alone[3]
    response = httpx.post(f"{url}/v1/completions", json={"model": NAME, "prompt": "12+34=", "max_tokens": 8,
                                                          "urgency": 0.5, "stop": [stop]}).json()
    assert response["choices"][0]["text"] == alone[:alone.index(stop)]
    assert response["choices"][0]["finish_reason"] == "stop"
