"""A TCP forwarder that delays every chunk by a fixed time in each direction.

It stands in for a network the machine cannot emulate (no ``netem`` qdisc in this kernel):
with ``--delay-ms 1`` a PostgreSQL behind it is 2 ms of round trip away. Chunks are delivered
in order at arrival + delay, never serialised behind each other, so the delay adds latency
without limiting throughput. asyncio's timers wake no earlier than asked, at millisecond
granularity, so the real delay is 1 to ~1.5 ms per direction on an idle machine:
``bench/run.py`` measures and reports the round trip it really got.

It costs CPU (every byte crosses Python): run it on another core than the server under test::

    taskset -c 1 python bench/delay_proxy.py --listen 127.0.0.1:6543 \\
        --upstream 127.0.0.1:5432 --delay-ms 1

``kill -USR1 PID`` prints one JSON line of counters on stdout: connections, and per
direction the chunks and bytes forwarded. Client-to-server chunks per request approximate the
database round trips of a request (a driver writes once, then waits for the answer).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import signal
import sys

# A timer may fire a hair before its deadline (the loop's clock resolution): deliver then too.
EARLY_TOLERANCE = 1e-4

counters = {
    "connections": 0,
    "to_server_chunks": 0,
    "to_server_bytes": 0,
    "to_client_chunks": 0,
    "to_client_bytes": 0,
}


class DelayedWriter:
    """Writes chunks to a transport ``delay`` seconds after they were pushed, in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float, direction: str) -> None:
        self.loop = loop
        self.delay = delay
        self.direction = direction
        self.queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def attach(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        if self.queue and self.timer is None:
            self._arm()

    def push(self, data: bytes | None) -> None:
        """Queue ``data``; ``None`` closes the transport once everything before it is sent."""
        if data is not None:
            counters[f"{self.direction}_chunks"] += 1
            counters[f"{self.direction}_bytes"] += len(data)
        self.queue.append((self.loop.time() + self.delay, data))
        if self.transport is not None and self.timer is None:
            self._arm()

    def _arm(self) -> None:
        self.timer = self.loop.call_at(self.queue[0][0], self._flush)

    def _flush(self) -> None:
        self.timer = None
        assert self.transport is not None
        now = self.loop.time() + EARLY_TOLERANCE
        while self.queue and self.queue[0][0] <= now:
            _, data = self.queue.popleft()
            if data is None:
                self.queue.clear()
                self.transport.close()
                return
            if not self.transport.is_closing():
                self.transport.write(data)
        if self.queue:
            self._arm()


class Upstream(asyncio.Protocol):
    """The proxy's connection to the server: what it sends goes back to the client."""

    def __init__(self, to_client: DelayedWriter) -> None:
        self.to_client = to_client

    def data_received(self, data: bytes) -> None:
        self.to_client.push(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.to_client.push(None)


class Client(asyncio.Protocol):
    """A client's connection to the proxy: what it sends goes on to the server."""

    def __init__(self, upstream: tuple[str, int], delay: float) -> None:
        self.upstream = upstream
        self.delay = delay

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        counters["connections"] += 1
        loop = asyncio.get_running_loop()
        self.to_client = DelayedWriter(loop, self.delay, "to_client")
        self.to_client.attach(transport)
        self.to_server = DelayedWriter(loop, self.delay, "to_server")
        self.connecting = loop.create_task(self._connect(loop))

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            transport, _ = await loop.create_connection(
                lambda: Upstream(self.to_client), *self.upstream
            )
        except OSError:
            self.to_client.push(None)
            return
        self.to_server.attach(transport)

    def data_received(self, data: bytes) -> None:
        self.to_server.push(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.to_server.push(None)


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def _print_counters() -> None:
    print(json.dumps(counters), flush=True)


async def serve(listen: tuple[str, int], upstream: tuple[str, int], delay: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(upstream, delay), *listen, backlog=1024)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, _print_counters)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    port = server.sockets[0].getsockname()[1]
    print(
        f"READY {listen[0]}:{port} -> {upstream[0]}:{upstream[1]} delay {delay * 1000} ms",
        flush=True,
    )
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=_address, default=("127.0.0.1", 0))
    parser.add_argument("--upstream", type=_address, default=("127.0.0.1", 5432))
    parser.add_argument("--delay-ms", type=float, default=1.0, help="delay in EACH direction")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.listen, args.upstream, args.delay_ms / 1000))
    sys.exit(0)


if __name__ == "__main__":
    main()
