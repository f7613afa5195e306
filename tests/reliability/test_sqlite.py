"""SQLite, the embedded default: concurrent writers and readers against a live Hypercorn never
see "database is locked", lose no write, and If-Match still lets exactly one writer win."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import AUTH
from tests.live import LOG_PROBLEMS
from tests.reliability import database
from tests.reliability.rawhttp import Client
from tests.reliability.report import Section
from tests.reliability.server import hypercorn

SECTION = (8, "SQLite")
WRITERS = 50
WRITES_PER_WRITER = 4
READERS = 10
RACERS = 8
RACE_ROUNDS = 5
LOCKED = "database is locked"


@pytest.mark.reliability
async def test_sqlite_concurrent_writers_and_readers(
    sqlite_url: str, server_log: Path, section: Section
) -> None:
    section.parameters.update(
        backend="SQLite file (WAL, BEGIN IMMEDIATE for writes, 30 s busy timeout)",
        writers=f"{WRITERS} concurrent clients x {WRITES_PER_WRITER} POST /records, distinct keys "
        "(half name a new country, half a stored country_id)",
        readers=f"{READERS} clients looping GET /records, /records/ID, /stats, /stats/daily "
        "meanwhile",
        race=f"{RACE_ROUNDS} rounds of {RACERS} PATCHes with the same If-Match",
    )
    await database.seed(sqlite_url, countries=10, days=30)
    with hypercorn(sqlite_url, server_log) as server:
        writing = True
        reads: Counter[int] = Counter()
        locked_bodies = 0

        async def write(writer: int) -> list[int]:
            nonlocal locked_bodies
            statuses = []
            async with Client.for_url(server.url, default_headers=AUTH) as client:
                for n in range(WRITES_PER_WRITER):
                    key = writer * WRITES_PER_WRITER + n
                    place = (
                        {"country": f"SQLite writer {key}"}
                        if key % 2
                        else {"country_id": 1 + key % 10}
                    )
                    payload = {
                        **place,
                        "date": f"2004-{1 + key // 28 % 12:02d}-{1 + key % 28:02d}",
                        "cases": 1_000_000 + key,
                    }
                    response = await client.request("POST", "/records", json=payload)
                    statuses.append(response.status)
                    locked_bodies += LOCKED in response.text()
            return statuses

        async def read(reader: int) -> None:
            nonlocal locked_bodies
            paths = [
                "/records?limit=50&order=-id",
                f"/records/{1 + reader}",
                "/stats",
                "/stats/daily",
            ]
            async with Client.for_url(server.url) as client:
                n = 0
                while writing:
                    response = await client.request("GET", paths[n % len(paths)])
                    reads[response.status] += 1
                    locked_bodies += LOCKED in response.text()
                    n += 1

        readers = [asyncio.create_task(read(r)) for r in range(READERS)]
        started = time.monotonic()
        written = await asyncio.gather(*(write(w) for w in range(WRITERS)))
        write_time = time.monotonic() - started
        writing = False
        await asyncio.gather(*readers)
        writes = Counter(status for statuses in written for status in statuses)

        race_outcomes = []
        async with Client.for_url(server.url, default_headers=AUTH) as client:
            for round_ in range(RACE_ROUNDS):
                created = await client.request(
                    "POST",
                    "/records",
                    json={"country": "Race", "date": f"2005-01-{round_ + 1:02d}", "cases": 0},
                )
                assert created.status == 201, created.text()
                url = f"/records/{created.json()['id']}"

                async def patch(n: int, url: str = url) -> int:
                    async with Client.for_url(server.url, default_headers=AUTH) as racer:
                        response = await racer.request(
                            "PATCH", url, json={"cases": n}, headers={"If-Match": '"1"'}
                        )
                        return response.status

                race_outcomes.append(
                    Counter(await asyncio.gather(*(patch(n) for n in range(1, RACERS + 1))))
                )
                final = (await client.request("GET", url)).json()
                assert final["version"] == 2
        problems = server.problems((*LOG_PROBLEMS, LOCKED, "OperationalError"))

    stored = database.sqlite_query(
        sqlite_url, "SELECT count(*) FROM records WHERE cases BETWEEN 1000000 AND 1000999"
    )[0][0]
    expected = WRITERS * WRITES_PER_WRITER
    section.figure("writes", expected)
    section.figure("write statuses", dict(writes))
    section.figure("writes stored", stored)
    section.figure("write phase (s)", round(write_time, 2))
    section.figure("reads meanwhile", sum(reads.values()))
    section.figure("read statuses", dict(reads))
    section.figure("'database is locked' in responses", locked_bodies)
    section.figure("If-Match race outcomes", "; ".join(str(dict(o)) for o in race_outcomes))
    section.headline = (
        f"{stored}/{expected} writes stored, {sum(reads.values())} reads, 0 locked: "
        f"{locked_bodies == 0 and LOCKED not in problems}; race: exactly one 200 in "
        f"{sum(o == {200: 1, 412: RACERS - 1} for o in race_outcomes)}/{RACE_ROUNDS} rounds"
    )
    checks = [
        section.check("every write 201", writes == {201: expected}, dict(writes)),
        section.check("every write stored", stored == expected, f"{stored}/{expected}"),
        section.check("every read 200", set(reads) == {200}, dict(reads)),
        section.check("no 'database is locked' in responses", locked_bodies == 0, locked_bodies),
        section.check(
            "server log clean (incl. 'database is locked')", not problems, problems or "clean"
        ),
        section.check(
            "If-Match race: exactly one 200, the rest 412, every round",
            all(o == {200: 1, 412: RACERS - 1} for o in race_outcomes),
        ),
    ]
    assert all(checks), section.checks
