"""Database outage: a throwaway cluster is stopped under steady traffic, then started again.

While it is down every request gets a quick 503 with Retry-After (never a hang, never a 500);
once it is back every endpoint answers again within seconds, without restarting the service;
and connections the server terminates while they idle in the pool cost no request.

Two ways back are driven: a plain ``pg_ctl start``, whose start-up window (the postmaster
answers "the database system is starting up", SQLSTATE 57P03) lasts a fraction of a second
and is hit or missed by chance; and a start that holds that state for seconds (a standby
without hot standby, then ``pg_ctl promote``), so that the window is always exercised.
A second test fills PostgreSQL's max_connections ("sorry, too many clients already").
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import AUTH
from tests.databases import migrate
from tests.live import LiveServer
from tests.pgcluster import Cluster, needs_postgres_binaries
from tests.reliability import database
from tests.reliability.contract import problem_issues
from tests.reliability.rawhttp import Client, IncompleteResponseError, Outcome, Response
from tests.reliability.report import Section
from tests.reliability.server import hypercorn

SECTIONS = {
    "test_database_outage_is_503_then_recovers_without_restart": (2, "Database outage"),
    "test_postgres_out_of_connection_slots_is_503": (
        "2b",
        "Database outage: PostgreSQL at max_connections",
    ),
}
POOL_TIMEOUT = 2.0
LATENCY_LIMIT = POOL_TIMEOUT + 1
RECOVERY_LIMIT = 5.0
CLIENTS = 20
PAUSE = 0.02  # between one client's requests: steady traffic, not a flood of fast 503s
HANG = 15.0  # a request still unanswered after this long is a hang
STEADY, DOWN, REFUSING, UP = 2.0, 3.0, 2.0, 1.5
SEED_COUNTRIES, SEED_DAYS = 5, 20
ENDPOINTS = (
    ("GET", "/records/1"),
    ("GET", "/records?limit=20"),
    ("GET", "/countries"),
    ("GET", "/countries/1/summary"),
    ("GET", "/sources"),
    ("GET", "/stats"),
    ("GET", "/stats/daily"),
    ("GET", "/ready"),
    ("POST", "/records"),
)


@dataclass
class Timeline:
    """Named moments of the run, to sort each request into the phase it ran in."""

    moments: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str) -> float:
        self.moments[name] = time.monotonic()
        return self.moments[name]

    def within(self, outcomes: list[Outcome], start: str, end: str | None) -> list[Outcome]:
        """Requests that started at or after ``start`` and ended before ``end``."""
        begin = self.moments[start]
        finish = self.moments[end] if end else float("inf")
        return [o for o in outcomes if o.started >= begin and o.ended <= finish]


class Traffic:
    """CLIENTS keep-alive clients, each alternating GET /records/ID and POST /records."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.outcomes: list[Outcome] = []
        self.running = True
        self.serial = itertools.count()
        self.rng = random.Random(2003)

    async def client(self) -> None:
        async with Client.for_url(self.server.url, default_headers=AUTH) as client:
            for n in itertools.count():
                if not self.running:
                    return
                self.outcomes.append(await self.one(client, "read" if n % 2 else "write"))
                await asyncio.sleep(PAUSE)

    async def one(self, client: Client, kind: str) -> Outcome:
        started = time.monotonic()
        try:
            if kind == "read":
                record_id = self.rng.randint(1, SEED_COUNTRIES * SEED_DAYS)
                response = await client.request("GET", f"/records/{record_id}", within=HANG)
            else:
                body = self.new_record()
                response = await client.request("POST", "/records", json=body, within=HANG)
        except (TimeoutError, OSError, IncompleteResponseError) as error:
            return Outcome(kind, started, time.monotonic(), None, type(error).__name__)
        return Outcome(kind, started, time.monotonic(), response)

    def new_record(self) -> dict[str, object]:
        return {"country": f"Outage {next(self.serial)}", "date": "2003-06-01", "cases": 1}


async def _every_endpoint(server: LiveServer, traffic: Traffic) -> dict[str, int | None]:
    statuses: dict[str, int | None] = {}
    async with Client.for_url(server.url, default_headers=AUTH) as client:
        for method, path in ENDPOINTS:
            body = traffic.new_record() if method == "POST" else None
            try:
                response = await client.request(method, path, json=body, within=HANG)
                statuses[f"{method} {path}"] = response.status
            except (TimeoutError, OSError, IncompleteResponseError):
                statuses[f"{method} {path}"] = None
    return statuses


async def _until_every_endpoint_answers(
    server: LiveServer, traffic: Traffic
) -> dict[str, int | None]:
    """Probe every endpoint every 50 ms until all answer 2xx (or 30 s pass)."""
    deadline = time.monotonic() + 30
    while True:
        statuses = await _every_endpoint(server, traffic)
        if all(_ok(status) for status in statuses.values()) or time.monotonic() > deadline:
            return statuses
        await asyncio.sleep(0.05)


def _ok(status: int | None) -> bool:
    return status is not None and 200 <= status < 300


@needs_postgres_binaries()
@pytest.mark.reliability
async def test_database_outage_is_503_then_recovers_without_restart(
    server_log: Path, section: Section
) -> None:
    section.parameters.update(
        database="throwaway cluster (initdb in a temporary directory, own free port)",
        settings=f"DB_POOL_TIMEOUT={POOL_TIMEOUT:g}, default pool (10 + 10), 1 Hypercorn worker",
        traffic=f"{CLIENTS} keep-alive clients alternating GET /records/ID and POST /records, "
        f"{PAUSE * 1000:.0f} ms pause",
        cycle_a=f"{STEADY:g} s steady, `pg_ctl stop -m fast`, {DOWN:g} s down, `pg_ctl start`, "
        f"probe until every endpoint is 2xx, {UP:g} s up",
        cycle_b=f"`pg_ctl stop -m fast`, start as a standby with hot_standby=off (every "
        f"connection refused with 57P03) for {REFUSING:g} s, `pg_ctl promote`, probe until "
        f"every endpoint is 2xx, {UP:g} s up",
        then="traffic stops; pg_terminate_backend on every idle pooled connection; "
        "200 requests from 20 clients",
        endpoints_probed=", ".join(f"{m} {p}" for m, p in ENDPOINTS),
    )
    cluster = Cluster()
    try:
        await asyncio.to_thread(cluster.init)
        await asyncio.to_thread(cluster.start)
        await asyncio.to_thread(migrate, cluster.url)
        await database.seed(cluster.url, countries=SEED_COUNTRIES, days=SEED_DAYS)
        with hypercorn(cluster.url, server_log, DB_POOL_TIMEOUT=str(POOL_TIMEOUT)) as server:
            await _outage(server, cluster, section)
            problems = server.problems()
    finally:
        await asyncio.to_thread(cluster.remove)
    section.check("server log clean", not problems, problems or "clean")
    section.assert_checks()


async def _outage(server: LiveServer, cluster: Cluster, section: Section) -> None:
    traffic = Traffic(server)
    at = Timeline()
    clients = [asyncio.create_task(traffic.client()) for _ in range(CLIENTS)]
    at.mark("begin")
    await asyncio.sleep(STEADY)

    # Cycle A: down, then a plain start.
    at.mark("stop A")
    await asyncio.to_thread(cluster.stop, "fast")
    at.mark("down A")
    await asyncio.sleep(DOWN / 2)
    async with Client.for_url(server.url) as probe:
        ready_down = await probe.request("GET", "/ready", within=HANG)
    await asyncio.sleep(DOWN / 2)
    at.mark("start A")
    await asyncio.to_thread(cluster.start)
    at.mark("started A")
    last_a = await _until_every_endpoint_answers(server, traffic)
    at.mark("recovered A")
    await asyncio.sleep(UP)

    # Cycle B: down, up but refusing connections (57P03) for seconds, then promoted.
    at.mark("stop B")
    await asyncio.to_thread(cluster.stop, "fast")
    at.mark("down B")
    await asyncio.to_thread(cluster.start_refusing_connections)
    at.mark("refusing")
    await asyncio.sleep(REFUSING / 2)
    async with Client.for_url(server.url) as probe:
        ready_refusing = await probe.request("GET", "/ready", within=HANG)
    await asyncio.sleep(REFUSING / 2)
    at.mark("promote")
    await asyncio.to_thread(cluster.promote)
    at.mark("promoted")
    last_b = await _until_every_endpoint_answers(server, traffic)
    at.mark("recovered B")
    await asyncio.sleep(UP)
    traffic.running = False
    await asyncio.gather(*clients)
    at.mark("end")

    outcomes = traffic.outcomes
    # Down: connections refused outright. (Cycle B is down only while its start-up runs, which
    # is the 57P03 window again, so its requests count with those of the refusing phase.)
    down = at.within(outcomes, "down A", "start A")
    refusing = at.within(outcomes, "down B", "promote")
    up = (
        at.within(outcomes, "begin", "stop A")
        + at.within(outcomes, "recovered A", "stop B")
        + at.within(outcomes, "recovered B", None)
    )
    refused = [o for o in outcomes if o.status == 503]
    no_answer = [o for o in outcomes if o.response is None]
    errors = [o for o in outcomes if o.status is not None and o.status >= 500 and o.status != 503]
    refused_max = max((o.latency for o in refused), default=0.0)
    bad_503 = [o for o in refused if o.response is not None and problem_issues(o.response)]
    recovery_a = at.moments["recovered A"] - at.moments["started A"]
    recovery_b = at.moments["recovered B"] - at.moments["promoted"]

    # Idle pool, then every pooled connection terminated by the server.
    await asyncio.sleep(0.5)
    terminated = await database.terminate_backends(cluster.url)
    await asyncio.sleep(0.3)  # the service's loop reads each connection's EOF
    after_terminate: Counter[int | None] = Counter()

    async def burst() -> None:
        async with Client.for_url(server.url, default_headers=AUTH) as client:
            for n in range(10):
                outcome = await traffic.one(client, "read" if n % 2 else "write")
                after_terminate[outcome.status] += 1

    await asyncio.gather(*(burst() for _ in range(CLIENTS)))
    failed_after_terminate = sum(n for status, n in after_terminate.items() if not _ok(status))

    def statuses(chosen: list[Outcome]) -> dict[int | None, int]:
        return dict(Counter(o.status for o in chosen))

    section.figure("requests during the run", len(outcomes))
    section.figure("statuses", statuses(outcomes))
    section.figure("requests while down (connection refused)", len(down))
    section.figure("  their statuses", statuses(down))
    section.figure("  their max latency (s)", round(max((o.latency for o in down), default=0), 3))
    section.figure("requests while the cluster refused with 57P03", len(refusing))
    section.figure("  their statuses", statuses(refusing))
    section.figure("503s", len(refused))
    section.figure("max latency of a 503 (s)", round(refused_max, 3))
    section.figure("500s (any 5xx but 503)", len(errors))
    section.figure("requests without a response (hang, reset)", len(no_answer))
    section.figure("GET /ready while down", f"{ready_down.status} in {ready_down.elapsed:.3f} s")
    section.figure(
        "GET /ready while refusing (57P03)",
        f"{ready_refusing.status} in {ready_refusing.elapsed:.3f} s",
    )
    section.figure(
        "A: pg_ctl start issued -> every endpoint 2xx (s)",
        round(at.moments["recovered A"] - at.moments["start A"], 3),
    )
    section.figure("A: cluster accepting -> every endpoint 2xx (s)", round(recovery_a, 3))
    section.figure("B: promoted -> every endpoint 2xx (s)", round(recovery_b, 3))
    section.figure("requests while up (before, between and after the outages)", len(up))
    section.figure("  their statuses", statuses(up))
    section.figure("idle pooled connections terminated", terminated)
    section.figure("requests after pg_terminate_backend", sum(after_terminate.values()))
    section.figure("  failed", failed_after_terminate)
    section.headline = (
        f"down: {len(down)} requests, {statuses(down)}; refusing (57P03): {len(refusing)} "
        f"requests, {statuses(refusing)}; max 503 latency {refused_max:.2f} s; 500s in all: "
        f"{len(errors)}; recovery {recovery_a:.2f} s (start) / {recovery_b:.2f} s (promote); "
        f"{failed_after_terminate} failed after terminating {terminated} idle connections"
    )
    section.check("requests were made while down", len(down) >= CLIENTS, len(down))
    section.check("every request while down: 503", set(statuses(down)) == {503}, statuses(down))
    section.check(
        "every request while the cluster refuses (57P03): 503",
        len(refusing) >= CLIENTS and set(statuses(refusing)) == {503},
        statuses(refusing),
    )
    section.check("every 503: Retry-After: 1, problem+json", not bad_503, len(bad_503))
    section.check(
        f"every 503 within {LATENCY_LIMIT:g} s",
        refused_max < LATENCY_LIMIT,
        f"{refused_max:.3f} s",
    )
    section.check("no 500 ever", not errors, statuses(errors))
    section.check(
        "no hang, no dropped connection", not no_answer, Counter(o.error for o in no_answer)
    )
    section.check("GET /ready 503 while down", ready_down.status == 503, ready_down.status)
    section.check(
        "GET /ready 503 while refusing", ready_refusing.status == 503, ready_refusing.status
    )
    section.check(
        f"A: every endpoint 2xx within {RECOVERY_LIMIT:g} s of the start",
        recovery_a < RECOVERY_LIMIT and all(_ok(s) for s in last_a.values()),
        f"{recovery_a:.3f} s {last_a}",
    )
    section.check(
        f"B: every endpoint 2xx within {RECOVERY_LIMIT:g} s of the promotion",
        recovery_b < RECOVERY_LIMIT and all(_ok(s) for s in last_b.values()),
        f"{recovery_b:.3f} s {last_b}",
    )
    section.check("every request while up: 2xx", all(_ok(o.status) for o in up), statuses(up))
    section.check("idle connections were terminated", terminated > 0, terminated)
    section.check(
        "no failed request after pg_terminate_backend",
        failed_after_terminate == 0,
        dict(after_terminate),
    )


MAX_CONNECTIONS = 4
CROWD = 30


@needs_postgres_binaries()
@pytest.mark.reliability
async def test_postgres_out_of_connection_slots_is_503(server_log: Path, section: Section) -> None:
    section.parameters.update(
        database=f"throwaway cluster with max_connections={MAX_CONNECTIONS}, "
        "superuser_reserved_connections=0",
        settings=f"DB_POOL_TIMEOUT={POOL_TIMEOUT:g}, default pool (10 + 10): more than the "
        "server allows, as when workers x pool size exceeds max_connections (README)",
        traffic=f"{CROWD} concurrent GET /stats/daily, then the same again once they finished",
    )
    cluster = Cluster()
    try:
        await asyncio.to_thread(cluster.init)
        settings = (f"max_connections={MAX_CONNECTIONS}", "superuser_reserved_connections=0")
        await asyncio.to_thread(cluster.start, *settings)
        await asyncio.to_thread(migrate, cluster.url)
        await database.seed(cluster.url, countries=SEED_COUNTRIES, days=SEED_DAYS)
        with hypercorn(cluster.url, server_log, DB_POOL_TIMEOUT=str(POOL_TIMEOUT)) as server:

            async def one() -> Response:
                async with Client.for_url(server.url) as client:
                    return await client.request("GET", "/stats/daily", within=HANG)

            crowd = await asyncio.gather(*(one() for _ in range(CROWD)))
            again = await asyncio.gather(*(one() for _ in range(CROWD)))
            problems = server.problems()
    finally:
        await asyncio.to_thread(cluster.remove)
    responses = crowd + again
    statuses = Counter(r.status for r in responses)
    refused = [r for r in responses if r.status == 503]
    slowest = max(r.elapsed for r in responses)
    section.figure("requests", len(responses))
    section.figure("statuses", dict(statuses))
    section.figure("slowest (s)", round(slowest, 3))
    section.headline = f"{CROWD * 2} requests: {dict(statuses)}"
    section.check("only 200 or 503", set(statuses) <= {200, 503}, dict(statuses))
    section.check(
        "every 503: Retry-After: 1, problem+json", not any(problem_issues(r) for r in refused)
    )
    section.check(f"every answer within {LATENCY_LIMIT:g} s", slowest < LATENCY_LIMIT, slowest)
    section.check("server log clean", not problems, problems or "clean")
    section.assert_checks()
