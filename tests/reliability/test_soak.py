"""Soak: 100,000 mixed requests on one worker. Its memory levels off after warm-up, the scoped
registry never holds more sessions than requests in flight, and no request fails."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvloop

from tests.conftest import AUTH
from tests.live import LiveServer
from tests.reliability import database, rawhttp
from tests.reliability.rawhttp import Client, IncompleteResponseError
from tests.reliability.report import Section
from tests.reliability.server import hypercorn, rss_kib

SECTION = (7, "Soak")
REQUESTS = 100_000
WARM_UP = 20_000
CONCURRENCY = 64
SAMPLE_EVERY = 2.0
RSS_GROWTH_LIMIT = 5.0  # per cent, from the warm-up mark to the end
SEED_COUNTRIES, SEED_DAYS = 100, 100
RECORDS = SEED_COUNTRIES * SEED_DAYS
SEED = 2003
FIRST_NEW_DATE = dt.date(2004, 1, 1)  # after every generated report

# (weight, kind): 80 % reads, 20 % writes. The per-request cost of the worker decides how
# long 100,000 take on two shared cores (about 1 ms of CPU for a read by id, 2 ms for a list,
# a summary or /stats, 3 ms for a write), so the cheap reads dominate, as they do in traffic.
MIX = [
    (45, "get record"),
    (10, "get record, If-None-Match"),
    (12, "get country"),
    (6, "list records"),
    (2, "list countries"),
    (4, "country summary"),
    (1, "stats"),
    (10, "post record"),
    (10, "patch record"),
]
LIST_RECORDS = (
    "/records?limit=20",
    "/records?limit=20&order=-cases",
    "/records?country_id={country}&limit=20",
    "/records?page=2&per_page=20",
)


@dataclass
class Tally:
    done: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    rss: dict[int, int] = field(default_factory=dict)  # requests done -> worker VmRSS (KiB)
    sessions: list[float] = field(default_factory=list)
    checked_out: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0


class Soak:
    """The load: CONCURRENCY keep-alive clients sharing one counter of requests to send."""

    def __init__(self, server: LiveServer, worker: int) -> None:
        self.server = server
        self.worker = worker
        self.tally = Tally()
        self.sent = 0
        self.posts = 0
        self.kinds = [kind for _, kind in MIX]
        self.weights = [weight for weight, _ in MIX]

    def run(self) -> Tally:
        """Drive the whole soak on a uvloop loop of its own (this is called in a thread)."""
        uvloop.run(self._main())
        return self.tally

    async def _main(self) -> None:
        sampling = asyncio.Event()
        sampler = asyncio.create_task(self._sample(sampling))
        started = time.monotonic()
        await asyncio.gather(*(self._client(n) for n in range(CONCURRENCY)))
        self.tally.elapsed = time.monotonic() - started
        self.tally.rss[self.tally.done] = rss_kib(self.worker)
        sampling.set()
        await sampler

    async def _client(self, number: int) -> None:
        rng = random.Random(f"{SEED}-{number}")
        # Each client patches only its own records: no two PATCHes race on one record.
        own = [i for i in range(1, RECORDS + 1) if i % CONCURRENCY == number]
        async with Client.for_url(self.server.url, default_headers=AUTH) as client:
            while self.sent < REQUESTS:
                self.sent += 1
                kind = rng.choices(self.kinds, weights=self.weights)[0]
                method, path, body, headers = self._request(kind, rng, own)
                try:
                    response = await client.request(method, path, json=body, headers=headers)
                except (TimeoutError, OSError, IncompleteResponseError) as error:
                    self.tally.errors[type(error).__name__] += 1
                else:
                    self.tally.statuses[response.status] += 1
                    self.tally.latencies.append(response.elapsed)
                    if response.status not in (200, 201, 304):
                        self.tally.errors[f"{response.status} {kind}"] += 1
                self.tally.done += 1
                if self.tally.done == WARM_UP:
                    self.tally.rss[WARM_UP] = rss_kib(self.worker)

    def _request(
        self, kind: str, rng: random.Random, own: list[int]
    ) -> tuple[str, str, Any, dict[str, str]]:
        record = rng.randint(1, RECORDS)
        country = rng.randint(1, SEED_COUNTRIES)
        choices: dict[str, Callable[[], tuple[str, str, Any, dict[str, str]]]] = {
            "get record": lambda: ("GET", f"/records/{record}", None, {}),
            "get record, If-None-Match": lambda: (
                "GET", f"/records/{record}", None, {"If-None-Match": '"1"'}
            ),
            "list records": lambda: (
                "GET", rng.choice(LIST_RECORDS).format(country=country), None, {}
            ),
            "get country": lambda: ("GET", f"/countries/{country}", None, {}),
            "list countries": lambda: ("GET", "/countries?limit=20&order=name", None, {}),
            "country summary": lambda: ("GET", f"/countries/{country}/summary", None, {}),
            "stats": lambda: ("GET", "/stats", None, {}),
            "post record": self._post,
            "patch record": lambda: (
                "PATCH",
                f"/records/{rng.choice(own)}",
                {"cases": rng.randint(0, 10**6)},
                {"If-Match": "*"},
            ),
        }  # fmt: skip
        return choices[kind]()

    def _post(self) -> tuple[str, str, Any, dict[str, str]]:
        """A new record: a stored country, a date no one used (the key is unique)."""
        n = self.posts
        self.posts += 1
        date = FIRST_NEW_DATE + dt.timedelta(days=n // SEED_COUNTRIES)
        body = {"country_id": 1 + n % SEED_COUNTRIES, "date": str(date), "cases": n}
        return "POST", "/records", body, {}

    async def _sample(self, stop: asyncio.Event) -> None:
        """Every SAMPLE_EVERY s: the registry size and checked-out connections, and RSS."""
        async with Client.for_url(self.server.url) as client:
            while not stop.is_set():
                response = await client.request("GET", "/metrics")
                metrics = rawhttp.parse_metrics(response.text())
                self.tally.sessions.append(metrics["db_sessions_open"])
                self.tally.checked_out.append(metrics["db_pool_checked_out"])
                self.tally.rss.setdefault(self.tally.done, rss_kib(self.worker))
                try:
                    await asyncio.wait_for(stop.wait(), SAMPLE_EVERY)
                except TimeoutError:
                    pass


@pytest.mark.reliability
async def test_soak_memory_is_flat_and_sessions_are_bounded(
    pg_url: str, server_log: Path, section: Section
) -> None:
    section.parameters.update(
        backend="PostgreSQL",
        server="Hypercorn, 1 worker (uvloop), default pool (10 + 10)",
        data=f"{RECORDS:,} generated records ({SEED_COUNTRIES} countries x {SEED_DAYS} days)",
        requests=f"{REQUESTS:,} at concurrency {CONCURRENCY} (keep-alive raw HTTP/1.1 clients "
        "on a uvloop loop of their own)",
        mix=", ".join(f"{kind} {weight}%" for weight, kind in MIX),
        samples=f"/metrics and the worker's VmRSS every {SAMPLE_EVERY:g} s; RSS also at "
        f"{WARM_UP:,} and {REQUESTS:,} requests",
    )
    await database.seed(pg_url, countries=SEED_COUNTRIES, days=SEED_DAYS)
    with hypercorn(pg_url, server_log, worker_class="uvloop") as server:
        soak = Soak(server, server.worker_pid())
        tally = await asyncio.to_thread(soak.run)
        problems = server.problems()

    total = sum(tally.statuses.values()) + sum(
        n for kind, n in tally.errors.items() if not kind[:3].isdigit()
    )
    errors = sum(tally.errors.values())
    rss_warm, rss_end = tally.rss[WARM_UP], tally.rss[REQUESTS]
    growth = (rss_end - rss_warm) / rss_warm * 100
    max_sessions = max(tally.sessions)
    latencies = sorted(tally.latencies)
    curve = ", ".join(
        f"{done // 1000}k: {kib / 1024:.1f}"
        for done, kib in sorted(tally.rss.items())[:: max(1, len(tally.rss) // 12)]
    )
    section.figure("requests", total)
    section.figure("statuses", dict(sorted(tally.statuses.items())))
    section.figure("errors", errors)
    section.figure("error rate", f"{errors / max(total, 1):.4%}")
    section.figure("wall time (s)", round(tally.elapsed, 1))
    section.figure("requests/s", round(total / tally.elapsed))
    section.figure(
        "latency p50 / p99 / max (ms)",
        f"{latencies[len(latencies) // 2] * 1000:.1f} / "
        f"{latencies[int(len(latencies) * 0.99)] * 1000:.1f} / {latencies[-1] * 1000:.1f}",
    )
    section.figure(f"worker RSS at {WARM_UP // 1000}k (MiB)", round(rss_warm / 1024, 1))
    section.figure(f"worker RSS at {REQUESTS // 1000}k (MiB)", round(rss_end / 1024, 1))
    section.figure("RSS growth", f"{growth:+.2f}%")
    section.figure("RSS curve (k requests: MiB)", curve)
    section.figure("/metrics samples", len(tally.sessions))
    section.figure("max db_sessions_open", max_sessions)
    section.figure("max db_pool_checked_out", max(tally.checked_out))
    section.headline = (
        f"{total:,} requests at {total / tally.elapsed:.0f}/s, {errors} errors; RSS "
        f"{rss_warm / 1024:.1f} -> {rss_end / 1024:.1f} MiB ({growth:+.2f}%); max sessions "
        f"{max_sessions:.0f}"
    )
    for error, count in tally.errors.most_common(10):
        section.note(f"error: {error} x {count}")
    checks = [
        section.check("every request sent", total == REQUESTS, total),
        section.check("error rate 0", errors == 0, dict(tally.errors) or 0),
        section.check(
            f"RSS growth {WARM_UP // 1000}k -> {REQUESTS // 1000}k < {RSS_GROWTH_LIMIT:g}%",
            growth < RSS_GROWTH_LIMIT,
            f"{growth:+.2f}%",
        ),
        section.check(
            f"db_sessions_open <= {CONCURRENCY} + 1", max_sessions <= CONCURRENCY + 1, max_sessions
        ),
        section.check("server log clean", not problems, problems or "clean"),
    ]
    assert all(checks), section.checks
