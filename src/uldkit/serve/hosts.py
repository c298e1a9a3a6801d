"""Refuse requests whose `Host` header names a host this server was not started for.

A web page the user visits can make the browser send requests to a server on the user's
machine by pointing a DNS name it controls at 127.0.0.1 ("DNS rebinding"); such requests
carry the attacker's name in `Host`. A rebinding attack needs a name, so IP literals are
always accepted, as are `localhost` and `*.localhost` (which never leave the machine), the
name the server was bound to, and the names the user allows (`--allow-host`; `*` allows any).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from uldkit.serve.errors import error_body

ANY_HOST = "*"


class AllowedHosts:
    def __init__(self, names: Iterable[str] = ()) -> None:
        self.names = frozenset(_normal(name) for name in names if name.strip())

    @property
    def any(self) -> bool:
        return ANY_HOST in self.names

    def allows(self, host_header: str) -> bool:
        name = _normal(_without_port(host_header))
        if self.any or name in self.names or name == "localhost" or name.endswith(".localhost"):
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True


class HostCheck:
    """ASGI middleware: 403 with an OpenAI-style error body for a Host that is not allowed."""

    def __init__(self, app: ASGIApp, allowed: AllowedHosts) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.allowed.any:
            await self.app(scope, receive, send)
            return
        raw = dict(scope["headers"]).get(b"host")
        # No Host at all (HTTP/1.0 tools) cannot come from a browser, so it cannot be rebound.
        host = raw.decode("latin-1") if raw is not None else None
        if host is None or self.allowed.allows(host):
            await self.app(scope, receive, send)
            return
        shown = host[:100]
        body = json.dumps(error_body(
            f"requests for host '{shown}' are not allowed (a guard against DNS rebinding); "
            f"if this is a name of this server, start it with --allow-host "
            f"{_without_port(shown) or 'NAME'}", code="host_not_allowed",
        )).encode()
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "http.response.start", "status": 403, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        ]})
        await send({"type": "http.response.body", "body": body})


def _without_port(host: str) -> str:
    host = host.strip()
    if host.startswith("["):  # [::1]:8000
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def _normal(name: str) -> str:
    return name.strip().lower().rstrip(".")
