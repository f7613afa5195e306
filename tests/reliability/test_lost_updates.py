"""Lost updates: read-modify-write clients racing on one record, and racing creators of one
country, against a real Hypercorn process and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import AUTH
from tests.reliability import database
from tests.reliability.rawhttp import Client
from tests.reliability.report import Section
from tests.reliability.server import hypercorn

SECTION = (4, "Lost updates")
INCREMENTERS = 50
CREATORS = 20


@pytest.mark.reliability
async def test_no_update_is_lost_and_one_country_is_created_once(
    pg_url: str, server_log: Path, section: Section
) -> None:
    section.parameters.update(
        backend="PostgreSQL",
        server="Hypercorn, 1 worker, default pool (10 + 10)",
        incrementers="50 clients: GET, then PATCH cases+1 with If-Match, retry on 412",
        creators="20 clients: POST /records naming one new country, distinct dates",
    )
    with hypercorn(pg_url, server_log) as server:
        async with Client.for_url(server.url, default_headers=AUTH) as setup:
            created = await setup.request(
                "POST",
                "/records",
                json={"country": "Lost updates", "date": "2003-04-01", "cases": 0},
            )
            assert created.status == 201, created.text()
        url = f"/records/{created.json()['id']}"
        statuses: Counter[int] = Counter()

        async def increment() -> None:
            async with Client.for_url(server.url, default_headers=AUTH) as client:
                while True:
                    current = await client.request("GET", url)
                    assert current.status == 200, current.text()
                    etag = current.header("etag")
                    assert etag is not None
                    update = await client.request(
                        "PATCH",
                        url,
                        json={"cases": current.json()["cases"] + 1},
                        headers={"If-Match": etag},
                    )
                    statuses[update.status] += 1
                    if update.status != 412:
                        return

        await asyncio.gather(*(increment() for _ in range(INCREMENTERS)))
        async with Client.for_url(server.url) as reader:
            final = (await reader.request("GET", url)).json()

        name = f"Brigadoon {uuid.uuid4().hex[:8]}"

        async def create(day: int) -> int:
            async with Client.for_url(server.url, default_headers=AUTH) as client:
                payload = {"country": name, "date": f"2003-05-{day:02d}", "cases": day}
                return (await client.request("POST", "/records", json=payload)).status

        creations = Counter(await asyncio.gather(*(create(d) for d in range(1, CREATORS + 1))))
        problems = server.problems()

    countries = await database.fetchval(
        pg_url, "SELECT count(*) FROM countries WHERE name = $1", name
    )
    records = await database.fetchval(
        pg_url,
        "SELECT count(*) FROM records r JOIN countries c ON c.id = r.country_id WHERE c.name = $1",
        name,
    )
    section.figure("PATCH 200", statuses[200])
    section.figure("PATCH 412 (retried)", statuses[412])
    section.figure(
        "PATCH other statuses", sum(n for s, n in statuses.items() if s not in (200, 412))
    )
    section.figure("final cases", final["cases"])
    section.figure("final version", final["version"])
    section.figure("creators' statuses", dict(creations))
    section.figure("countries with that name", countries)
    section.figure("records of that country", records)
    section.headline = (
        f"{statuses[200]} updates, {statuses[412]} retried 412s, final cases {final['cases']}; "
        f"{creations[201]}/20 creators 201, {countries} country"
    )
    checks = [
        section.check(
            "final cases == 200s == 50",
            final["cases"] == statuses[200] == INCREMENTERS,
            f"{final['cases']} / {statuses[200]}",
        ),
        section.check("version == 51", final["version"] == INCREMENTERS + 1, final["version"]),
        section.check("only 200 and 412", set(statuses) <= {200, 412}, dict(statuses)),
        section.check("20 creators all 201", creations == {201: CREATORS}, dict(creations)),
        section.check("exactly one country", countries == 1, countries),
        section.check("20 records", records == CREATORS, records),
        section.check("server log clean", not problems, problems or "clean"),
    ]
    assert all(checks), section.checks
