"""Concurrent clients against a real pool: no lost update, no duplicate, no skipped row."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest
from quart import Quart

from tests.conftest import AUTH
from tests.factories import create_record


async def test_same_if_match_from_8_clients_one_wins(real_app: Quart) -> None:
    client = real_app.test_client()
    record = await create_record(client, cases=0)
    url = f"/records/{record['id']}"

    async def bump(n: int) -> int:
        response = await client.patch(url, json={"cases": n}, headers={**AUTH, "If-Match": '"1"'})
        return response.status_code

    statuses = Counter(await asyncio.gather(*(bump(n) for n in range(1, 9))))
    assert statuses == {200: 1, 412: 7}
    final = await (await client.get(url)).get_json()
    assert final["version"] == 2


async def test_read_modify_write_loses_no_update(real_app: Quart) -> None:
    client = real_app.test_client()
    record = await create_record(client, cases=0)
    url = f"/records/{record['id']}"
    successes = 0

    async def increment_until_done() -> None:
        nonlocal successes
        while True:
            response = await client.get(url)
            current = await response.get_json()
            update = await client.patch(
                url,
                json={"cases": current["cases"] + 1},
                headers={**AUTH, "If-Match": response.headers["ETag"]},
            )
            if update.status_code == 200:
                successes += 1
                return
            assert update.status_code == 412

    await asyncio.gather(*(increment_until_done() for _ in range(10)))
    final = await (await client.get(url)).get_json()
    assert final["cases"] == successes == 10


async def test_20_simultaneous_creators_of_one_new_country(real_app: Quart) -> None:
    client = real_app.test_client()

    async def post(day: int) -> int:
        payload = {"country": "Brigadoon", "date": f"2003-04-{day:02d}", "cases": day}
        return (await client.post("/records", json=payload, headers=AUTH)).status_code

    statuses = Counter(await asyncio.gather(*(post(day) for day in range(1, 21))))
    assert statuses == {201: 20}
    countries = await (await client.get("/countries?q=Brigadoon")).get_json()
    assert len(countries["items"]) == 1
    records = await (await client.get("/records?country=Brigadoon&limit=100")).get_json()
    assert len(records["items"]) == 20


@pytest.mark.parametrize("order", ["id", "-id", "date", "-date", "cases", "-cases"])
async def test_cursor_walk_is_stable_under_inserts_and_deletes(
    real_app: Quart, order: str
) -> None:
    client = real_app.test_client()
    rng = random.Random(order)
    survivors = [
        await create_record(
            client, country=f"C{i % 4}", date=f"2003-04-{i // 4 + 1:02d}", cases=rng.randint(0, 5)
        )
        for i in range(40)
    ]
    doomed = {r["id"] for r in survivors[::5]}
    survivors = [r for r in survivors if r["id"] not in doomed]
    field = order.lstrip("-")
    expected = sorted(survivors, key=lambda r: (r[field], r["id"]), reverse=order.startswith("-"))

    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    for page in range(100):
        url = f"/records?order={order}&limit=3" + (f"&cursor={cursor}" if cursor else "")
        body = await (await client.get(url)).get_json()
        seen += body["items"]
        # Meanwhile other clients insert new rows and delete doomed ones.
        await create_record(
            client, country=f"New{page}", date="2003-04-05", cases=rng.randint(0, 5)
        )
        if doomed:
            await client.delete(f"/records/{doomed.pop()}", headers=AUTH)
        cursor = body["next_cursor"]
        if cursor is None:
            break
    seen_ids = [r["id"] for r in seen]
    assert len(seen_ids) == len(set(seen_ids))
    survivor_ids = {r["id"] for r in survivors}
    assert [i for i in seen_ids if i in survivor_ids] == [r["id"] for r in expected]


@pytest.mark.sqlite_only
async def test_sqlite_50_concurrent_writers_lose_nothing(real_app: Quart) -> None:
    client = real_app.test_client()

    async def post(n: int) -> int:
        payload = {"country": f"W{n % 5}", "date": f"2003-05-{n // 5 + 1:02d}", "cases": n}
        return (await client.post("/records", json=payload, headers=AUTH)).status_code

    assert Counter(await asyncio.gather(*(post(n) for n in range(50)))) == {201: 50}
    body = await (await client.get("/records?page=1&per_page=1")).get_json()
    assert body["total"] == 50
