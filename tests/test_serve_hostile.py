"""Hostile requests to the server: none hurts another request, none is a 500, none from a web
page or an absent client gets work done. In-process, with the app object and httpx."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from uldkit.data.sources import DataSource
from uldkit.models.generation import GenerationSettings, generate_answers
from uldkit.models.loading import save_model
from uldkit.models.tiny import build_tiny_llama
from uldkit.models.tokenizer import train_bpe_tokenizer
from uldkit.serve import create_app
from uldkit.unlearning.load import load_language_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    # Untrained: its answers are as good as any for these checks, and it practically never
    # ends an answer early (EOS is one token of 512), so generation runs as long as asked.
    tokenizer = train_bpe_tokenizer(DataSource("synthetic", people=20).texts(), vocab_size=512)
    out = save_model(build_tiny_llama(tokenizer), tokenizer,
                     tmp_path_factory.mktemp("hostile") / "model")
    return load_language_model(out)


@pytest.fixture(scope="module")
def questions() -> list[str]:
    return ["Where was Ada born?", "What does Bo do?", "Who taught Cy?"]


async def _send(app, requests: list[dict], base_url: str = "http://localhost"):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=base_url, timeout=60) as http:
        return await asyncio.gather(*[http.request(**request) for request in requests])


def _chat(question: str, **fields) -> dict:
    return {"method": "POST", "url": "/v1/chat/completions",
            "json": {"messages": [{"role": "user", "content": question}], "max_tokens": 8,
                     **fields}}


def test_sampling_that_underflows_never_hurts_its_batch_neighbours(target, questions) -> None:
    app = create_app({"target": target}, batch_wait_ms=500)
    greedy = generate_answers(target, questions, GenerationSettings(max_new_tokens=8))
    try:
        tiny_temperature, tiny_top_p, both, neighbour = asyncio.run(_send(app, [
            _chat(questions[0], temperature=1e-300),
            _chat(questions[1], temperature=1.0, top_p=1e-300, seed=1),
            _chat(questions[1], temperature=5e-324, top_p=5e-324),
            _chat(questions[2], temperature=0),
        ]))
        assert app.state.engine.largest_batch == 4  # all decoded together
    finally:
        app.state.engine.close()
    for response in (tiny_temperature, tiny_top_p, both, neighbour):
        assert response.status_code == 200, response.text
    answer = [r.json()["choices"][0]["message"]["content"]
              for r in (tiny_temperature, tiny_top_p, both, neighbour)]
    # A vanishing temperature or top_p leaves only the most likely token: the greedy answer.
    assert answer == [greedy[0], greedy[1], greedy[1], greedy[2]]


def test_a_lone_surrogate_is_a_400_naming_where_it_is(target) -> None:
    app = create_app({"target": target})
    raw = [
        ('{"messages": [{"role": "user", "content": "hi \\ud800"}]}', "messages[0].content"),
        ('{"messages": [{"role": "user", "content": "x"}], "stop": ["\\udfff"]}', "stop[0]"),
        ('{"messages": [{"role": "user", "content": "x"}], "model": "\\ud800"}', "model"),
        ('{"messages": [{"role": "user", "content": "x"}], "\\ud800": 1}', None),
    ]
    requests = [{"method": "POST", "url": "/v1/chat/completions", "content": body,
                 "headers": {"Content-Type": "application/json"}} for body, _ in raw]
    requests.append({"method": "POST", "url": "/v1/completions", "content":
                     '{"prompt": "smile \\ud83d\\ude00", "max_tokens": 2}',  # a valid pair
                     "headers": {"Content-Type": "application/json"}})
    try:
        *refused, paired = asyncio.run(_send(app, requests))
    finally:
        app.state.engine.close()
    for response, (_, param) in zip(refused, raw, strict=True):
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_unicode" and error["param"] == param
        assert error["type"] == "invalid_request_error"
    assert paired.status_code == 200, paired.text


@pytest.mark.parametrize("key", ["", "   ", "\t"])
def test_an_empty_api_key_is_refused_at_start_up(tmp_path, capsys, monkeypatch, key) -> None:
    from uldkit.cli import main

    monkeypatch.delenv("ULDKIT_API_KEY", raising=False)
    with pytest.raises(SystemExit) as stopped:
        main(["serve", "--model", str(tmp_path / "absent"), "--api-key", key])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "--api-key" in err and "empty" in err and len(err.splitlines()) == 1

    monkeypatch.setenv("ULDKIT_API_KEY", key)
    with pytest.raises(SystemExit) as stopped:
        main(["serve", "--model", str(tmp_path / "absent")])
    assert stopped.value.code == 2 and "empty" in capsys.readouterr().err
    with pytest.raises(ValueError, match="api_key"):
        create_app({"m": object()}, api_key=key)


def test_only_json_bodies_are_accepted(target, questions) -> None:
    app = create_app({"target": target})
    body = json.dumps({"messages": [{"role": "user", "content": questions[0]}],
                       "max_tokens": 2})
    types = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
             None, "application/json; charset=latin-1"]
    requests = [{"method": "POST", "url": "/v1/chat/completions", "content": body,
                 "headers": {} if kind is None else {"Content-Type": kind}} for kind in types]
    requests.append({"method": "POST", "url": "/v1/chat/completions", "content": body,
                     "headers": {"Content-Type": "Application/JSON; charset=utf-8"}})
    try:
        *refused, accepted = asyncio.run(_send(app, requests))
    finally:
        app.state.engine.close()
    for response in refused:
        assert response.status_code == 415, response.text
        assert response.json()["error"]["code"] == "unsupported_media_type"
    assert accepted.status_code == 200, accepted.text


def test_a_host_the_server_was_not_started_for_is_refused(target) -> None:
    app = create_app({"target": target}, allowed_hosts=["gpu-box.lan"])
    allowed = ["http://localhost:8000", "http://127.0.0.1:8000", "http://[::1]:8000",
               "http://10.0.0.7", "http://app.localhost", "http://GPU-BOX.lan:9000"]
    refused = ["http://evil.example", "http://evil.example:8000", "http://localhost.evil.example",
               "http://127.0.0.1.nip.io"]
    try:
        answers = {base: asyncio.run(_send(app, [{"method": "GET", "url": "/v1/models"},
                                                 {"method": "GET", "url": "/"}], base))
                   for base in allowed + refused}
        open_app = create_app({"target": target}, allowed_hosts=["*"])
        anywhere = asyncio.run(_send(open_app, [{"method": "GET", "url": "/health"}],
                                     "http://evil.example"))[0]
    finally:
        app.state.engine.close()
    for base in allowed:
        assert [r.status_code for r in answers[base]] == [200, 200], base
    for base in refused:
        for response in answers[base]:
            assert response.status_code == 403, base
            error = response.json()["error"]
            assert error["code"] == "host_not_allowed" and "--allow-host" in error["message"]
    assert anywhere.status_code == 200


def _scope(path: str, body: bytes) -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
            "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
            "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())]}


async def _call_and_leave(app, body: dict, leave_when) -> list[dict]:
    """Send `body`, then disconnect once `leave_when()` is true; what the app sent back."""
    raw = json.dumps(body).encode()
    sent: list[dict] = []
    delivered = False

    async def receive() -> dict:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": raw, "more_body": False}
        while not leave_when():
            await asyncio.sleep(0.005)
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    await asyncio.wait_for(app(_scope("/v1/completions", raw), receive, send), timeout=60)
    return sent


def _wait_idle(engine, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while engine._waiting and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_queued_request_whose_client_left_is_never_generated(target) -> None:
    app = create_app({"target": target}, batch_wait_ms=400)
    engine = app.state.engine
    try:
        sent = asyncio.run(_call_and_leave(
            app, {"prompt": "Question: Who?\nAnswer:", "max_tokens": 64}, lambda: True))
        _wait_idle(engine)
    finally:
        engine.close()
    assert [m.get("status") for m in sent if m["type"] == "http.response.start"] == [499]
    assert engine.rows_cancelled == 1 and engine.batches_run == 0
    assert engine.tokens_generated == 0


@pytest.mark.parametrize("stream", [False, True])
def test_a_generating_request_whose_client_left_stops(target, stream) -> None:
    # The client leaves after the third token; without cancelling, the row would run to its
    # 200 tokens (an untrained model does not end early).
    app = create_app({"target": target}, batch_wait_ms=0, max_tokens_cap=200)
    engine = app.state.engine
    body = {"prompt": "Question:", "max_tokens": 200, "temperature": 0, "stream": stream}
    try:
        asyncio.run(_call_and_leave(app, body, lambda: engine.tokens_generated >= 3))
        _wait_idle(engine)
    finally:
        engine.close()
    assert engine.batches_run == 1
    assert engine.rows_cancelled == 1, engine.tokens_generated
    assert engine.tokens_generated < 200
