"""Drive an ASGI app by hand, so a test can disconnect or cancel at a chosen moment."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from quart import Quart

from tests.conftest import TOKEN


@dataclass
class Exchange:
    """One request's outcome as the client saw it (status None: no response started)."""

    status: int | None = None
    body: bytearray = field(default_factory=bytearray)


async def call(
    app: Quart,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    headers: dict[str, str] | None = None,
    disconnect: asyncio.Event | None = None,
    body_sent: asyncio.Event | None = None,
) -> Exchange:
    """Send one request (its body once ``body_sent`` is set, if given); when ``disconnect``
    is set, the client goes away."""
    sent_body = False
    exchange = Exchange()
    raw_headers = [(b"host", b"test"), (b"content-type", b"application/json")]
    raw_headers.append((b"authorization", f"Bearer {TOKEN}".encode()))
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    path, _, query = path.partition("?")
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": raw_headers,
        "client": ("127.0.0.1", 40000),
        "server": ("test", 80),
        "extensions": {},
    }

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            if body_sent is not None:
                await body_sent.wait()
            return {"type": "http.request", "body": body, "more_body": False}
        if disconnect is None:
            await asyncio.Future()  # a client that stays until the response is done
        else:
            await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            exchange.status = message["status"]
        elif message["type"] == "http.response.body":
            exchange.body += message.get("body", b"")

    await app(scope, receive, send)  # type: ignore[arg-type]
    return exchange
