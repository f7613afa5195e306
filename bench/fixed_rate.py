"""An open-loop load generator: requests at a fixed rate, latency counted from when each was due.

wrk is closed-loop: a connection sends its next request only when the previous one is
answered. When the server stalls, the requests that would have queued behind the stall are
never sent, and the stall shows up in a single latency sample instead of in every request
that a real client population would have sent meanwhile (coordinated omission). This tool
schedules request ``i`` at ``start + i / rate`` whatever happened to the ones before, sends it
on the first free keep-alive connection, and measures its latency from that scheduled time,
as wrk2 and ``oha --latency-correction`` do: a request that had to wait for a free
connection counts that wait. Neither is installable from Debian 12 or PyPI, hence this file.

It is light: one asyncio process with a minimal HTTP/1.1 client (keep-alive, responses with a
``Content-Length``, which every server of the benchmark sends). Run it on another core than
the server::

    taskset -c 1 python -m bench.fixed_rate http://127.0.0.1:8000 --rate 500 --duration 10 \\
        --connections 64 --template '/records/{}' --values ids.txt

It prints one line, ``BENCH_RESULT {json}``, with the keys ``bench/run.py`` reads from its
wrk scripts (requests, duration_us, p50_us, p90_us, p99_us, max_us, non2xx, connect, read,
write, timeout) and its own: ``rate``, ``sent``, ``p999_us``, ``lag_p99_us``, how late its
scheduler got to a request after it was due (a lag near the latencies means the generator,
not the server, was the bottleneck), and ``client_cpu_us``, its own CPU per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import uvloop

HEADER_END = b"\r\n\r\n"
# uvloop's loop.time() moves in whole milliseconds: too coarse for latencies.
clock = time.perf_counter


@dataclass
class Tally:
    """What happened to the requests; latencies in seconds, counted from their due time."""

    latencies: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    non2xx: int = 0
    connect: int = 0
    read: int = 0
    timeout: int = 0
    sent: int = 0
    last_answer: float = 0.0
    cpu_seconds: float = 0.0


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time."""

    def __init__(
        self,
        on_answer: Callable[[Connection, int], None],
        on_lost: Callable[[Connection, bool], None],
    ) -> None:
        self.on_answer = on_answer
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.body_left: int | None = None
        self.status = 0
        self.keep_alive = True
        self.due = 0.0
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    @property
    def usable(self) -> bool:
        return self.keep_alive and self.transport is not None and not self.transport.is_closing()

    def send(self, request: bytes, due: float) -> None:
        assert self.transport is not None and not self.busy
        self.busy = True
        self.due = due
        self.transport.write(request)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.busy:
            if self.body_left is None and not self._read_head():
                return
            assert self.body_left is not None
            if len(self.buffer) < self.body_left:
                return
            del self.buffer[: self.body_left]
            self.body_left = None
            self.busy = False
            self.on_answer(self, self.status)

    def _read_head(self) -> bool:
        end = self.buffer.find(HEADER_END)
        if end < 0:
            return False
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        del self.buffer[: end + len(HEADER_END)]
        self.status = int(head[0].split(" ", 2)[1])
        length = None
        for line in head[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                self.keep_alive = False
        if length is None:
            raise ValueError("a response without Content-Length (chunked is not supported)")
        self.body_left = length
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        was_busy, self.busy = self.busy, False
        self.on_lost(self, was_busy)


class Generator:
    """Sends ``requests`` (raw HTTP bytes, chosen at random) at ``rate`` per second."""

    def __init__(
        self, host: str, port: int, requests: Sequence[bytes], rate: float, connections: int
    ) -> None:
        self.host, self.port = host, port
        self.requests = requests
        self.rate = rate
        self.connection_count = connections
        self.open: set[Connection] = set()
        self.idle: deque[Connection] = deque()
        # Requests that were due while every connection was busy: (due time, request).
        self.waiting: deque[tuple[float, bytes]] = deque()
        self.tally = Tally()
        self.loop = asyncio.get_running_loop()
        # Requests sent or waiting, not yet answered.
        self.outstanding = 0
        self.drained = asyncio.Event()
        self.closing = False

    async def connect(self) -> None:
        await asyncio.gather(*(self._open() for _ in range(self.connection_count)))

    async def _open(self) -> None:
        try:
            _, connection = await self.loop.create_connection(
                lambda: Connection(self._answered, self._lost), self.host, self.port
            )
        except OSError:
            self.tally.connect += 1
            return
        if self.closing:
            connection.close()
            return
        self.open.add(connection)
        self._hand_over(connection)

    def _answered(self, connection: Connection, status: int) -> None:
        now = clock()
        self.outstanding -= 1
        self.tally.latencies.append(now - connection.due)
        self.tally.last_answer = now
        if not 200 <= status < 300:
            self.tally.non2xx += 1
        if connection.usable:
            self._hand_over(connection)
        else:  # the server said "Connection: close"
            connection.close()
        self._check_drained()

    def _lost(self, connection: Connection, was_busy: bool) -> None:
        # Closing at the end, a request still unanswered was already counted as a timeout.
        if was_busy and not self.closing:
            self.outstanding -= 1
            self.tally.read += 1
        self.open.discard(connection)
        if connection in self.idle:
            self.idle.remove(connection)
        if not self.closing:
            self.loop.create_task(self._open())
        self._check_drained()

    def _check_drained(self) -> None:
        if self.outstanding == 0:
            self.drained.set()

    def _hand_over(self, connection: Connection) -> None:
        if self.waiting:
            due, request = self.waiting.popleft()
            connection.send(request, due)
        else:
            self.idle.append(connection)

    def _dispatch(self, due: float, request: bytes, now: float) -> None:
        self.outstanding += 1
        self.tally.sent += 1
        self.tally.lags.append(now - due)
        self.drained.clear()
        while self.idle:
            connection = self.idle.popleft()
            if connection.usable:
                connection.send(request, due)
                return
        self.waiting.append((due, request))

    async def run(self, duration: float, grace: float) -> float:
        """Send for ``duration`` seconds, wait up to ``grace`` seconds for the last answers;
        return when the first request was due."""
        cpu_before = time.process_time()
        total = max(1, round(duration * self.rate))
        start = clock() + 0.05
        interval = 1.0 / self.rate
        pick = random.Random(2003).choice
        sent = 0
        while sent < total:
            now = clock()
            # Everything due by now goes out at once: timers are coarse, the schedule is not.
            while sent < total and start + sent * interval <= now:
                self._dispatch(start + sent * interval, pick(self.requests), now)
                sent += 1
            if sent < total:
                await asyncio.sleep(max(0.0, start + sent * interval - clock()))
        try:
            await asyncio.wait_for(self.drained.wait(), grace)
        except TimeoutError:
            self.tally.timeout += self.outstanding
        self.tally.cpu_seconds = time.process_time() - cpu_before
        return start

    def close(self) -> None:
        self.closing = True
        for connection in list(self.open):
            connection.close()


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of sorted ``values`` (0 when there are none)."""
    if not values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(values)))
    return values[rank - 1]


def summary(tally: Tally, rate: float, start: float) -> dict[str, float | int]:
    latencies = sorted(tally.latencies)
    lags = sorted(tally.lags)
    seconds = max(tally.last_answer - start, 1e-9)

    def us(values: list[float], fraction: float) -> int:
        return round(percentile(values, fraction) * 1e6)

    return {
        "rate": rate,
        "sent": tally.sent,
        "requests": len(latencies),
        "duration_us": round(seconds * 1e6),
        "p50_us": us(latencies, 0.50),
        "p90_us": us(latencies, 0.90),
        "p99_us": us(latencies, 0.99),
        "p999_us": us(latencies, 0.999),
        "max_us": us(latencies, 1.0),
        "lag_p99_us": us(lags, 0.99),
        "client_cpu_us": round(tally.cpu_seconds / max(tally.sent, 1) * 1e6),
        "non2xx": tally.non2xx,
        "connect": tally.connect,
        "read": tally.read,
        "write": 0,
        "timeout": tally.timeout,
    }


def build_requests(host: str, template: str, values: Sequence[str]) -> list[bytes]:
    """One GET per value, ``{}`` in ``template`` replaced by the value."""
    return [
        f"GET {template.format(value)} HTTP/1.1\r\nHost: {host}\r\n"
        "User-Agent: bench-fixed-rate\r\nAccept: */*\r\n\r\n".encode("latin-1")
        for value in values
    ]


async def generate(
    url: str,
    *,
    template: str,
    values: Sequence[str],
    rate: float,
    duration: float,
    connections: int,
    grace: float = 10.0,
) -> dict[str, float | int]:
    """Load ``url`` at ``rate`` requests/s for ``duration`` s; the summary as a dict."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = build_requests(f"{host}:{port}", template, values)
    generator = Generator(host, port, requests, rate, connections)
    await generator.connect()
    if not any(connection.usable for connection in generator.idle):
        raise ConnectionError(f"could not connect to {url}")
    try:
        start = await generator.run(duration, grace)
    finally:
        generator.close()
    return summary(generator.tally, rate, start)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of sending")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--template", default="/records/{}", help="path; {} takes a value")
    parser.add_argument("--values", type=Path, help="file of values for {}, one per line")
    parser.add_argument("--timeout", type=float, default=10.0, help="for the last answers")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_args(argv)
    values = options.values.read_text().split() if options.values else [""]
    result = uvloop.run(
        generate(
            options.url,
            template=options.template,
            values=values,
            rate=options.rate,
            duration=options.duration,
            connections=options.connections,
            grace=options.timeout,
        )
    )
    print("BENCH_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
