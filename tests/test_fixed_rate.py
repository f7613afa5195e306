"""bench/fixed_rate.py, the open-loop load generator, against a small HTTP server of its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from bench.fixed_rate import generate, percentile
from tests.waiting import HANG_GUARD_SECONDS


@dataclass
class Behaviour:
    """How the test server answers: ``pause`` (seconds) before answering request ``pause_at``
    (every request waits behind it, as behind a stalled worker); ``close_every`` answers with
    ``Connection: close``; a path with ``fail`` gets a 503; ``hang`` is never answered; ``drop``
    closes the connection without an answer."""

    pause_at: int = 0
    pause: float = 0.0
    close_every: int = 0
    served: int = 0
    connections: int = 0
    gate: asyncio.Lock = field(default_factory=asyncio.Lock)


def handler(
    behaviour: Behaviour,
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        behaviour.connections += 1
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                path = head.split(b" ", 2)[1]
                if b"hang" in path:
                    await reader.read()  # until the client goes away
                    break
                if b"drop" in path:
                    break  # the connection closes, unanswered
                async with behaviour.gate:
                    behaviour.served += 1
                    if behaviour.served == behaviour.pause_at:
                        await asyncio.sleep(behaviour.pause)
                status = b"503 Service Unavailable" if b"fail" in path else b"200 OK"
                close = behaviour.close_every and behaviour.served % behaviour.close_every == 0
                writer.write(
                    b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 2\r\n" + (b"Connection: close\r\n" if close else b"")
                    + b"\r\n{}"
                )  # fmt: skip
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return handle


@asynccontextmanager
async def http_server(behaviour: Behaviour) -> AsyncIterator[str]:
    """The test server, for the block; it closes every connection and joins every
    connection's task when the block ends."""
    handle = handler(behaviour)
    connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections[task] = writer
        try:
            await handle(reader, writer)
        finally:
            del connections[task]

    listening = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    async with listening:
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            for writer in connections.values():
                writer.transport.abort()  # a connection the client left open ends here
            if connections:
                await asyncio.wait(list(connections), timeout=HANG_GUARD_SECONDS)


async def test_sends_every_request_at_the_rate_asked() -> None:
    behaviour = Behaviour()
    async with http_server(behaviour) as url:
        result = await generate(
            url, template="/records/{}", values=["1", "2"], rate=200, duration=0.5, connections=4
        )
    assert result["sent"] == result["requests"] == behaviour.served == 100
    assert result["non2xx"] == result["read"] == result["timeout"] == result["connect"] == 0
    # 100 requests due over 0.5 s: the last answer comes 0.5 s after the first was due, plus
    # at most the slowest answer (however slow the machine is).
    assert 0.45e6 <= result["duration_us"] <= 0.5e6 + result["max_us"]
    assert 0 < result["p50_us"] <= result["p99_us"] <= result["max_us"]


async def test_a_stall_counts_against_every_request_due_during_it() -> None:
    # The 20th request holds the server for 0.3 s. A closed-loop client would record one or
    # two slow samples (the connections stop sending); here the ~30 requests due during the
    # stall each count their wait from when they were due.
    behaviour = Behaviour(pause_at=20, pause=0.3)
    async with http_server(behaviour) as url:
        result = await generate(
            url, template="/{}", values=["x"], rate=100, duration=1.0, connections=2
        )
    assert result["requests"] == 100
    assert result["p90_us"] >= 100_000
    assert result["max_us"] >= 290_000
    # The generator itself kept closer to its schedule than the stall: the wait is the
    # server's. (On an idle machine the lag is a few milliseconds.)
    assert result["lag_p99_us"] < 290_000


async def test_non_2xx_answers_are_counted() -> None:
    async with http_server(Behaviour()) as url:
        result = await generate(
            url, template="/{}", values=["ok", "fail"], rate=200, duration=0.5, connections=2
        )
    assert result["requests"] == 100
    assert 20 <= result["non2xx"] <= 80  # half of the paths fail, picked at random


async def test_a_server_closing_connections_loses_no_request() -> None:
    behaviour = Behaviour(close_every=7)
    async with http_server(behaviour) as url:
        result = await generate(
            url, template="/{}", values=["x"], rate=200, duration=0.5, connections=3
        )
    assert result["requests"] == 100
    assert result["read"] == result["timeout"] == 0
    assert behaviour.connections > 3  # it did reconnect


async def test_unanswered_requests_are_timeouts() -> None:
    async with http_server(Behaviour()) as url:
        result = await generate(
            url,
            template="/{}",
            values=["hang"],
            rate=50,
            duration=0.2,
            connections=2,
            grace=0.2,
        )
    assert result["requests"] == 0
    assert result["timeout"] == result["sent"] == 10
    assert result["read"] == 0  # closing them at the end does not count them again


async def test_a_connection_lost_under_a_request_is_a_read_error_and_is_replaced() -> None:
    behaviour = Behaviour()
    async with http_server(behaviour) as url:
        result = await generate(
            url, template="/{}", values=["ok", "drop"], rate=200, duration=0.5, connections=2
        )
    assert result["sent"] == 100
    assert result["requests"] + result["read"] == 100
    assert 20 <= result["read"] <= 80  # half of the paths drop, picked at random
    assert result["timeout"] == 0
    assert behaviour.connections > 20  # every lost connection was replaced


async def test_no_server_is_an_error() -> None:
    async with http_server(Behaviour()) as url:
        pass
    with pytest.raises(ConnectionError):
        await generate(url, template="/{}", values=["x"], rate=10, duration=0.1, connections=1)


@pytest.mark.parametrize(
    ("fraction", "expected"), [(0.5, 50.0), (0.99, 99.0), (1.0, 100.0), (0.001, 1.0)]
)
def test_percentile_is_nearest_rank(fraction: float, expected: float) -> None:
    assert percentile([float(v) for v in range(1, 101)], fraction) == expected
    assert percentile([], fraction) == 0.0
