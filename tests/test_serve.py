"""The server, as clients see it: a real `uldkit serve` process and the official openai client.

The process serves a (briefly trained) ULD model and, beside it, the plain target it was made
from. A few checks that need the inside of the app (NaN scores, batch sizes) run in-process.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import httpx
import openai
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from uldkit.data.formatting import encode_prompt, format_prompt
from uldkit.models.generation import GenerationSettings, generate_answers, generate_ids
from uldkit.serve import create_app
from uldkit.serve.launch import ServerProcess
from uldkit.serve.text import StopText
from uldkit.unlearning.load import load_language_model
from uldkit.unlearning.run import UnlearnConfig, unlearn

API_KEY = "test-key-123"
CAP = 64


@pytest.fixture(scope="module")
def uld_dir(trained_world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("serve") / "uld"
    unlearn(UnlearnConfig(method="uld", model=str(trained_world.target), out=str(out),
                          people=trained_world.people, train_overrides={"epochs": 3}),
            show_progress=False)
    return out


@pytest.fixture(scope="module")
def server(trained_world, uld_dir):
    args = ["--model", str(uld_dir), "--compare-with", str(trained_world.target),
            "--api-key", API_KEY,
            "--max-tokens-cap", str(CAP), "--batch-wait-ms", "20", "--threads", "1"]
    with ServerProcess(args) as running:
        yield running


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0,
                         timeout=60)


@pytest.fixture(scope="module")
def target(trained_world):
    return load_language_model(trained_world.target)


@pytest.fixture(scope="module")
def questions(trained_world) -> list[str]:
    return [pair.question for pair in trained_world.source.load("forget10").pairs[:6]]


def greedy_text(lm, prompt_ids: list[int], max_tokens: int = CAP) -> tuple[str, int]:
    ids = generate_ids(lm, [prompt_ids], GenerationSettings(max_new_tokens=max_tokens))[0]
    return lm.tokenizer.decode(ids, skip_special_tokens=True), len(ids)


def test_lists_the_served_models(client, trained_world, uld_dir) -> None:
    cards = {model.id: model for model in client.models.list().data}
    assert list(cards) == [uld_dir.name, trained_world.target.name]
    assert cards[uld_dir.name].accepts_alpha_tau is True
    uld = load_language_model(uld_dir)
    assert cards[uld_dir.name].settings == {"alpha": uld.alpha, "tau": uld.tau}
    assert cards[trained_world.target.name].accepts_alpha_tau is False
    assert cards[trained_world.target.name].context_length == 256


def test_completion_is_the_models_greedy_continuation(client, trained_world, target,
                                                      questions) -> None:
    prompt = format_prompt(target.tokenizer, questions[0])
    result = client.completions.create(model=trained_world.target.name, prompt=prompt,
                                       max_tokens=CAP, temperature=0)
    expected, count = greedy_text(target, encode_prompt(target.tokenizer, questions[0]))
    assert result.choices[0].text == expected
    assert result.choices[0].finish_reason == "stop"
    assert result.usage.prompt_tokens == len(encode_prompt(target.tokenizer, questions[0]))
    assert result.usage.completion_tokens == count
    assert result.usage.total_tokens == result.usage.prompt_tokens + count


def test_chat_uses_the_qa_prompt_of_the_last_user_message(client, trained_world, target,
                                                          questions) -> None:
    result = client.chat.completions.create(
        model=trained_world.target.name, temperature=0, max_tokens=CAP,
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "An earlier question."},
                  {"role": "assistant", "content": "An earlier answer."},
                  {"role": "user", "content": questions[1]}],
    )
    message = result.choices[0].message
    assert message.role == "assistant"
    assert message.content == generate_answers(target, [questions[1]],
                                               GenerationSettings(max_new_tokens=CAP))[0]
    # The model memorised its training answers: the served answer is the real one.
    assert message.content == dict(
        (p.question, p.answer) for p in trained_world.source.load("forget10").pairs
    )[questions[1]]


def test_completion_length_limit_and_stop_strings(client, trained_world, target,
                                                  questions) -> None:
    prompt = format_prompt(target.tokenizer, questions[0])
    full = client.completions.create(model=trained_world.target.name, prompt=prompt,
                                     max_tokens=CAP, temperature=0).choices[0].text
    short = client.completions.create(model=trained_world.target.name, prompt=prompt,
                                      max_tokens=2, temperature=0)
    assert short.choices[0].finish_reason == "length"
    assert short.usage.completion_tokens == 2
    assert full.startswith(short.choices[0].text)

    word = full.split()[2]
    stopped = client.completions.create(model=trained_world.target.name, prompt=prompt,
                                        max_tokens=CAP, temperature=0, stop=["@@", word])
    assert stopped.choices[0].text == full[:full.index(word)]
    assert stopped.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model=trained_world.target.name, prompt=prompt,
                                         max_tokens=CAP, temperature=0, stop=word, stream=True)
    assert "".join(chunk.choices[0].text for chunk in streamed) == full[:full.index(word)]


def test_streaming_completion_and_chat_match_the_whole_answers(client, trained_world, target,
                                                               questions) -> None:
    name = trained_world.target.name
    prompt = format_prompt(target.tokenizer, questions[2])
    whole = client.completions.create(model=name, prompt=prompt, max_tokens=CAP, temperature=0)
    chunks = list(client.completions.create(model=name, prompt=prompt, max_tokens=CAP,
                                            temperature=0, stream=True))
    assert len(chunks) > 2  # one per token, not one block
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "stop"

    messages = [{"role": "user", "content": questions[2]}]
    whole_chat = client.chat.completions.create(model=name, messages=messages, temperature=0)
    stream = client.chat.completions.create(model=name, messages=messages, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole_chat.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == whole_chat.usage.completion_tokens


def test_seeded_sampling_is_reproducible(client, trained_world, questions) -> None:
    def sample(seed: int) -> str:
        return client.chat.completions.create(
            model=trained_world.target.name, temperature=2.0, top_p=0.95, seed=seed,
            max_tokens=24, messages=[{"role": "user", "content": "Tell me a story."}],
        ).choices[0].message.content

    assert sample(7) == sample(7)
    assert len({sample(seed) for seed in range(6)}) > 1


def test_uld_model_takes_alpha_per_request(client, uld_dir, target, questions) -> None:
    uld = load_language_model(uld_dir)
    settings = GenerationSettings(max_new_tokens=CAP)

    def ask(question: str, **extra: float) -> str:
        return client.chat.completions.create(
            model=uld_dir.name, temperature=0, max_tokens=CAP, extra_body=extra or None,
            messages=[{"role": "user", "content": question}]).choices[0].message.content

    for question in questions[:3]:
        assert ask(question) == generate_answers(uld, [question], settings)[0]
        # alpha = 0 removes the assistant: the target's own greedy answer.
        assert ask(question, alpha=0.0) == generate_answers(target, [question], settings)[0]
        assert ask(question, alpha=2.0, tau=0.01) == generate_answers(
            uld.with_settings(alpha=2.0, tau=0.01), [question], settings)[0]


def test_alpha_is_refused_for_a_plain_model(client, trained_world) -> None:
    for extra in ({"alpha": 0.5}, {"tau": 0.1}):
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(
                model=trained_world.target.name, extra_body=extra,
                messages=[{"role": "user", "content": "Hello?"}],
            )
        assert caught.value.status_code == 400
        assert caught.value.body["param"] == next(iter(extra))


def test_api_key_is_required(server, trained_world) -> None:
    for key in ("wrong-key", API_KEY + "x", ""):
        anonymous = openai.OpenAI(base_url=server.url + "/v1", api_key=key or "none",
                                  max_retries=0)
        with pytest.raises(openai.AuthenticationError) as caught:
            anonymous.models.list()
        assert caught.value.status_code == 401
    response = httpx.post(f"{server.url}/v1/completions", json={"prompt": "Hi"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{server.url}/health").status_code == 200


def _bad_requests(model: str) -> list[tuple[str, str, object, int, str | None]]:
    chat = {"model": model, "messages": [{"role": "user", "content": "Who?"}]}
    completion = {"model": model, "prompt": "Question: Who?\nAnswer:"}
    return [
        # (path, description, body: dict or raw bytes, status, param)
        ("completions", "unknown model", {**completion, "model": "nope"}, 404, "model"),
        ("completions", "max_tokens 0", {**completion, "max_tokens": 0}, 400, "max_tokens"),
        ("completions", "max_tokens above cap", {**completion, "max_tokens": CAP + 1}, 400,
         "max_tokens"),
        ("completions", "max_tokens as text", {**completion, "max_tokens": "5"}, 400,
         "max_tokens"),
        ("completions", "max_tokens as bool", {**completion, "max_tokens": True}, 400,
         "max_tokens"),
        ("completions", "temperature text", {**completion, "temperature": "hot"}, 400,
         "temperature"),
        ("completions", "temperature < 0", {**completion, "temperature": -1}, 400, "temperature"),
        ("completions", "top_p 0", {**completion, "top_p": 0}, 400, "top_p"),
        ("completions", "prompt too long", {**completion, "prompt": "Answer me " * 200}, 400,
         "prompt"),
        ("completions", "prompt of numbers", {**completion, "prompt": [1, 2, 3]}, 400, "prompt"),
        ("completions", "two prompts", {**completion, "prompt": ["a", "b"]}, 400, "prompt"),
        ("completions", "no prompt", {"model": model}, 400, "prompt"),
        ("completions", "too many stops", {**completion, "stop": list("abcde")}, 400, "stop"),
        ("completions", "empty stop", {**completion, "stop": [""]}, 400, "stop"),
        ("completions", "stop of numbers", {**completion, "stop": [1]}, 400, "stop"),
        ("completions", "n = 2", {**completion, "n": 2}, 400, "n"),
        ("completions", "logprobs", {**completion, "logprobs": 3}, 400, "logprobs"),
        ("completions", "unknown field", {**completion, "file": "/etc/passwd"}, 400, "file"),
        ("completions", "seed text", {**completion, "seed": "1"}, 400, "seed"),
        ("completions", "stream text", {**completion, "stream": "yes"}, 400, "stream"),
        ("completions", "alpha NaN", b'{"prompt": "Who?", "alpha": NaN}', 400, "alpha"),
        ("completions", "invalid JSON", b'{"prompt": ', 400, None),
        ("completions", "JSON list", b"[1, 2]", 400, None),
        ("completions", "deep nesting", b"[" * 200_000 + b"]" * 200_000, 400, None),
        ("completions", "not UTF-8", b'{"prompt": "\xff\xfe"}', 400, None),
        ("chat/completions", "no messages", {"model": model, "messages": []}, 400, "messages"),
        ("chat/completions", "bad role",
         {**chat, "messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role"),
        ("chat/completions", "content not text",
         {**chat, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400,
         "messages[0].content"),
        ("chat/completions", "no user message",
         {**chat, "messages": [{"role": "system", "content": "x"}]}, 400, "messages"),
        ("chat/completions", "stream_options without stream",
         {**chat, "stream_options": {"include_usage": True}}, 400, "stream_options"),
    ]


def assert_openai_error(response: httpx.Response, status: int, param: str | None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_bad_requests_get_openai_shaped_4xx(server, trained_world, target) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    question = trained_world.source.load("retain90").pairs[0].question
    sound = {"prompt": f"Question: {question}\nAnswer:", "max_tokens": 3, "temperature": 0}
    with httpx.Client(base_url=server.url + "/v1", headers=headers, timeout=30) as http:
        before = http.post("completions", json=sound)
        assert before.status_code == 200
        for path, what, body, status, param in _bad_requests(trained_world.target.name):
            if isinstance(body, bytes):
                response = http.post(path, content=body,
                                     headers={"Content-Type": "application/json"})
            else:
                response = http.post(path, json=body)
            assert response.status_code == status, (what, response.text)
            assert_openai_error(response, status, param)

        # A prompt that fits the context alone, and with 16 new tokens, but not with 64.
        context = target.model.config.max_position_embeddings
        prompt = next(p for p in ("Answer me " * n for n in range(1, 400))
                      if len(target.tokenizer(p)["input_ids"]) > context - CAP)
        assert len(target.tokenizer(prompt)["input_ids"]) <= context - 16
        long_ask = http.post("completions", json={"prompt": prompt, "max_tokens": CAP})
        assert_openai_error(long_ask, 400, "prompt")
        assert long_ask.json()["error"]["code"] == "context_length_exceeded"
        assert http.post("completions", json={"prompt": prompt, "max_tokens": 16}).status_code \
            == 200

        too_big = {"prompt": "x" * 1_100_000}
        assert_openai_error(http.post("completions", json=too_big), 413, None)
        # Chunked upload with no Content-Length: the bytes that arrive are counted.
        chunks = (b"x" * 100_000 for _ in range(12))
        assert_openai_error(http.post("completions", content=chunks), 413, None)
        missing = http.get("no-such-route")
        assert missing.status_code == 404 and set(missing.json()["error"]) >= {"message", "type"}
        assert http.get("completions").status_code == 405
        # Nothing above hurt the server: the same request gets the same answer as before.
        after = http.post("completions", json=sound)
        assert after.status_code == 200
        assert after.json()["choices"] == before.json()["choices"]
        assert after.json()["usage"] == before.json()["usage"]
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"


def test_concurrent_requests_all_get_their_own_answers(server, trained_world, target,
                                                       questions) -> None:
    expected = generate_answers(target, questions, GenerationSettings(max_new_tokens=CAP))

    async def ask_all() -> list[str]:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as http:
            responses = await asyncio.gather(*[
                http.post("/v1/chat/completions", json={
                    "model": trained_world.target.name, "temperature": 0, "max_tokens": CAP,
                    "messages": [{"role": "user", "content": q}]}) for q in questions])
        return [r.json()["choices"][0]["message"]["content"] for r in responses]

    assert asyncio.run(ask_all()) == expected


def test_sigterm_lets_the_in_flight_request_finish(trained_world, target, questions) -> None:
    # The signal goes once the whole request has been written to the server's socket; the
    # server's 3 s batching wait then keeps it in flight when the signal arrives.
    args = ["--model", str(trained_world.target), "--batch-wait-ms", "3000", "--threads", "1"]
    outcome: dict[str, object] = {}
    sent = threading.Event()

    def trace(event: str, info: dict) -> None:  # httpcore's connection events
        if event == "http11.send_request_body.complete":
            sent.set()

    with ServerProcess(args) as server:
        def ask() -> None:
            try:
                with httpx.Client(timeout=60) as client:
                    outcome["response"] = client.post(
                        f"{server.url}/v1/chat/completions", extensions={"trace": trace},
                        json={"messages": [{"role": "user", "content": questions[4]}],
                              "temperature": 0, "max_tokens": CAP})
            except Exception as err:  # reported by the assertions below
                outcome["error"] = err

        request = threading.Thread(target=ask)
        request.start()
        assert sent.wait(60), outcome
        code = server.terminate(timeout=60)
        request.join(60)
        log = server.log_text
    assert "error" not in outcome, outcome
    response = outcome["response"]
    assert isinstance(response, httpx.Response) and response.status_code == 200, log
    assert response.json()["choices"][0]["message"]["content"] == generate_answers(
        target, [questions[4]], GenerationSettings(max_new_tokens=CAP))[0]
    assert code == 0, log
    assert "Waiting for connections to close" in log  # the request was still in flight


# In-process checks: the app object itself, with httpx's ASGI transport.

async def _post_all(app, bodies: list[dict]) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        return await asyncio.gather(*[http.post("/v1/chat/completions", json=body)
                                      for body in bodies])


def test_requests_that_arrive_together_share_a_batch(target, questions) -> None:
    app = create_app({"target": target}, batch_wait_ms=500, max_batch=4)
    bodies = [{"messages": [{"role": "user", "content": q}], "temperature": 0,
               "max_tokens": CAP} for q in questions]
    try:
        responses = asyncio.run(_post_all(app, bodies))
    finally:
        app.state.engine.close()
    answers = [r.json()["choices"][0]["message"]["content"] for r in responses]
    assert answers == generate_answers(target, questions, GenerationSettings(max_new_tokens=CAP))
    assert app.state.engine.largest_batch == 4  # 6 requests: one full batch, then the rest
    assert app.state.engine.batches_run == 2


def test_non_finite_scores_fail_only_that_request(trained_world, questions) -> None:
    poisoned = load_language_model(trained_world.target)
    tokenizer = poisoned.tokenizer
    healthy_ids = set(encode_prompt(tokenizer, questions[0]))
    bad_token = next(t for t in encode_prompt(tokenizer, "Zyxquv?") if t not in healthy_ids)
    with torch.no_grad():
        poisoned.model.get_input_embeddings().weight[bad_token] = float("nan")
    app = create_app({"target": poisoned}, batch_wait_ms=500)
    bodies = [{"messages": [{"role": "user", "content": text}], "temperature": 0,
               "max_tokens": 8} for text in ("Zyxquv?", questions[0])]
    try:
        bad, good = asyncio.run(_post_all(app, bodies))
        assert app.state.engine.largest_batch == 2  # decoded together, failed apart
        again = asyncio.run(_post_all(app, bodies[1:]))[0]
    finally:
        app.state.engine.close()
    assert bad.status_code == 500
    assert bad.json()["error"]["type"] == "server_error"
    assert bad.json()["error"]["code"] == "non_finite_scores"
    assert good.status_code == 200 and good.json()["choices"][0]["message"]["content"]
    assert again.status_code == 200


def test_stop_text_holds_back_possible_stop_starts(target) -> None:
    tokenizer = target.tokenizer

    def pieces(text: str, stops: list[str], strip: bool) -> tuple[list[str], StopText]:
        tracker = StopText(tokenizer, stops, strip=strip)
        sent = [tracker.push(t) for t in tokenizer(text, add_special_tokens=False)["input_ids"]]
        return [*sent, tracker.finish()], tracker

    sent, tracker = pieces(" Alpha beta gamma delta.", ["gamma"], strip=False)
    assert "".join(sent) == " Alpha beta " and tracker.stopped
    # Nothing past a stop string's possible start is sent before it is ruled out.
    sent, tracker = pieces(" Alpha beta gamma delta.", ["gammas"], strip=False)
    assert "".join(sent) == " Alpha beta gamma delta." and not tracker.stopped
    states = ["".join(sent[:i]) for i in range(1, len(sent))]
    assert not any(state.endswith("gamma") for state in states)
    # Chat answers: no whitespace around them, however the text ends.
    sent, _ = pieces("  Alpha beta gamma  ", [], strip=True)
    assert "".join(sent) == "Alpha beta gamma"
    sent, _ = pieces(" Alpha beta gamma delta.", ["gamma"], strip=True)
    assert "".join(sent) == "Alpha beta"


@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet="ab c.\né", max_size=30),
       stops=st.lists(st.text(alphabet="ab c.\né", min_size=1, max_size=3), max_size=3),
       strip=st.booleans())
def test_stop_text_pieces_join_to_the_text_cut_at_the_first_stop(target, text, stops,
                                                                  strip) -> None:
    tokenizer = target.tokenizer
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    tracker = StopText(tokenizer, stops, strip=strip)
    sent = ""
    for token in ids:
        sent += tracker.push(token)
        if tracker.stopped:
            break
    sent += tracker.finish()
    # The plain definition: the first decoded prefix holding a stop is cut at it.
    expected = tokenizer.decode(ids, clean_up_tokenization_spaces=False)
    expected = expected.lstrip() if strip else expected
    for end in range(1, len(ids) + 1):
        prefix = tokenizer.decode(ids[:end], clean_up_tokenization_spaces=False)
        prefix = prefix.lstrip() if strip else prefix
        found = [prefix.find(s) for s in stops if s in prefix]
        if found:
            expected = prefix[:min(found)]
            break
    assert sent == (expected.rstrip() if strip else expected)


def test_playground_page_is_self_contained(target) -> None:
    app = create_app({"unlearned": target, "original": target})

    async def get_page() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            return await http.get("/")

    page = asyncio.run(get_page())
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for external in ("http://", "https://", "src=", "<link"):
        assert external not in page.text
    config = page.text.split('<script id="config" type="application/json">')[1].split("</script>")[0]
    assert json.loads(config)["model"] == "unlearned"
    assert "connect-src 'self'" in page.headers["content-security-policy"]


def test_uld_playground_compares_with_alpha_zero_and_settings_can_be_locked(uld_dir) -> None:
    async def run(app) -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            page = await http.get("/")
            ask = await http.post("/v1/completions", json={"prompt": "Who?", "alpha": 0.0})
            return page, ask

    page, ask = asyncio.run(run(create_app(uld_dir)))
    config = json.loads(page.text.split('type="application/json">')[1].split("</script>")[0])
    assert config["tunable"] and config["alpha"] == load_language_model(uld_dir).alpha
    assert config["original"] == {"model": uld_dir.name, "alpha": 0.0}
    assert ask.status_code == 200

    page, ask = asyncio.run(run(create_app(uld_dir, allow_request_settings=False)))
    config = json.loads(page.text.split('type="application/json">')[1].split("</script>")[0])
    assert not config["tunable"] and config["original"] is None
    assert_openai_error(ask, 400, "alpha")


def test_cli_warns_before_listening_beyond_loopback_without_a_key(tmp_path, capsys,
                                                                 monkeypatch) -> None:
    from uldkit.cli import main

    monkeypatch.delenv("ULDKIT_API_KEY", raising=False)

    # The model is missing, so the command stops (exit 2) before it binds any address.
    missing = tmp_path / "no-model"
    with pytest.raises(SystemExit) as stopped:
        main(["serve", "--model", str(missing), "--host", "0.0.0.0"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "without an API key" in err and str(missing.name) in err
    with pytest.raises(SystemExit):
        main(["serve", "--model", str(missing), "--host", "127.0.0.1"])
    assert "without an API key" not in capsys.readouterr().err


_ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**20) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=3),
    max_leaves=8,
)
_FIELDS = ["model", "prompt", "messages", "max_tokens", "temperature", "top_p", "stop", "seed",
           "n", "stream", "stream_options", "alpha", "tau", "logprobs", "user"]


@pytest.fixture(scope="module")
def fuzz_app(target):
    app = create_app({"target": target}, max_tokens_cap=4, batch_wait_ms=0)
    yield app
    app.state.engine.close()


@settings(max_examples=40, deadline=None)
@given(body=st.dictionaries(st.sampled_from(_FIELDS), _ANY_JSON, max_size=6),
       chat=st.booleans(), question=st.text(max_size=40))
def test_no_request_body_makes_the_server_fail(fuzz_app, body, chat, question) -> None:
    # Half the time, a body that would otherwise be valid, so generation is reached too.
    body.setdefault("messages" if chat else "prompt",
                    [{"role": "user", "content": question}] if chat else question)

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=fuzz_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            return await http.post("/v1/chat/completions" if chat else "/v1/completions",
                                   json=body)

    response = asyncio.run(send())
    assert response.status_code in (200, 400, 404), response.text
    if response.status_code != 200:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
