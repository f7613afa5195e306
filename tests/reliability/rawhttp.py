"""A small HTTP/1.1 client on asyncio streams: raw bytes on the wire, keep-alive, abrupt closes.

httpx normalises what it sends (it refuses invalid header values, re-encodes paths, always
frames the body) and costs too much per request for 100,000 of them on two cores; this client
writes exactly the bytes it is given and parses just enough of the answer.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

HeaderItems = Mapping[str, str] | Iterable[tuple[str, str]]
# Keep-alive connections idle longer than this are replaced before use: Hypercorn closes them
# after its keep_alive_timeout (5 s by default), and a request must never race that close.
MAX_IDLE_SECONDS = 2.0
READ_LIMIT = 64 * 1024 * 1024


class IncompleteResponseError(Exception):
    """The server closed the connection (or the client gave up) before a whole response."""


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    elapsed: float = 0.0

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        found = None
        for key, value in self.headers:
            if key == wanted:
                found = value
        return found

    @property
    def content_type(self) -> str:
        return (self.header("content-type") or "").split(";")[0].strip()

    def json(self) -> Any:
        return orjson.loads(self.body)

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def encode_request(
    method: str | bytes,
    target: str | bytes,
    *,
    host: str,
    headers: HeaderItems = (),
    body: bytes | None = None,
    content_length: bool = True,
) -> bytes:
    """The bytes of one request; ``target`` and header values go out exactly as given."""
    method_bytes = method.encode() if isinstance(method, str) else method
    target_bytes = target.encode() if isinstance(target, str) else target
    lines = [method_bytes + b" " + target_bytes + b" HTTP/1.1", b"Host: " + host.encode()]
    items = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in items:
        lines.append(name.encode("latin-1") + b": " + value.encode("latin-1"))
    if body is not None and content_length:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    return head + (body or b"")


def json_body(value: Any) -> bytes:
    return orjson.dumps(value)


async def read_response(reader: asyncio.StreamReader, *, head: bool = False) -> Response:
    """Read one response; raises IncompleteResponseError when the connection ends first."""
    try:
        raw_head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as error:
        raise IncompleteResponseError(
            f"connection closed after {len(error.partial)} bytes"
        ) from None
    lines = raw_head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    status_text, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/") or not status_text.isdigit():
        raise IncompleteResponseError(f"not an HTTP response: {lines[0]!r}")
    status = int(status_text)
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
    response = Response(status, reason, headers, b"")
    try:
        response.body = await _read_body(reader, response, head)
    except asyncio.IncompleteReadError:
        raise IncompleteResponseError("connection closed in the middle of the body") from None
    return response


async def _read_body(reader: asyncio.StreamReader, response: Response, head: bool) -> bytes:
    if head or response.status in (204, 304) or 100 <= response.status < 200:
        return b""
    length = response.header("content-length")
    if length is not None:
        return await reader.readexactly(int(length))
    if "chunked" in (response.header("transfer-encoding") or "").lower():
        chunks: list[bytes] = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers are ever sent here
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    return await reader.read()


async def open_connection(
    host: str, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port, limit=READ_LIMIT)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


def reset(writer: asyncio.StreamWriter) -> None:
    """Close abruptly with a TCP reset (SO_LINGER 0): no FIN, unsent data dropped."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def abort(writer: asyncio.StreamWriter) -> None:
    """Close at once without waiting for buffered data to be sent."""
    writer.transport.abort()


@dataclass
class Outcome:
    """One request of a load: what was sent when, and what came back (or why nothing did)."""

    kind: str
    started: float
    ended: float
    response: Response | None
    error: str | None = None

    @property
    def status(self) -> int | None:
        return self.response.status if self.response else None

    @property
    def latency(self) -> float:
        return self.ended - self.started


@dataclass
class Client:
    """One keep-alive connection, reopened as needed. Not for concurrent use: one per worker."""

    host: str
    port: int
    default_headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 30.0
    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None
    _last_used: float = 0.0
    connections_opened: int = 0

    @classmethod
    def for_url(cls, url: str, **kwargs: Any) -> Client:
        host, _, port = url.removeprefix("http://").rstrip("/").rpartition(":")
        return cls(host, int(port), **kwargs)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        body: bytes | None = None,
        headers: HeaderItems = (),
        within: float | None = None,
    ) -> Response:
        """Send one request and read its response within ``within`` s (default: the
        client's timeout); the connection is kept when possible."""
        all_headers = dict(self.default_headers)
        all_headers.update(headers.items() if isinstance(headers, Mapping) else headers)
        if json is not None:
            body = json_body(json)
            all_headers.setdefault("Content-Type", "application/json")
        raw = encode_request(method, path, host=self.host, headers=all_headers, body=body)
        async with asyncio.timeout(self.timeout if within is None else within):
            return await self._exchange(raw, head=method == "HEAD")

    async def _exchange(self, raw: bytes, *, head: bool) -> Response:
        reused = self._writer is not None and time.monotonic() - self._last_used < MAX_IDLE_SECONDS
        if not reused:
            await self.close()
            self._reader, self._writer = await open_connection(self.host, self.port)
            self.connections_opened += 1
        assert self._reader is not None and self._writer is not None
        started = time.perf_counter()
        try:
            self._writer.write(raw)
            await self._writer.drain()
            response = await read_response(self._reader, head=head)
        except (IncompleteResponseError, ConnectionError):
            await self.close()
            if reused:
                # The server closed the idle connection just as we sent: nothing was read, so
                # the request was not processed; send it again on a fresh connection.
                self._last_used = 0.0
                return await self._exchange(raw, head=head)
            raise
        except BaseException:
            await (
                self.close()
            )  # a timeout or a cancellation: the connection is in an unknown state
            raise
        response.elapsed = time.perf_counter() - started
        self._last_used = time.monotonic()
        if (response.header("connection") or "").lower() == "close":
            await self.close()
        return response

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.transport.abort()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def parse_metrics(text: str) -> dict[str, float]:
    """Unlabelled samples of a Prometheus text exposition, by name."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            samples[name] = float(value)
    return samples
