"""Pool exhaustion under bursts: how late after DB_POOL_TIMEOUT the 503s arrive.

A request refused for want of a connection waits DB_POOL_TIMEOUT from the moment it asks for
one; what it waited before (its turn on the worker's event loop to be parsed and routed) and
after (its turn to be answered, behind every other refusal falling due at the same moment)
comes on top. Bursts of growing size against one worker measure that delay; README states the
bound it supports.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import pytest

from tests.reliability import database, rawhttp
from tests.reliability.contract import problem_issues
from tests.reliability.rawhttp import Client
from tests.reliability.report import Section
from tests.reliability.server import hypercorn

SECTION = ("3b", "Pool exhaustion under bursts")
POOL = {"DB_POOL_SIZE": "2", "DB_MAX_OVERFLOW": "1", "DB_POOL_TIMEOUT": "1"}
POOL_TIMEOUT = 1.0
CONNECTIONS = 3
BURSTS = (10, 100, 250)
SLOW_SECONDS = 4.0
# Generous on purpose (a shared two-core machine): the figures, not this limit, are the result.
LATE_LIMIT = 5.0


async def _burst(url: str, size: int) -> tuple[list[rawhttp.Response], float]:
    async def slow() -> rawhttp.Response:
        async with Client.for_url(url) as client:
            return await client.request("GET", f"/slow?seconds={SLOW_SECONDS}", within=60)

    started = time.monotonic()
    responses = await asyncio.gather(*(slow() for _ in range(size)))
    return list(responses), time.monotonic() - started


@pytest.mark.reliability
async def test_pool_exhaustion_503s_arrive_soon_after_the_pool_timeout(
    pg_url: str, server_log: Path, section: Section
) -> None:
    section.parameters.update(
        backend="PostgreSQL",
        app="tests.slow_app:app (GET /slow holds its connection with pg_sleep)",
        pool="DB_POOL_SIZE=2, DB_MAX_OVERFLOW=1, DB_POOL_TIMEOUT=1, one worker",
        bursts=f"{', '.join(map(str, BURSTS))} concurrent GET /slow?seconds={SLOW_SECONDS:g}",
    )
    await database.seed(pg_url, countries=1, days=1)
    results: dict[int, tuple[list[rawhttp.Response], float]] = {}
    with hypercorn(pg_url, server_log, app="tests.slow_app:app", **POOL) as server:
        for size in BURSTS:
            results[size] = await _burst(server.url, size)
        problems = server.problems()

    late_max = 0.0
    for size, (responses, wall) in results.items():
        refused = [r for r in responses if r.status == 503]
        served = [r for r in responses if r.status == 200]
        late = sorted(r.elapsed - POOL_TIMEOUT for r in refused)
        late_max = max(late_max, late[-1] if late else 0.0)
        other = [r.status for r in responses if r.status not in (200, 503)]
        section.figure(
            f"burst {size}: served / refused / other",
            f"{len(served)} / {len(refused)} / {len(other)}",
        )
        if late:
            section.figure(
                f"burst {size}: 503 after the pool timeout, median / p95 / max (s)",
                f"{statistics.median(late):.3f} / {late[int(0.95 * (len(late) - 1))]:.3f} / "
                f"{late[-1]:.3f}",
            )
        section.figure(f"burst {size}: wall time (s)", round(wall, 2))
        section.check(
            f"burst {size}: {CONNECTIONS} served", len(served) == CONNECTIONS, len(served)
        )
        section.check(f"burst {size}: the rest 503", len(refused) == size - CONNECTIONS, other[:5])
        section.check(
            f"burst {size}: no 503 before the pool timeout",
            all(r.elapsed >= POOL_TIMEOUT * 0.95 for r in refused),
        )
        section.check(
            f"burst {size}: 503s are problem+json with Retry-After",
            not [i for r in refused for i in problem_issues(r)],
        )
    section.check(
        f"every 503 within {LATE_LIMIT:g} s after the pool timeout",
        late_max < LATE_LIMIT,
        f"max {late_max:.3f} s",
    )
    section.check("server log clean", not problems, problems or "clean")
    sizes = ", ".join(map(str, BURSTS))
    section.headline = f"bursts {sizes}: 503s at most {late_max:.2f} s after DB_POOL_TIMEOUT"
    section.assert_checks()
