"""Cancellation storm: 5,000 mixed requests whose clients give up at random points.

Every write carries a marker (a unique country name, or unique figures on a record of its
own), so that afterwards the database tells exactly which writes were applied: all those
answered 2xx, none of those answered otherwise, and the abandoned ones either whole or not at
all. Meanwhile no session, pooled connection or open transaction may outlive its request.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AUTH, TOKEN
from tests.live import LiveServer
from tests.reliability import database, rawhttp
from tests.reliability.rawhttp import Client, IncompleteResponseError
from tests.reliability.report import Section
from tests.reliability.server import hypercorn
from tests.waiting import polled

SECTION = (1, "Cancellation storm")
REQUESTS = 5_000
CONCURRENCY = 64
SEED = 2003
SEED_COUNTRIES, SEED_DAYS = 300, 200  # 60,000 rows: /stats/daily takes tens of ms
BULK_ROWS = 20
PATCH_TARGETS = 1_200
TARGET_COUNTRIES = 12

# What each request does, with its weight.
KINDS = {
    "get": 20,
    "list": 14,
    "stats": 8,
    "daily": 10,
    "post": 17,
    "patch": 17,
    "bulk": 14,
}
# When its client gives up, with its weight:
MODES = {
    "complete": 35,  # never: reads the whole response
    "head": 10,  # sends the head (and part of the body, if any), then closes
    "sent": 15,  # sends the whole request and closes at once
    "timeout": 30,  # waits 0-30 ms for the response (0-200 ms for slow kinds), then closes
    "mid_response": 10,  # reads the status line, then closes in the middle of the response
}
SLOW_KINDS = frozenset({"daily", "bulk", "stats"})
WRITE_KINDS = frozenset({"post", "patch", "bulk"})
LISTS = (
    "/records?limit=50&order=-cases",
    "/records?limit=100&min_cases=1000&order=date",
    "/countries?limit=100&order=-name",
    "/records?page=3&per_page=50",
    "/countries/1/records?limit=50",
    "/countries/2/summary",
)


@dataclass
class Attempt:
    index: int
    kind: str
    mode: str
    close: str
    method: str = "GET"
    path: str = "/"
    body: bytes | None = None
    target: int | None = None  # PATCH: the record of its own
    status: int | None = None  # None: no status line was read
    detail: str = ""  # the problem's detail, for a 5xx read in full
    elapsed: float = 0.0
    gave_up: bool = False
    error: str | None = None

    @property
    def marker(self) -> int:
        return 1_000_000 + self.index


def _plan(target_ids: list[int]) -> list[Attempt]:
    """The same 5,000 requests on every run: kinds, modes and bodies from the seed."""
    rng = random.Random(SEED)
    kinds, modes = list(KINDS), list(MODES)
    targets = iter(target_ids)
    attempts = []
    for index in range(REQUESTS):
        kind = rng.choices(kinds, weights=list(KINDS.values()))[0]
        mode = rng.choices(modes, weights=list(MODES.values()))[0]
        attempt = Attempt(index, kind, mode, rng.choice(["fin", "rst"]))
        _fill(attempt, rng, targets)
        attempts.append(attempt)
    return attempts


def _fill(attempt: Attempt, rng: random.Random, targets: Any) -> None:
    kind, index = attempt.kind, attempt.index
    if kind == "get":
        attempt.path = f"/records/{rng.randint(1, SEED_COUNTRIES * SEED_DAYS)}"
    elif kind == "list":
        attempt.path = rng.choice(LISTS)
    elif kind == "stats":
        attempt.path = "/stats"
    elif kind == "daily":
        attempt.path = "/stats/daily"
    elif kind == "post":
        attempt.method, attempt.path = "POST", "/records"
        body: Any = {"country": f"Storm P{index}", "date": "2003-07-01", "cases": attempt.marker}
        attempt.body = rawhttp.json_body(body)
    elif kind == "patch":
        attempt.target = next(targets)
        attempt.method, attempt.path = "PATCH", f"/records/{attempt.target}"
        marker = attempt.marker
        attempt.body = rawhttp.json_body({"cases": marker, "deaths": marker, "recoveries": marker})
    else:
        attempt.method, attempt.path = "POST", "/records/bulk"
        start = dt.date(2003, 8, 1)
        rows = [
            {"country": f"Storm B{index}", "date": str(start + dt.timedelta(days=d)), "cases": d}
            for d in range(BULK_ROWS)
        ]
        attempt.body = rawhttp.json_body({"records": rows})


def _encode(attempt: Attempt, server: LiveServer) -> bytes:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if attempt.body is not None:
        headers["Content-Type"] = "application/json"
    if attempt.kind == "patch":
        headers["If-Match"] = '"1"'
    return rawhttp.encode_request(
        attempt.method, attempt.path, host=server.host, headers=headers, body=attempt.body
    )


async def _run(attempt: Attempt, server: LiveServer) -> None:
    rng = random.Random(f"{SEED}-{attempt.index}")
    raw = _encode(attempt, server)
    started = time.monotonic()
    reader, writer = await rawhttp.open_connection(server.host, server.port)
    close: Callable[[asyncio.StreamWriter], None] = (
        rawhttp.reset if attempt.close == "rst" else rawhttp.abort
    )
    try:
        if attempt.mode == "head":
            head_length = raw.index(b"\r\n\r\n") + 4
            # Reads: part of the head; writes: the head and part of the body.
            cut = (
                head_length // 2
                if attempt.body is None
                else rng.randint(head_length, len(raw) - 1)
            )
            writer.write(raw[:cut])
            await writer.drain()
            await asyncio.sleep(rng.uniform(0, 0.01))
            attempt.gave_up = True
            return
        writer.write(raw)
        await writer.drain()
        if attempt.mode == "sent":
            attempt.gave_up = True
        elif attempt.mode == "mid_response":
            status_line = await reader.readuntil(b"\r\n")
            attempt.status = int(status_line.split()[1])
            attempt.gave_up = True
        else:
            patience = 60.0
            if attempt.mode == "timeout":
                patience = rng.uniform(0, 0.2 if attempt.kind in SLOW_KINDS else 0.03)
            try:
                async with asyncio.timeout(patience):
                    response = await rawhttp.read_response(reader)
                attempt.status = response.status
                if response.status >= 500:
                    attempt.detail = str(response.json().get("detail"))
            except TimeoutError:
                attempt.gave_up = True
    except (ConnectionError, IncompleteResponseError, asyncio.IncompleteReadError) as error:
        attempt.error = type(error).__name__
    finally:
        close(writer)
        attempt.elapsed = time.monotonic() - started


async def _storm(attempts: list[Attempt], server: LiveServer) -> float:
    queue = iter(attempts)

    async def worker() -> None:
        for attempt in queue:
            await _run(attempt, server)

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return time.monotonic() - started


async def _settled_metrics(server: LiveServer) -> tuple[dict[str, float], float]:
    """Poll /metrics until no connection is checked out and the scrape is the only session."""
    async with Client.for_url(server.url) as client:

        async def scrape() -> dict[str, float]:
            return rawhttp.parse_metrics((await client.request("GET", "/metrics")).text())

        return await polled(
            scrape, lambda m: m["db_pool_checked_out"] == 0 and m["db_sessions_open"] == 1
        )


async def _patch_targets(server: LiveServer, pg_url: str) -> list[int]:
    """PATCH_TARGETS records (cases 0, version 1), one per PATCH of the storm."""
    per_country = PATCH_TARGETS // TARGET_COUNTRIES
    start = dt.date(2002, 1, 1)
    rows = [
        {"country": f"Storm target {c}", "date": str(start + dt.timedelta(days=d)), "cases": 0}
        for c in range(TARGET_COUNTRIES)
        for d in range(per_country)
    ]
    async with Client.for_url(server.url, default_headers=AUTH) as client:
        response = await client.request("POST", "/records/bulk", json={"records": rows})
        assert response.status == 200, response.text()
    found = await database.fetch(
        pg_url,
        "SELECT r.id FROM records r JOIN countries c ON c.id = r.country_id"
        " WHERE c.name LIKE 'Storm target %' ORDER BY r.id",
    )
    return [row["id"] for row in found]


@pytest.mark.reliability
async def test_cancellation_storm_leaks_nothing_and_writes_all_or_nothing(
    pg_url: str, server_log: Path, section: Section
) -> None:
    section.parameters.update(
        backend="PostgreSQL",
        server="Hypercorn, 1 worker (asyncio), default pool (10 + 10, timeout 5 s)",
        data=f"{SEED_COUNTRIES * SEED_DAYS:,} generated records ({SEED_COUNTRIES} countries x "
        f"{SEED_DAYS} days) + {PATCH_TARGETS:,} PATCH targets",
        requests=f"{REQUESTS:,} at concurrency {CONCURRENCY}, one connection each, seed {SEED}",
        kinds=", ".join(f"{k} {w}%" for k, w in KINDS.items())
        + f" (bulk: {BULK_ROWS} rows under a new country; PATCH: If-Match on a record of its own)",
        give_up=", ".join(f"{m} {w}%" for m, w in MODES.items())
        + "; closed with FIN or RST (SO_LINGER 0), half each",
    )
    await database.seed(pg_url, countries=SEED_COUNTRIES, days=SEED_DAYS)
    with hypercorn(pg_url, server_log) as server:
        targets = await _patch_targets(server, pg_url)
        assert len(targets) == PATCH_TARGETS
        attempts = _plan(targets)
        assert sum(a.kind == "patch" for a in attempts) <= PATCH_TARGETS
        elapsed = await _storm(attempts, server)
        metrics, settle = await _settled_metrics(server)
        # A backend whose connection was reset ends once the server notices (at its next read
        # or client check): waited for, not read once.
        idle_in_transaction, _ = await polled(
            lambda: database.idle_in_transaction(pg_url), lambda idle: idle == 0
        )
        async with Client.for_url(server.url) as client:
            still_serving = (await client.request("GET", "/stats")).status
        problems = server.problems()

    verdict = await _verify_writes(attempts, pg_url)
    statuses = Counter(a.status for a in attempts if a.status is not None)
    gave_up = [a for a in attempts if a.gave_up]
    two_xx = sum(1 for a in attempts if a.status is not None and 200 <= a.status < 300)
    # 64 clients share 20 connections on two busy cores: a request may wait out the pool
    # timeout (5 s) and get the contract's 503 for an exhausted pool. Any other 5xx is a bug.
    pool_exhausted = [a for a in attempts if a.status == 503 and "pool is exhausted" in a.detail]
    five_xx = Counter(
        f"{a.status}: {a.detail}"
        for a in attempts
        if a.status is not None and a.status >= 500 and a not in pool_exhausted
    )
    section.figure("requests", len(attempts))
    section.figure("kinds", dict(Counter(a.kind for a in attempts)))
    section.figure("client gave up (cancellations)", len(gave_up))
    section.figure("  by moment", dict(Counter(a.mode for a in gave_up)))
    section.figure(
        "connection errors seen by the client", dict(Counter(a.error for a in attempts if a.error))
    )
    section.figure("responses with a status", sum(statuses.values()))
    section.figure("2xx", two_xx)
    section.figure("statuses", dict(sorted(statuses.items())))
    section.figure("503 pool exhausted (contract: allowed)", len(pool_exhausted))
    section.figure("other 5xx", dict(five_xx))
    done = sorted(a.elapsed for a in attempts if a.mode == "complete" and a.status)
    section.figure(
        "complete requests' latency p50 / p99 / max (s)",
        f"{done[len(done) // 2]:.3f} / {done[int(len(done) * 0.99)]:.3f} / {done[-1]:.3f}",
    )
    section.figure("storm wall time (s)", round(elapsed, 1))
    section.figure("requests/s", round(len(attempts) / elapsed))
    section.figure("db_pool_checked_out after", metrics["db_pool_checked_out"])
    section.figure("db_sessions_open after (the scrape itself)", metrics["db_sessions_open"])
    section.figure("time to settle (s)", round(settle, 2))
    section.figure("idle in transaction backends", idle_in_transaction)
    for name, value in verdict.figures.items():
        section.figure(name, value)
    section.headline = (
        f"{len(attempts):,} requests, {len(gave_up):,} abandoned, {two_xx:,} x 2xx, "
        f"{sum(five_xx.values())} x 5xx (+ {len(pool_exhausted)} x 503 pool exhausted); "
        f"pool {metrics['db_pool_checked_out']:.0f} / sessions "
        f"{metrics['db_sessions_open']:.0f} after; {verdict.problem_count} write anomalies"
    )
    checks = [
        section.check("no 5xx but 503 'pool exhausted'", not five_xx, dict(five_xx) or "none"),
        section.check("db_pool_checked_out == 0", metrics["db_pool_checked_out"] == 0),
        section.check("db_sessions_open == 1", metrics["db_sessions_open"] == 1),
        section.check(
            "no idle in transaction backend", idle_in_transaction == 0, idle_in_transaction
        ),
        section.check("server log clean", not problems, problems or "clean"),
        section.check("still serving", still_serving == 200, still_serving),
        *(section.check(name, ok, detail) for name, ok, detail in verdict.checks),
    ]
    for line in verdict.problems[:20]:
        section.note(line)
    assert all(checks), section.checks


@dataclass
class Verdict:
    figures: dict[str, Any]
    checks: list[tuple[str, bool, Any]]
    problems: list[str]

    @property
    def problem_count(self) -> int:
        return len(self.problems)


async def _verify_writes(attempts: list[Attempt], pg_url: str) -> Verdict:
    """Compare what the database holds with what each write's client was told."""
    rows = await database.fetch(
        pg_url,
        "SELECT c.name, count(r.id) AS records, min(r.cases) AS cases FROM countries c"
        " LEFT JOIN records r ON r.country_id = c.id"
        " WHERE c.name LIKE 'Storm P%' OR c.name LIKE 'Storm B%' GROUP BY c.name",
    )
    by_name = {row["name"]: (row["records"], row["cases"]) for row in rows}
    patched = {
        row["id"]: (row["cases"], row["deaths"], row["recoveries"], row["version"])
        for row in await database.fetch(
            pg_url,
            "SELECT r.id, r.cases, r.deaths, r.recoveries, r.version FROM records r"
            " JOIN countries c ON c.id = r.country_id WHERE c.name LIKE 'Storm target %'",
        )
    }
    problems: list[tuple[str, str]] = []  # (kind of anomaly, what)
    applied: Counter[str] = Counter()
    abandoned_applied: Counter[str] = Counter()
    writes = [a for a in attempts if a.kind in WRITE_KINDS]
    planned_names = set()
    for attempt in writes:
        told_ok = attempt.status is not None and 200 <= attempt.status < 300
        told_no = attempt.status is not None and not told_ok
        if attempt.kind == "patch":
            assert attempt.target is not None
            state = patched[attempt.target]
            marker = attempt.marker
            done = state == (marker, marker, marker, 2)
            untouched = state == (0, 0, 0, 1)
            if not (done or untouched):
                problems.append(("partial", f"PATCH #{attempt.index}: half applied {state}"))
        else:
            prefix = "Storm P" if attempt.kind == "post" else "Storm B"
            name = f"{prefix}{attempt.index}"
            planned_names.add(name)
            expected_rows = 1 if attempt.kind == "post" else BULK_ROWS
            records, _cases = by_name.get(name, (0, None))
            done = records == expected_rows
            if name in by_name and not done:
                what = f"{attempt.kind} #{attempt.index}: {records} of {expected_rows} rows"
                problems.append(("partial", what))
        applied[attempt.kind] += done
        if attempt.gave_up and attempt.status is None and done:
            abandoned_applied[attempt.kind] += 1
        if told_ok and not done:
            what = f"{attempt.kind} #{attempt.index}: answered {attempt.status}, not stored"
            problems.append(("lost", what))
        if told_no and done:
            what = f"{attempt.kind} #{attempt.index}: answered {attempt.status}, yet stored"
            problems.append(("unexpected", what))
    strangers = set(by_name) - planned_names
    if strangers:
        problems.append(("stranger", f"rows nobody wrote: {sorted(strangers)[:5]}"))
    two_xx = sum(1 for a in writes if a.status is not None and 200 <= a.status < 300)
    abandoned = sum(1 for a in writes if a.gave_up and a.status is None)
    anomalies = Counter(kind for kind, _ in problems)
    return Verdict(
        figures={
            "writes": len(writes),
            "writes answered 2xx": two_xx,
            "writes abandoned before any status": abandoned,
            "writes in the database": sum(applied.values()),
            "  of them abandoned by their client": sum(abandoned_applied.values()),
            "writes in the database by kind": dict(applied),
        },
        checks=[
            ("every write answered 2xx is stored", not anomalies["lost"], anomalies["lost"]),
            (
                "no write answered non-2xx is stored",
                not anomalies["unexpected"],
                anomalies["unexpected"],
            ),
            (
                "no partial write (POST: country and record; bulk: 20 rows or none; PATCH: "
                "every field and the version, or nothing)",
                not anomalies["partial"],
                anomalies["partial"],
            ),
            (
                "every stored write was answered 2xx or abandoned",
                not anomalies["stranger"] and not anomalies["unexpected"],
                anomalies["stranger"] + anomalies["unexpected"],
            ),
        ],
        problems=[what for _, what in problems],
    )
