"""Bounded waits: clients that leave in the middle of large writes, a frozen database and a
held lock.

- Large writes of every kind (a bulk write whose 2,000 items link 100 sources each, a bulk
  write of 2,000 new countries, a PUT with 100 sources) whose clients close the socket at a
  random moment (seeded): no request runs to its end once the service has noticed that its
  client left; afterwards no connection is checked out, no session is open, no backend is
  left active or idle in transaction, every abandoned write is whole or absent, and the
  service still serves.
- A frozen database (every process of a throwaway cluster stopped with SIGSTOP): requests
  answer 503 with Retry-After within the configured bound, every endpoint answers again
  once it thaws, and SIGTERM during a freeze still ends the server within a bound.
- A lock the test holds in its own connection (a row lock, a table lock): writes that need
  it answer 503 with Retry-After within the lock timeout's bound, reads go on, and once it
  is released the same writes succeed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from service.compat.quart import LOST_CANCEL
from tests.conftest import AUTH, TOKEN
from tests.databases import migrate
from tests.live import LiveServer, _children
from tests.pgcluster import Cluster, needs_postgres_binaries
from tests.reliability import database, rawhttp
from tests.reliability.contract import problem_issues
from tests.reliability.rawhttp import Client, IncompleteResponseError, Outcome, Response
from tests.reliability.report import Section
from tests.reliability.server import hypercorn
from tests.waiting import polled

SECTIONS = {
    "test_clients_that_leave_large_writes_strand_no_connection": (
        "1b",
        "Cancellation: clients that leave large writes",
    ),
    "test_frozen_database_is_503_within_the_bound_then_recovers": (
        "2c",
        "Bounded waits: a frozen database",
    ),
    "test_held_lock_is_503_within_the_bound_then_writes_succeed": (
        "2d",
        "Bounded waits: a held lock",
    ),
}
SEED = 2003
SOURCES = 100
ITEMS = 2_000
CASES_PER_KIND = 6
CONCURRENCY = 3
HANG = 60.0


# -- clients that leave large writes ----------------------------------------------------------


@dataclass
class Case:
    index: int
    kind: str
    leave_after: float
    close: str
    status: int | None = None  # None: the client left before any status
    error: str | None = None

    @property
    def country(self) -> str:
        return f"Abandoned {self.kind} {self.index}"


def _bulk_links(case: Case, source_ids: list[int]) -> tuple[str, str, bytes]:
    start = dt.date(2004, 1, 1)
    items = [
        {
            "country": case.country,
            "date": str(start + dt.timedelta(days=d)),
            "cases": d,
            "source_ids": source_ids,
        }
        for d in range(ITEMS)
    ]
    return "POST", "/records/bulk", rawhttp.json_body({"records": items})


def _bulk_countries(case: Case, source_ids: list[int]) -> tuple[str, str, bytes]:
    items = [
        {"country": f"{case.country} / {n}", "date": "2004-01-01", "cases": n}
        for n in range(ITEMS)
    ]
    return "POST", "/records/bulk", rawhttp.json_body({"records": items})


def _put_sources(case: Case, source_ids: list[int]) -> tuple[str, str, bytes]:
    body = {"country": case.country, "date": "2004-01-01", "cases": 7, "source_ids": source_ids}
    return "PUT", f"/records/{_put_target(case)}", rawhttp.json_body(body)


def _put_target(case: Case) -> int:
    return 1 + case.index % 90  # one of the 90 seeded records


KINDS: dict[str, Callable[[Case, list[int]], tuple[str, str, bytes]]] = {
    "bulk with links": _bulk_links,
    "bulk of new countries": _bulk_countries,
    "PUT with many sources": _put_sources,
}


async def _timed(server: LiveServer, method: str, path: str, body: bytes) -> tuple[int, float]:
    async with Client.for_url(server.url, default_headers=AUTH) as client:
        headers = {"Content-Type": "application/json"}
        response = await client.request(method, path, body=body, headers=headers, within=HANG)
    return response.status, response.elapsed


async def _leave(server: LiveServer, case: Case, request: bytes) -> None:
    reader, writer = await rawhttp.open_connection(server.host, server.port)
    try:
        writer.write(request)
        await writer.drain()
        try:
            async with asyncio.timeout(case.leave_after):
                case.status = (await rawhttp.read_response(reader)).status
        except TimeoutError:
            pass
    except (ConnectionError, IncompleteResponseError, asyncio.IncompleteReadError) as error:
        case.error = type(error).__name__
    finally:
        (rawhttp.reset if case.close == "rst" else rawhttp.abort)(writer)


async def _settled(server: LiveServer) -> tuple[dict[str, float], float]:
    """Poll /metrics until nothing is checked out and the scrape is the only session."""
    async with Client.for_url(server.url) as client:

        async def scrape() -> dict[str, float]:
            return rawhttp.parse_metrics((await client.request("GET", "/metrics")).text())

        return await polled(
            scrape, lambda m: m["db_pool_checked_out"] == 0 and m["db_sessions_open"] == 1
        )


async def _busy_backends(database_url: str) -> int:
    return await database.backends(
        database_url, "state = 'active' OR state LIKE 'idle in transaction%'"
    )


async def _until_no_busy_backend(database_url: str) -> tuple[int, float]:
    return await polled(lambda: _busy_backends(database_url), lambda busy: busy == 0)


@pytest.mark.reliability
async def test_clients_that_leave_large_writes_strand_no_connection(
    pg_url: str, server_log: Path, section: Section
) -> None:
    section.parameters.update(
        backend="PostgreSQL",
        server="Hypercorn, 1 worker (asyncio), default pool (10 + 10) and timeouts",
        kinds=f"bulk of {ITEMS:,} items x {SOURCES} sources (a body of about 1 MB, "
        f"{ITEMS * SOURCES:,} links); bulk of {ITEMS:,} items under {ITEMS:,} new countries; "
        f"PUT with {SOURCES} sources",
        cases=f"{CASES_PER_KIND} per kind, {CONCURRENCY} at a time, seed {SEED}; each client "
        "sends the whole request, then leaves at a random moment between 0 and 1.2 x the "
        "kind's measured duration (FIN or RST, half each)",
    )
    await database.seed(pg_url, countries=3, days=30)
    source_rows = await database.fetch(
        pg_url,
        "INSERT INTO sources (title, created_at, updated_at)"
        " SELECT 'source ' || n, now(), now() FROM generate_series(1, $1) AS n RETURNING id",
        SOURCES,
    )
    source_ids = [row["id"] for row in source_rows]
    rng = random.Random(SEED)
    with hypercorn(pg_url, server_log) as server:
        durations: dict[str, float] = {}
        for kind, build in KINDS.items():
            probe = Case(10_000 + len(durations), kind, 0.0, "fin")
            status, elapsed = await _timed(server, *build(probe, source_ids))
            assert status == 200, (kind, status)
            durations[kind] = elapsed
        cases = [
            Case(
                index,
                kind,
                rng.uniform(0, 1.2 * durations[kind]),
                rng.choice(["fin", "rst"]),
            )
            for index, kind in enumerate(k for k in KINDS for _ in range(CASES_PER_KIND))
        ]
        rng.shuffle(cases)
        requests = {
            case.index: rawhttp.encode_request(
                method,
                path,
                host=server.host,
                headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
                body=body,
            )
            for case in cases
            for method, path, body in [KINDS[case.kind](case, source_ids)]
        }
        limit = asyncio.Semaphore(CONCURRENCY)

        async def one(case: Case) -> None:
            async with limit:
                await _leave(server, case, requests[case.index])

        started = time.monotonic()
        await asyncio.gather(*(one(case) for case in cases))
        elapsed = time.monotonic() - started
        metrics, settle = await _settled(server)
        busy, busy_settle = await _until_no_busy_backend(pg_url)
        after: list[int] = []
        for kind, build in KINDS.items():
            final = Case(20_000 + len(after), kind, 0.0, "fin")
            after.append((await _timed(server, *build(final, source_ids)))[0])
        problems = server.problems()
    partial = await _partial_writes(pg_url, cases)
    left = [case for case in cases if case.status is None]
    section.figure("cases", len(cases))
    section.figure(
        "measured duration of a complete request, by kind (s)",
        {kind: round(seconds, 2) for kind, seconds in durations.items()},
    )
    section.figure("clients that left before any status", len(left))
    section.figure("  by kind", dict(Counter(case.kind for case in left)))
    section.figure(
        "statuses of the others", dict(Counter(c.status for c in cases if c.status is not None))
    )
    section.figure("wall time (s)", round(elapsed, 1))
    section.figure("db_pool_checked_out after", metrics["db_pool_checked_out"])
    section.figure("db_sessions_open after (the scrape itself)", metrics["db_sessions_open"])
    section.figure("time to settle (s)", round(settle, 2))
    section.figure("active or idle-in-transaction backends after", busy)
    section.figure("time until none (s)", round(busy_settle, 2))
    section.figure("abandoned writes stored in part", len(partial))
    section.figure("one more write of each kind afterwards", after)
    section.figure(
        "requests that ran to their end after their client left (a lost cancel)",
        problems.get(LOST_CANCEL, 0),
    )
    failed = [
        section.check("db_pool_checked_out == 0", metrics["db_pool_checked_out"] == 0),
        section.check("db_sessions_open == 1", metrics["db_sessions_open"] == 1),
        section.check("no backend active or idle in transaction", busy == 0, busy),
        section.check("every abandoned write whole or absent", not partial, partial[:5] or ""),
        section.check("still serving: a write of each kind is 200", after == [200] * 3, after),
        section.check("server log clean", not problems, problems or "clean"),
    ].count(False)
    section.headline = (
        f"{len(cases)} cases ({len(left)} left before any status), {failed} checks failed; "
        f"pool {metrics['db_pool_checked_out']:.0f} / sessions "
        f"{metrics['db_sessions_open']:.0f} / busy backends {busy} after"
    )
    section.assert_checks()


async def _partial_writes(database_url: str, cases: list[Case]) -> list[str]:
    """Abandoned writes the database holds only in part."""
    partial = []
    for case in cases:
        if case.kind == "bulk with links":
            row = await database.fetch(
                database_url,
                "SELECT count(DISTINCT r.id) AS records, count(l.source_id) AS links"
                " FROM countries c JOIN records r ON r.country_id = c.id"
                " LEFT JOIN record_sources l ON l.record_id = r.id WHERE c.name = $1",
                case.country,
            )
            found = (row[0]["records"], row[0]["links"])
            if found not in {(0, 0), (ITEMS, ITEMS * SOURCES)}:
                partial.append(f"{case.kind} #{case.index}: {found}")
        elif case.kind == "bulk of new countries":
            count = await database.fetchval(
                database_url,
                "SELECT count(*) FROM countries WHERE name LIKE $1",
                f"{case.country} / %",
            )
            if count not in {0, ITEMS}:
                partial.append(f"{case.kind} #{case.index}: {count} countries")
        else:
            links = await database.fetchval(
                database_url,
                "SELECT count(*) FROM record_sources WHERE record_id = $1",
                _put_target(case),
            )
            if links not in {0, SOURCES}:
                partial.append(f"{case.kind} #{case.index}: {links} links")
    return partial


# -- a frozen database --------------------------------------------------------------------------

POOL_TIMEOUT = 2.0
STATEMENT_TIMEOUT = 1.0
COMMAND_TIMEOUT = 2.0
# A request in a freeze: the wait for a connection (or a connect), its statement, then the
# rollback of its session, which waits for the statement's cancel; plus a margin for a busy
# machine.
FREEZE_BOUND = POOL_TIMEOUT + 2 * COMMAND_TIMEOUT + 2.0
FREEZE_SECONDS = 6.0
FREEZE_CLIENTS = 8
RECOVERY_LIMIT = 5.0
SHUTDOWN_BOUND = 30.0
BOUNDED = {
    "DB_POOL_TIMEOUT": str(POOL_TIMEOUT),
    "DB_STATEMENT_TIMEOUT": str(STATEMENT_TIMEOUT),
    "DB_COMMAND_TIMEOUT": str(COMMAND_TIMEOUT),
}


def _cluster_pids(cluster: Cluster) -> list[int]:
    """The postmaster and every process it started."""
    postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    return [postmaster, *_children(postmaster)]


def _signal_cluster(cluster: Cluster, signum: signal.Signals) -> None:
    for pid in _cluster_pids(cluster):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


async def _one(client: Client, kind: str, serial: int) -> Outcome:
    started = time.monotonic()
    try:
        if kind == "read":
            response = await client.request("GET", f"/records/{1 + serial % 50}", within=HANG)
        else:
            body = {"country": f"Frozen {serial}", "date": "2003-06-01", "cases": 1}
            response = await client.request("POST", "/records", json=body, within=HANG)
    except (TimeoutError, OSError, IncompleteResponseError) as error:
        return Outcome(kind, started, time.monotonic(), None, type(error).__name__)
    return Outcome(kind, started, time.monotonic(), response)


async def _during(server: LiveServer, seconds: float, serials: Any) -> list[Outcome]:
    """FREEZE_CLIENTS clients alternating reads and writes for ``seconds``."""
    outcomes: list[Outcome] = []
    deadline = time.monotonic() + seconds

    async def client_loop(n: int) -> None:
        async with Client.for_url(server.url, default_headers=AUTH) as client:
            while time.monotonic() < deadline:
                kind = "read" if n % 2 else "write"
                outcome = await _one(client, kind, next(serials))
                outcomes.append(outcome)
                if outcome.response is None and server.process.poll() is not None:
                    return  # the server has gone (SIGTERM)

    await asyncio.gather(*(client_loop(n) for n in range(FREEZE_CLIENTS)))
    return outcomes


async def _until_every_kind_answers(server: LiveServer, serials: Any) -> float:
    started = time.monotonic()
    async with Client.for_url(server.url, default_headers=AUTH) as client:
        while time.monotonic() - started < 30:
            read = await _one(client, "read", next(serials))
            write = await _one(client, "write", next(serials))
            if read.status == 200 and write.status == 201:
                break
            await asyncio.sleep(0.05)
    return time.monotonic() - started


@needs_postgres_binaries()
@pytest.mark.reliability
async def test_frozen_database_is_503_within_the_bound_then_recovers(
    server_log: Path, section: Section, tmp_path: Path
) -> None:
    section.parameters.update(
        database="throwaway cluster; frozen with SIGSTOP on the postmaster and every backend",
        settings=", ".join(f"{name}={value}" for name, value in BOUNDED.items())
        + ", default pool (10 + 10), 1 Hypercorn worker",
        traffic=f"{FREEZE_CLIENTS} keep-alive clients alternating GET /records/ID and "
        f"POST /records through a {FREEZE_SECONDS:g} s freeze",
        bound=f"every answer during the freeze within {FREEZE_BOUND:g} s (pool timeout + twice "
        "the command timeout + 2 s)",
        shutdown=f"a second freeze with requests in flight, then SIGTERM: the server must exit "
        f"within {SHUTDOWN_BOUND:g} s",
    )
    serials = iter(range(1_000_000))
    cluster = Cluster()
    try:
        await asyncio.to_thread(cluster.init)
        await asyncio.to_thread(cluster.start)
        await asyncio.to_thread(migrate, cluster.url)
        await database.seed(cluster.url, countries=5, days=10)
        with hypercorn(cluster.url, server_log, **BOUNDED) as server:
            before = await _during(server, 1.0, serials)
            _signal_cluster(cluster, signal.SIGSTOP)
            try:
                frozen = await _during(server, FREEZE_SECONDS, serials)
            finally:
                _signal_cluster(cluster, signal.SIGCONT)
            recovery = await _until_every_kind_answers(server, serials)
            after = await _during(server, 1.0, serials)
            metrics, settle = await _settled(server)
            busy, _ = await _until_no_busy_backend(cluster.url)
            # Before the SIGTERM: Hypercorn logs the connections it cancels at shutdown.
            problems = server.problems()
            output = server.output()

            # SIGTERM while frozen, with requests in flight.
            _signal_cluster(cluster, signal.SIGSTOP)
            try:
                in_flight = asyncio.ensure_future(_during(server, FREEZE_SECONDS, serials))
                await asyncio.sleep(1.0)
                terminated = time.monotonic()
                server.process.send_signal(signal.SIGTERM)
                exit_code = await asyncio.to_thread(server.process.wait, SHUTDOWN_BOUND + 30)
                shutdown = time.monotonic() - terminated
                await in_flight
            finally:
                _signal_cluster(cluster, signal.SIGCONT)
    finally:
        await asyncio.to_thread(cluster.remove)
    if problems:
        section.note(f"server log: {output[output.find('Traceback') :][:3000]}")

    answered = [o for o in frozen if o.response is not None]
    slowest = max((o.latency for o in frozen), default=0.0)
    bad_503 = [
        o for o in answered if o.response and o.status == 503 and problem_issues(o.response)
    ]
    others = Counter(o.status for o in answered if o.status not in {200, 201, 503})
    unanswered = Counter(o.error for o in frozen if o.response is None)
    section.figure("requests before the freeze", len(before))
    section.figure("  their statuses", dict(Counter(o.status for o in before)))
    section.figure("requests during the freeze (cases)", len(frozen))
    section.figure("  their statuses", dict(Counter(o.status for o in frozen)))
    section.figure("  slowest answer (s)", round(slowest, 3))
    section.figure("thaw -> a read and a write succeed (s)", round(recovery, 3))
    section.figure("requests after the thaw", len(after))
    section.figure("  their statuses", dict(Counter(o.status for o in after)))
    section.figure("db_pool_checked_out after", metrics["db_pool_checked_out"])
    section.figure("db_sessions_open after (the scrape itself)", metrics["db_sessions_open"])
    section.figure("time to settle (s)", round(settle, 2))
    section.figure("SIGTERM while frozen -> exit (s)", round(shutdown, 2))
    section.figure("exit code", exit_code)
    failed = [
        section.check("requests were made during the freeze", len(frozen) >= FREEZE_CLIENTS),
        section.check(
            "every request during the freeze answered", not unanswered, dict(unanswered) or ""
        ),
        section.check("only 2xx or 503 during the freeze", not others, dict(others) or ""),
        section.check("every 503: problem+json, Retry-After: 1", not bad_503, len(bad_503)),
        section.check(
            f"every answer within {FREEZE_BOUND:g} s", slowest < FREEZE_BOUND, f"{slowest:.3f}"
        ),
        section.check(
            f"recovered within {RECOVERY_LIMIT:g} s", recovery < RECOVERY_LIMIT, round(recovery, 3)
        ),
        section.check(
            "every request after the thaw: 2xx",
            all(o.status in {200, 201} for o in after),
            dict(Counter(o.status for o in after)),
        ),
        section.check("db_pool_checked_out == 0", metrics["db_pool_checked_out"] == 0),
        section.check("db_sessions_open == 1", metrics["db_sessions_open"] == 1),
        section.check("no backend active or idle in transaction", busy == 0, busy),
        section.check(
            f"SIGTERM while frozen: exit within {SHUTDOWN_BOUND:g} s",
            shutdown < SHUTDOWN_BOUND,
            f"{shutdown:.2f} s, exit code {exit_code}",
        ),
        section.check("server log clean until the SIGTERM", not problems, problems or "clean"),
    ].count(False)
    section.headline = (
        f"{len(frozen)} requests during a {FREEZE_SECONDS:g} s freeze: "
        f"{dict(Counter(o.status for o in frozen))}, slowest {slowest:.2f} s "
        f"(bound {FREEZE_BOUND:g}); recovered in {recovery:.2f} s; SIGTERM while frozen: "
        f"exit in {shutdown:.1f} s; {failed} checks failed"
    )
    section.assert_checks()


# -- a held lock --------------------------------------------------------------------------------

LOCK_TIMEOUT = 0.5
LOCK_BOUND = LOCK_TIMEOUT + 2.5
ROUNDS = 5

Attempt = Callable[[Client, int], Awaitable[Response]]


def _lock_cases(record_id: int) -> dict[str, tuple[str, str, Attempt, bool]]:
    """name -> (lock statement, what it blocks, the request, whether it must be blocked)."""
    row_lock = f"SELECT 1 FROM records WHERE id = {record_id} FOR UPDATE"
    table_lock = "LOCK TABLE countries IN EXCLUSIVE MODE"

    def patch(client: Client, n: int) -> Awaitable[Response]:
        body = {"cases": 100 + n}
        return client.request("PATCH", f"/records/{record_id}", json=body, within=HANG)

    def delete(client: Client, n: int) -> Awaitable[Response]:
        return client.request("DELETE", f"/records/{record_id}", within=HANG)

    def post_new_country(client: Client, n: int) -> Awaitable[Response]:
        body = {"country": f"Held lock {n}", "date": "2003-06-01", "cases": 1}
        return client.request("POST", "/records", json=body, within=HANG)

    def bulk_new_countries(client: Client, n: int) -> Awaitable[Response]:
        items = [
            {"country": f"Held lock bulk {n}/{i}", "date": "2003-06-01", "cases": i}
            for i in range(50)
        ]
        return client.request("POST", "/records/bulk", json={"records": items}, within=HANG)

    def read(client: Client, n: int) -> Awaitable[Response]:
        return client.request("GET", f"/records/{record_id}", within=HANG)

    return {
        "row lock: PATCH the record": (row_lock, "PATCH", patch, True),
        "row lock: GET the record": (row_lock, "GET", read, False),
        "table lock: POST a record under a new country": (
            table_lock,
            "POST",
            post_new_country,
            True,
        ),
        "table lock: bulk of 50 new countries": (table_lock, "bulk", bulk_new_countries, True),
        "table lock: GET the record": (table_lock, "GET", read, False),
        "row lock: DELETE the record": (row_lock, "DELETE", delete, True),
    }


@pytest.mark.reliability
async def test_held_lock_is_503_within_the_bound_then_writes_succeed(
    pg_url: str, server_log: Path, section: Section
) -> None:
    settings = {"DB_LOCK_TIMEOUT": str(LOCK_TIMEOUT), "DB_STATEMENT_TIMEOUT": "10"}
    section.parameters.update(
        backend="PostgreSQL",
        settings=", ".join(f"{k}={v}" for k, v in settings.items()),
        locks="the test holds, in its own connection and transaction, a row lock (SELECT ... "
        "FOR UPDATE on a record) or a table lock (LOCK TABLE countries IN EXCLUSIVE MODE)",
        rounds=f"{ROUNDS} rounds of every case while the lock is held, then the same request "
        "once it is released",
        bound=f"a blocked request answers 503 within {LOCK_BOUND:g} s",
    )
    await database.seed(pg_url, countries=3, days=10)
    outcomes: list[tuple[str, str, int, float, list[str]]] = []
    with hypercorn(pg_url, server_log, **settings) as server:
        async with Client.for_url(server.url, default_headers=AUTH) as client:
            for n in range(ROUNDS):
                created = await client.request(
                    "POST",
                    "/records",
                    json={
                        "country": "Held lock target",
                        "date": f"2003-07-{n + 1:02d}",
                        "cases": 1,
                    },
                    within=HANG,
                )
                assert created.status == 201, created.text()
                record_id = created.json()["id"]
                for name, (lock, _what, attempt, _blocked) in _lock_cases(record_id).items():
                    holder = await asyncpg.connect(database.dsn(pg_url))
                    try:
                        transaction = holder.transaction()
                        await transaction.start()
                        await holder.execute(lock)
                        held = await attempt(client, n)
                        await transaction.rollback()
                    finally:
                        await holder.close()
                    outcomes.append(
                        (
                            name,
                            "held",
                            held.status,
                            held.elapsed,
                            problem_issues(held) if held.status >= 400 else [],
                        )
                    )
                    released = await attempt(client, n)
                    outcomes.append((name, "released", released.status, released.elapsed, []))
        metrics, _ = await _settled(server)
        busy, _ = await _until_no_busy_backend(pg_url)
        problems = server.problems()
    cases = _lock_cases(0)
    wrong = [
        f"{name} ({phase}): {status}"
        for name, phase, status, _elapsed, issues in outcomes
        if not _as_expected(cases[name][3], phase, status) or issues
    ]
    blocked_503 = [o for o in outcomes if o[1] == "held" and o[2] == 503]
    slowest = max((o[3] for o in blocked_503), default=0.0)
    by_case = Counter(f"{name} ({phase}): {status}" for name, phase, status, *_ in outcomes)
    section.figure("cases (requests)", len(outcomes))
    section.figure("outcomes", dict(sorted(by_case.items())))
    section.figure("503s under a held lock", len(blocked_503))
    section.figure("slowest 503 (s)", round(slowest, 3))
    section.figure("db_pool_checked_out after", metrics["db_pool_checked_out"])
    section.figure("active or idle-in-transaction backends after", busy)
    failed = [
        section.check(
            "blocked writes: 503 problem+json with Retry-After; reads: 200; once released: 2xx",
            not wrong,
            wrong[:5] or "",
        ),
        section.check(f"every 503 within {LOCK_BOUND:g} s", slowest < LOCK_BOUND, slowest),
        section.check("db_pool_checked_out == 0", metrics["db_pool_checked_out"] == 0),
        section.check("no backend active or idle in transaction", busy == 0, busy),
        section.check("server log clean", not problems, problems or "clean"),
    ].count(False)
    section.headline = (
        f"{len(outcomes)} requests, {len(wrong)} not as expected; {len(blocked_503)} x 503 "
        f"under a held lock, slowest {slowest:.2f} s (bound {LOCK_BOUND:g}); {failed} checks "
        "failed"
    )
    section.assert_checks()


def _as_expected(blocked: bool, phase: str, status: int) -> bool:
    if phase == "released":
        return 200 <= status < 300
    return status == 503 if blocked else status == 200
