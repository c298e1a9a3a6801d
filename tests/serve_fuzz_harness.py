"""Random and mutated requests against a running `uldkit serve`, many clients at once.

Shared by tests/test_serve_fuzz.py (a small round in the suite) and
benchmarks/serve_fuzz.py (the full 1,000 requests from 300 clients, with figures).
Requests mix valid bodies with wrong types, out-of-range and underflowing numbers, unknown
fields, lone surrogates, byte-level mutations of valid JSON, wrong content types, foreign
Host headers, missing keys, odd paths and methods, and clients that hang up mid-request.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PATHS = ["/v1/completions", "/v1/chat/completions"]
_ODD_NUMBERS = [0, -1, 1e-300, 5e-324, 1e300, 2.5, 0.5, 1, 2, 3, True, "1", None, [], {}]
_TEXTS = ["Question: Who is Ada?\nAnswer:", "", " ", "\u0000", "\u202e\u2066", "é" * 50,
          "\U0001f600", "x" * 3000, "Answer me " * 40, "<|endoftext|>", "\\ud800"]


@dataclass
class FuzzRequest:
    method: str
    path: str
    headers: dict[str, str]
    content: bytes
    hang_up_after: float | None = None  # seconds before the client disconnects


@dataclass
class FuzzOutcome:
    statuses: Counter = field(default_factory=Counter)
    hung_up: int = 0
    transport_errors: list[str] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)  # 5xx other than 503 busy
    rss: int = 0  # the server's resident memory afterwards, when measured

    @property
    def sent(self) -> int:
        return sum(self.statuses.values()) + self.hung_up + len(self.transport_errors)


def _value(rng: random.Random, name: str, model: str) -> object:
    choices = {
        "model": [model, "nope", "", 7, None, "\\ud800", "../" * 20],
        "prompt": _TEXTS + [["a"], ["a", "b"], [1, 2], 3, None],
        "max_tokens": [1, 2, 4, 8, 0, -5, 10**9, "8", 2.0, None, True],
        "max_completion_tokens": [1, 3, 0, "x", None],
        "temperature": _ODD_NUMBERS,
        "top_p": _ODD_NUMBERS,
        "seed": [0, 1, -1, 2**70, "1", None, 1.5],
        "stop": ["\n", ["a", "b"], [""], [1], ["x"] * 9, "y" * 300, None],
        "stream": [True, False, "yes", None, 1],
        "stream_options": [{"include_usage": True}, {"include_usage": "x"}, {"z": 1}, None, 3],
        "n": [1, 2, None], "logprobs": [None, 3, True], "user": ["u", 5],
        "alpha": [0.5, -1, 100, None], "tau": [0.1, 2, None],
        "logit_bias": [{}, {"1": 100}], "echo": [False, True], "suffix": [None, "s"],
        "unknown_field": [1, "x"],
    }[name]
    return rng.choice(choices)


def _messages(rng: random.Random) -> object:
    roll = rng.random()
    if roll < 0.75:
        return [{"role": rng.choice(["user", "system", "user"]), "content": rng.choice(_TEXTS)}
                for _ in range(rng.randint(1, 3))]
    return rng.choice([[], "hi", [{"role": "robot", "content": "x"}], [{"role": "user"}],
                       [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                       [{"role": "user", "content": [{"type": "image_url"}]}], None, [3]])


def _body(rng: random.Random, chat: bool, model: str, valid: bool) -> dict:
    if chat:
        body: dict = {"messages": [{"role": "user", "content": rng.choice(_TEXTS[:3])}]}
    else:
        body = {"prompt": rng.choice(_TEXTS[:1] + _TEXTS[5:7])}
    body["max_tokens"] = rng.randint(1, 6)
    if valid:
        body["temperature"] = rng.choice([0, 0.7, 1.0, 1e-300])
        return body
    names = ["model", "max_tokens", "temperature", "top_p", "seed", "stop", "stream",
             "stream_options", "n", "logprobs", "user", "alpha", "tau", "logit_bias", "echo",
             "suffix", "unknown_field", "max_completion_tokens" if chat else "prompt"]
    for name in rng.sample(names, rng.randint(1, 5)):
        body[name] = _value(rng, name, model)
    if chat and rng.random() < 0.3:
        body["messages"] = _messages(rng)
    return body


def _mutate(rng: random.Random, raw: bytes) -> bytes:
    kind = rng.randrange(8)
    data = bytearray(raw)
    if kind == 0 and data:
        data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 1:
        data = data[:rng.randrange(len(data) + 1)]
    elif kind == 2:
        data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
    elif kind == 3:
        data = bytearray(raw.replace(b'": "', b'": "\\ud800', 1))
    elif kind == 4:
        depth = rng.choice([50, 5_000, 100_000])
        data = bytearray(b'{"prompt": ' + b"[" * depth + b"]" * depth + b"}")
    elif kind == 5:
        data = bytearray(raw.replace(b'"max_tokens": ', b'"max_tokens": 1e999, "x": ', 1))
    elif kind == 6:
        data = bytearray(raw.replace(b"}", b', "temperature": NaN}', 1))
    else:
        data = bytearray(rng.randbytes(rng.randint(0, 200)))
    return bytes(data)


def make_requests(count: int, *, seed: int, model: str, api_key: str | None) -> list[FuzzRequest]:
    """`count` requests: about 30 % valid, the rest invalid or mutated in assorted ways."""
    rng = random.Random(seed)
    requests = []
    for _ in range(count):
        chat = rng.random() < 0.5
        roll = rng.random()
        body = _body(rng, chat, model, valid=roll < 0.3)
        raw = json.dumps(body, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
        if 0.55 < roll < 0.75:
            raw = _mutate(rng, raw)
        headers = {"Content-Type": "application/json"}
        if api_key is not None:
            headers["Authorization"] = f"Bearer {api_key}"
        method, path = "POST", PATHS[chat]
        extra = rng.random()
        if extra < 0.03:
            headers["Content-Type"] = rng.choice(["text/plain", "application/x-www-form-urlencoded",
                                                  "application/json; charset=utf-16"])
        elif extra < 0.05:
            headers["Host"] = rng.choice(["evil.example", "localhost.evil.example:80"])
        elif extra < 0.07 and api_key is not None:
            # (httpx itself refuses to send header values with leading or trailing spaces)
            headers["Authorization"] = rng.choice(["Bearer wrong", "Basic abc", "Bearer"])
            if rng.random() < 0.3:
                del headers["Authorization"]
        elif extra < 0.09:
            method, path = rng.choice([("GET", path), ("PUT", path), ("GET", "/v1/models"),
                                       ("GET", "/v1/models/nope"), ("POST", "/v1/../etc/passwd"),
                                       ("GET", "/" + "a" * 2000), ("DELETE", "/health")])
        hang_up = rng.choice([0.0, 0.01, 0.05, 0.2]) if rng.random() < 0.05 else None
        requests.append(FuzzRequest(method, path, headers, raw, hang_up))
    return requests


async def fire(url: str, requests: list[FuzzRequest], clients: int) -> FuzzOutcome:
    """Send every request, at most `clients` at a time, each on its own connection."""
    outcome = FuzzOutcome()
    gate = asyncio.Semaphore(clients)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=0)

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http:
        async def one(request: FuzzRequest) -> None:
            async with gate:
                send = http.request(request.method, request.path, headers=request.headers,
                                    content=request.content if request.method != "GET" else None)
                try:
                    if request.hang_up_after is None:
                        response = await send
                    else:  # the client closes its connection when the time is up
                        response = await asyncio.wait_for(send, timeout=request.hang_up_after)
                except asyncio.TimeoutError:
                    outcome.hung_up += 1
                    return
                except httpx.TransportError as err:
                    outcome.transport_errors.append(f"{request.path}: {type(err).__name__}")
                    return
                outcome.statuses[response.status_code] += 1
                if response.status_code >= 500 and response.status_code != 503:
                    outcome.server_errors.append(
                        f"{response.status_code} {request.path} {request.content[:200]!r}: "
                        f"{response.text[:200]}")

        await asyncio.gather(*[one(request) for request in requests])
    return outcome


def greedy_answer(url: str, api_key: str | None, prompt: str) -> str:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    response = httpx.post(f"{url}/v1/completions", headers=headers, timeout=120,
                          json={"prompt": prompt, "max_tokens": 8, "temperature": 0})
    response.raise_for_status()
    return response.json()["choices"][0]["text"]


def resident_bytes(pid: int) -> int:
    """The process's resident memory (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
