"""The HTTP server: OpenAI-compatible completions over any uldkit model, plus a playground.

`create_app` serves one model (a ULD model, or any plain model) and optionally the original
target beside it for comparison. Requests are checked in `params`, batched and generated in
`engine`, and answered in OpenAI's JSON shapes (`openai_format`).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from uldkit.data.formatting import answer_stop_texts
from uldkit.models.generation import GenerationSettings
from uldkit.models.lm import LanguageModel
from uldkit.serve.engine import BatchEngine, Failed, Finished, Job, Piece
from uldkit.serve.errors import ApiError, error_body, server_error
from uldkit.serve.hosts import AllowedHosts, HostCheck
from uldkit.serve.limits import BodyLimit
from uldkit.serve.openai_format import DONE, Reply, sse
from uldkit.serve.params import CompletionParams, Limits, parse_chat, parse_completion
from uldkit.serve.playground import playground_html
from uldkit.serve.served import ServedModel
from uldkit.unlearning.load import load_language_model

ModelSource = str | os.PathLike | LanguageModel
COMPLETION_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


def create_app(
    model: ModelSource | Mapping[str, LanguageModel],
    *,
    name: str | None = None,
    compare_with: ModelSource | None = None,
    api_key: str | None = None,
    max_tokens_cap: int = 512,
    max_body_bytes: int = 1_000_000,
    max_stop: int = 4,
    batch_wait_ms: float = 5,
    max_batch: int = 16,
    max_queue: int = 256,
    allow_request_settings: bool = True,
    device: str | None = None,
    allowed_hosts: Sequence[str] = (),
) -> FastAPI:
    """An app serving `model` (a model directory, a loaded LanguageModel, or several by name;
    the first is the main model, used when a request names none).

    `compare_with` is the original target, served too (under its directory name) and shown
    beside the model in the playground. Without it, a ULD model is compared with itself at
    α = 0: the assistant term vanishes and the scores are the target's log-probabilities
    (restricted to τ-plausible tokens, which never excludes the top token), so the greedy
    answer is exactly the target's. Models with `with_settings` (ULD) take per-request `alpha`
    and `tau`; `allow_request_settings=False` refuses them, since α = 0 gives any client the
    original target's answers. All model computation runs on one worker thread (`engine`).

    Requests whose `Host` is a DNS name other than localhost are refused (DNS rebinding)
    unless the name is in `allowed_hosts` (`"*"` allows any); IP literals always pass.
    """
    if api_key is not None and not api_key.strip():
        raise ValueError("api_key must not be empty or whitespace (use None for no key)")
    models = _served_models(model, name, compare_with, device, allow_request_settings)
    main = next(iter(models.values()))
    engine = BatchEngine(max_batch=max_batch, batch_wait_ms=batch_wait_ms, max_queue=max_queue)
    limits = Limits(max_tokens_cap=max_tokens_cap, max_stop=max_stop)
    page = playground_html(_playground_config(models, main, compare_with is not None,
                                              api_key is not None, max_tokens_cap))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(engine.close)

    app = FastAPI(title="uldkit", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.engine = engine
    app.state.models = models
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(HostCheck, allowed=AllowedHosts(allowed_hosts))  # outermost: first
    _add_error_handlers(app)

    def require_key(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), api_key.encode()
        ):
            raise ApiError(401, "missing or invalid API key (send 'Authorization: Bearer KEY')",
                           code="invalid_api_key")

    def lookup(model_id: str | None) -> ServedModel:
        if model_id is None:
            return main
        if model_id not in models:
            raise ApiError(404, f"the model '{model_id[:200]}' does not exist; this server has "
                           f"{', '.join(models)}", param="model", code="model_not_found")
        return models[model_id]

    async def complete(request: Request, chat: bool) -> Response:
        body = await _json_body(request)
        params = (parse_chat if chat else parse_completion)(body, limits)
        served = lookup(params.model)
        lm = served.view(params.alpha, params.tau)
        if chat:
            prompt_ids = await run_in_threadpool(served.chat_prompt, params.messages)
        else:
            prompt_ids = await run_in_threadpool(served.completion_prompt, params.prompt)
        settings = GenerationSettings(
            max_new_tokens=_fit_max_tokens(served, prompt_ids, params, chat, max_tokens_cap),
            do_sample=params.temperature > 0, temperature=params.temperature or 1.0,
            top_p=params.top_p, seed=params.seed,
        )
        job = engine.submit(Job(lm=lm, group=(served.name, params.alpha, params.tau),
                                prompt_ids=prompt_ids, settings=settings,
                                stops=_stops(served, params, chat), strip=chat))
        reply = Reply(chat=chat, model=served.name, prompt_tokens=len(prompt_ids))
        events = job.events()
        try:
            # Until a streaming response starts (Starlette then watches the connection
            # itself), a client that goes away cancels its job, queued or generating.
            first = await _unless_client_leaves(request, anext(events))
            if isinstance(first, Failed):
                raise first.error
            if params.stream:
                return StreamingResponse(
                    _stream(reply, job, events, params.include_usage), media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                )
            return await _unless_client_leaves(request, _whole(reply, events))
        except BaseException:
            job.cancel()
            raise

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": list(models)}

    @app.get("/", response_class=HTMLResponse)
    async def playground() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": (
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
            "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'")})

    @app.get("/v1/models", dependencies=[Depends(require_key)])
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(m) for m in models.values()]}

    @app.get("/v1/models/{model_id:path}", dependencies=[Depends(require_key)])
    async def get_model(model_id: str) -> dict[str, Any]:
        return _model_card(lookup(model_id))

    @app.post("/v1/completions", dependencies=[Depends(require_key)])
    async def completions(request: Request) -> Response:
        return await complete(request, chat=False)

    @app.post("/v1/chat/completions", dependencies=[Depends(require_key)])
    async def chat_completions(request: Request) -> Response:
        return await complete(request, chat=True)

    return app


async def _stream(
    reply: Reply, job: Job, events: AsyncIterator[Any], include_usage: bool
) -> AsyncIterator[str]:
    try:
        if reply.chat:
            yield reply.chunk("", first=True)
        async for event in events:
            if isinstance(event, Piece):
                yield reply.chunk(event.text)
            elif isinstance(event, Failed):
                yield sse(event.error.body())
                return
            elif isinstance(event, Finished):
                yield reply.chunk(None, event.finish_reason)
                if include_usage:
                    yield reply.usage_chunk(event.completion_tokens)
                yield DONE
                return
    finally:
        job.cancel()  # the client went away, or the job is over: either way stop its row


class ClientLeft(Exception):
    """The client closed its connection before its answer was ready."""


async def _unless_client_leaves(request: Request, work: Any) -> Any:
    """Await `work`; raise ClientLeft (and cancel it) if the client disconnects first."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    finished = False
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        finished = task.done()
    finally:  # also when this request itself is cancelled (the server is stopping)
        gone.cancel()
        if not task.done():
            task.cancel()
    if gone.done() and not gone.cancelled():
        gone.exception()  # a receive() that failed also means the client is gone
    if not finished:
        raise ClientLeft()
    return task.result()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.05)  # never spin, whatever a server sends after the body


async def _whole(reply: Reply, events: AsyncIterator[Any]) -> Response:
    pieces: list[str] = []
    async for event in events:
        if isinstance(event, Piece):
            pieces.append(event.text)
        elif isinstance(event, Failed):
            raise event.error
        elif isinstance(event, Finished):
            return JSONResponse(reply.whole("".join(pieces), event.finish_reason,
                                            event.completion_tokens))
    raise server_error("generation ended without a result")


_SURROGATE = re.compile("[\ud800-\udfff]")


async def _json_body(request: Request) -> Any:
    # Only application/json: a web page may send a "simple" text/plain POST to a local
    # server without any CORS preflight, but never an application/json one.
    media_type, _, options = request.headers.get("content-type", "").partition(";")
    if media_type.strip().lower() != "application/json":
        raise ApiError(415, "the request body must be JSON sent with 'Content-Type: "
                       f"application/json' (got '{media_type.strip()[:60] or 'none'}')",
                       code="unsupported_media_type")
    charset = options.partition("charset=")[2].strip().strip('"').lower()
    if charset not in ("", "utf-8", "utf8"):
        raise ApiError(415, f"the request body must be UTF-8 (got charset '{charset[:30]}')",
                       code="unsupported_media_type")
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "the request body is not valid JSON") from None
    _refuse_lone_surrogates(body)
    return body


def _refuse_lone_surrogates(body: Any) -> None:
    """A JSON escape such as "\\ud800" without its pair decodes to text that is not Unicode
    (it cannot be tokenized, encoded or echoed back); refuse it naming where it is."""
    stack: list[tuple[Any, str]] = [(body, "")]
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            texts = [value]
        elif isinstance(value, dict):
            texts = list(value)
            stack.extend((item, f"{where}.{key}" if where else str(key))
                         for key, item in value.items() if isinstance(key, str))
        elif isinstance(value, list):
            texts = []
            stack.extend((item, f"{where}[{index}]") for index, item in enumerate(value))
        else:
            continue
        if any(_SURROGATE.search(text) for text in texts):
            param = _SURROGATE.sub("?", where)[:100] or None
            raise ApiError(400, "the request holds a lone UTF-16 surrogate (an unpaired "
                           f"\\ud800-\\udfff escape){f' in {param}' if param else ''}; text "
                           "must be valid Unicode", param=param, code="invalid_unicode")


def _stops(served: ServedModel, params: CompletionParams, chat: bool) -> tuple[str, ...]:
    """The request's stop strings; a chat answer in the plain QA format (a model without a
    chat template) also ends where it runs on into a next "Question:"."""
    extra = answer_stop_texts(served.tokenizer) if chat else ()
    return tuple(dict.fromkeys((*params.stop, *extra)))


def _fit_max_tokens(
    served: ServedModel, prompt_ids: list[int], params: CompletionParams, chat: bool, cap: int
) -> int:
    room = served.context_length - len(prompt_ids)
    wanted = params.max_tokens
    if wanted is None:
        wanted = min(cap, room) if chat else min(COMPLETION_DEFAULT_MAX_TOKENS, room)
    if room < 1 or wanted > room:
        raise ApiError(
            400, f"the prompt has {len(prompt_ids)} tokens and {max(wanted, 1)} new tokens were "
            f"asked for; model '{served.name}' has a context of {served.context_length} tokens",
            param="messages" if chat else "prompt", code="context_length_exceeded")
    return wanted


def _served_models(
    model: ModelSource | Mapping[str, LanguageModel], name: str | None,
    compare_with: ModelSource | None, device: str | None, allow_request_settings: bool,
) -> dict[str, ServedModel]:
    if isinstance(model, Mapping):
        named = dict(model)
    else:
        named = {name or _default_name(model): _load(model, device)}
    if compare_with is not None:
        compare_name = _default_name(compare_with)
        while compare_name in named:
            compare_name += "-original"
        named[compare_name] = _load(compare_with, device)
    if not named:
        raise ValueError("create_app needs at least one model")
    return {key: ServedModel(key, lm, allow_request_settings) for key, lm in named.items()}


def _load(source: ModelSource, device: str | None) -> LanguageModel:
    if isinstance(source, str | os.PathLike):
        return load_language_model(source, device=device)
    return source


def _default_name(source: ModelSource) -> str:
    if isinstance(source, str | os.PathLike):
        return Path(source).resolve().name or "model"
    return str(getattr(source, "name", None) or "model")


def _model_card(served: ServedModel) -> dict[str, Any]:
    return {"id": served.name, "object": "model", "created": 0, "owned_by": "uldkit",
            "context_length": served.context_length,
            "settings": served.settings, "accepts_alpha_tau": served.tunable}


def _playground_config(
    models: dict[str, ServedModel], main: ServedModel, has_compare: bool, auth: bool,
    max_tokens_cap: int,
) -> dict[str, Any]:
    tunable = main.tunable and main.allow_request_settings
    original = None
    if has_compare:
        original = {"model": list(models)[-1], "alpha": None}
    elif tunable:
        original = {"model": main.name, "alpha": 0.0}  # the target alone: no assistant term
    return {"model": main.name, "tunable": tunable, "alpha": main.settings.get("alpha", 1.0),
            "original": original, "auth": auth,
            "max_tokens": min(64, max_tokens_cap), "max_tokens_cap": max_tokens_cap}


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, err: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
        return err.response(headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        first = (err.errors() or [{}])[0]
        param = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
        return JSONResponse(error_body(f"invalid request: {first.get('msg', 'bad value')}",
                                       param=param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
        return JSONResponse(error_body(str(err.detail), code=code), status_code=err.status_code,
                            headers=getattr(err, "headers", None))

    @app.exception_handler(ClientLeft)
    async def client_left(_: Request, err: ClientLeft) -> Response:
        return Response(status_code=499)  # nginx's "client closed request"; nobody reads it

    @app.exception_handler(Exception)
    async def crash(_: Request, err: Exception) -> JSONResponse:
        return server_error("internal server error").response()
