"""Pool exhaustion: more slow requests than connections get a quick 503, never a hang."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.reliability import database, rawhttp
from tests.reliability.rawhttp import Client
from tests.reliability.report import Section
from tests.reliability.server import hypercorn

SECTION = (3, "Pool exhaustion")
POOL = {"DB_POOL_SIZE": "2", "DB_MAX_OVERFLOW": "1", "DB_POOL_TIMEOUT": "1"}
CONNECTIONS = 3
SLOW_REQUESTS = 10
SLOW_SECONDS = 3.0
# The pool gives up after DB_POOL_TIMEOUT; the margin covers a loaded two-core machine.
REFUSAL_LIMIT = 1.0 + 1.0
FAST_LIMIT = 0.5
FAST_PATHS = ("/records", "/countries", "/stats", "/ready", "/records/1", "/stats/daily")


@pytest.mark.reliability
async def test_exhausted_pool_answers_503_within_the_pool_timeout(
    pg_url: str, server_log: Path, section: Section
) -> None:
    section.parameters.update(
        backend="PostgreSQL",
        app="tests.slow_app:app (GET /slow holds its connection with pg_sleep)",
        pool="DB_POOL_SIZE=2, DB_MAX_OVERFLOW=1, DB_POOL_TIMEOUT=1",
        slow_requests=f"{SLOW_REQUESTS} concurrent GET /slow?seconds={SLOW_SECONDS:g}",
        fast_requests=f"then {', '.join(FAST_PATHS)}, 5 rounds",
    )
    await database.seed(pg_url, countries=3, days=5)
    with hypercorn(pg_url, server_log, app="tests.slow_app:app", **POOL) as server:

        async def slow() -> rawhttp.Response:
            async with Client.for_url(server.url) as client:
                return await client.request("GET", f"/slow?seconds={SLOW_SECONDS}", within=20)

        started = time.monotonic()
        responses = await asyncio.gather(*(slow() for _ in range(SLOW_REQUESTS)))
        burst = time.monotonic() - started
        fast: list[rawhttp.Response] = []
        async with Client.for_url(server.url) as client:
            for _ in range(5):
                fast += [await client.request("GET", path) for path in FAST_PATHS]
            metrics = rawhttp.parse_metrics((await client.request("GET", "/metrics")).text())
        problems = server.problems()

    statuses = Counter(r.status for r in responses)
    refused = [r for r in responses if r.status == 503]
    served = [r for r in responses if r.status == 200]
    refusal_max = max((r.elapsed for r in refused), default=0.0)
    fast_statuses = Counter(r.status for r in fast)
    fast_max = max(r.elapsed for r in fast)
    section.figure("slow requests' statuses", dict(statuses))
    section.figure("200s' latency min-max (s)", _span(served))
    section.figure("503s' latency min-max (s)", _span(refused))
    section.figure(
        "503s with Retry-After: 1", sum(r.header("retry-after") == "1" for r in refused)
    )
    section.figure(
        "503s as problem+json", sum(r.content_type == "application/problem+json" for r in refused)
    )
    section.figure("burst wall time (s)", round(burst, 2))
    section.figure("fast requests after the burst", dict(fast_statuses))
    section.figure("fast requests' max latency (s)", round(fast_max, 3))
    section.figure("db_pool_checked_out afterwards", metrics["db_pool_checked_out"])
    section.headline = (
        f"{statuses[200]} served, {statuses[503]} refused in <= {refusal_max:.2f} s, "
        f"fast requests after: max {fast_max * 1000:.0f} ms"
    )
    checks = [
        section.check("exactly 3 succeed", statuses[200] == CONNECTIONS, dict(statuses)),
        section.check(
            "the other 7 get 503", statuses[503] == SLOW_REQUESTS - CONNECTIONS, dict(statuses)
        ),
        section.check(
            "503s carry Retry-After and problem+json",
            all(
                r.header("retry-after") == "1" and r.content_type == "application/problem+json"
                for r in refused
            ),
        ),
        section.check(
            f"503 within {REFUSAL_LIMIT:g} s",
            refusal_max < REFUSAL_LIMIT,
            f"max {refusal_max:.3f} s",
        ),
        section.check(
            "503 not before the pool timeout",
            all(r.elapsed >= 0.9 for r in refused),
            _span(refused),
        ),
        section.check(
            "fast requests all 200", fast_statuses == {200: len(fast)}, dict(fast_statuses)
        ),
        section.check(
            f"fast requests under {FAST_LIMIT} s", fast_max < FAST_LIMIT, f"{fast_max:.3f} s"
        ),
        section.check("no connection left checked out", metrics["db_pool_checked_out"] == 0),
        section.check("server log clean", not problems, problems or "clean"),
    ]
    assert all(checks), section.checks


def _span(responses: list[rawhttp.Response]) -> str:
    if not responses:
        return "-"
    times = [r.elapsed for r in responses]
    return f"{min(times):.3f} - {max(times):.3f}"
