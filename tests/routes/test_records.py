"""Records: every route, filter, order, conditional request and error of the contract."""

from __future__ import annotations

from typing import Any

import pytest
from quart.typing import TestClientProtocol as Client

from tests.conftest import AUTH
from tests.factories import create_country, create_record, create_source, walk


async def test_create_by_name_creates_the_country(client: Client) -> None:
    response = await client.post(
        "/records",
        json={"country": "Narnia", "date": "2003-03-17", "cases": 8, "deaths": 2},
        headers=AUTH,
    )
    assert response.status_code == 201
    record = await response.get_json()
    assert response.headers["Location"] == f"/records/{record['id']}"
    assert response.headers["ETag"] == '"1"'
    assert record["country"] == "Narnia"
    assert (record["date"], record["cases"], record["deaths"], record["recoveries"]) == (
        "2003-03-17",
        8,
        2,
        0,
    )
    assert record["version"] == 1 and record["source_ids"] == []
    country = await client.get(f"/countries/{record['country_id']}")
    assert (await country.get_json())["name"] == "Narnia"


async def test_create_by_country_id_with_sources(client: Client) -> None:
    country = await create_country(client)
    first, second = await create_source(client), await create_source(client)
    record = await create_record(
        client, country_id=country["id"], source_ids=[second["id"], first["id"]]
    )
    assert record["country"] == country["name"]
    assert record["source_ids"] == sorted([first["id"], second["id"]])


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"date": "2003-04-01", "cases": 1}, "body"),
        ({"country": "A", "country_id": 1, "date": "2003-04-01", "cases": 1}, "body"),
        ({"country": "A", "date": "2003-13-01", "cases": 1}, "date"),
        ({"country": "A", "date": "04/01/2003", "cases": 1}, "date"),
        ({"country": "A", "date": 20030401, "cases": 1}, "date"),
        ({"country": "A", "date": "2003-04-01", "cases": -1}, "cases"),
        ({"country": "A", "date": "2003-04-01", "cases": 2147483648}, "cases"),
        ({"country": "A", "date": "2003-04-01", "cases": "5"}, "cases"),
        ({"country": "A", "date": "2003-04-01", "cases": 5.5}, "cases"),
        ({"country": "A", "date": "2003-04-01", "cases": True}, "cases"),
        ({"country": "A", "date": "2003-04-01", "cases": 1, "deaths": None}, "deaths"),
        ({"country": "A", "date": "2003-04-01", "cases": 1, "extra": 1}, "extra"),
        ({"country": "A", "date": "2003-04-01", "cases": 1, "source_ids": [0]}, "source_ids.0"),
        (
            {"country": "A", "date": "2003-04-01", "cases": 1, "source_ids": [999999]},
            "source_ids.0",
        ),
        ({"country_id": 999999, "date": "2003-04-01", "cases": 1}, "country_id"),
        ({"country": "x" * 101, "date": "2003-04-01", "cases": 1}, "country"),
    ],
)
async def test_invalid_records_are_422(
    client: Client, payload: dict[str, Any], field: str
) -> None:
    response = await client.post("/records", json=payload, headers=AUTH)
    assert response.status_code == 422
    assert response.headers["Content-Type"] == "application/problem+json"
    body = await response.get_json()
    assert field in [error["field"] for error in body["errors"]]
    assert (await (await client.get("/records")).get_json())["items"] == []


async def test_duplicate_country_and_date_is_409(client: Client) -> None:
    record = await create_record(client, country="Oz", date="2003-04-01")
    again = await client.post(
        "/records", json={"country": "Oz", "date": "2003-04-01", "cases": 3}, headers=AUTH
    )
    assert again.status_code == 409
    other = await create_record(client, country="Oz", date="2003-04-02")
    moved = await client.patch(
        f"/records/{other['id']}", json={"date": record["date"]}, headers=AUTH
    )
    assert moved.status_code == 409


async def test_conditional_get(client: Client) -> None:
    record = await create_record(client)
    url = f"/records/{record['id']}"
    fresh = await client.get(url, headers={"If-None-Match": '"1"'})
    assert fresh.status_code == 304 and fresh.headers["ETag"] == '"1"'
    for matching in ('W/"1"', '"7", "1"', "*"):
        again = await client.get(url, headers={"If-None-Match": matching})
        assert again.status_code == 304, matching
    stale = await client.get(url, headers={"If-None-Match": '"7"'})
    assert stale.status_code == 200 and stale.headers["ETag"] == '"1"'
    unconditional = await client.get(url)
    assert unconditional.status_code == 200 and (await unconditional.get_json()) == record


async def test_put_patch_delete_honour_if_match(client: Client) -> None:
    record = await create_record(client, country="Ruritania", cases=5)
    url = f"/records/{record['id']}"
    patched = await client.patch(url, json={"cases": 6}, headers={**AUTH, "If-Match": '"1"'})
    assert patched.status_code == 200
    body = await patched.get_json()
    assert (body["cases"], body["version"], patched.headers["ETag"]) == (6, 2, '"2"')
    assert body["updated_at"] >= record["updated_at"]

    stale = await client.patch(url, json={"cases": 7}, headers={**AUTH, "If-Match": '"1"'})
    assert stale.status_code == 412

    replaced = await client.put(
        url,
        json={"country": "Ruritania", "date": "2003-05-01", "cases": 9},
        headers={**AUTH, "If-Match": "*"},
    )
    body = await replaced.get_json()
    assert replaced.status_code == 200
    assert (body["date"], body["cases"], body["deaths"], body["version"]) == (
        "2003-05-01",
        9,
        0,
        3,
    )

    assert (await client.delete(url, headers={**AUTH, "If-Match": '"2"'})).status_code == 412
    assert (await client.get(url)).status_code == 200
    assert (await client.delete(url, headers={**AUTH, "If-Match": '"3"'})).status_code == 204
    assert (await client.get(url)).status_code == 404


@pytest.mark.parametrize(
    ("if_match", "status"),
    [
        ('"1"', 200),
        ('"7", "1"', 200),
        ("*", 200),
        ('W/"1"', 412),  # If-Match compares strongly (RFC 9110 13.1.1); If-None-Match weakly
        ('"7"', 412),
        ('"1,7"', 412),  # one tag with a comma in it, not two
    ],
)
async def test_if_match_is_parsed_as_if_none_match_is_and_compared_strongly(
    client: Client, if_match: str, status: int
) -> None:
    record = await create_record(client)
    url = f"/records/{record['id']}"
    response = await client.patch(url, json={"cases": 6}, headers={**AUTH, "If-Match": if_match})
    assert response.status_code == status


async def test_patch_moves_a_record_to_another_country_and_sources(client: Client) -> None:
    source = await create_source(client)
    record = await create_record(client, country="Florin")
    response = await client.patch(
        f"/records/{record['id']}",
        json={"country": "Guilder", "source_ids": [source["id"]]},
        headers=AUTH,
    )
    body = await response.get_json()
    assert (body["country"], body["source_ids"]) == ("Guilder", [source["id"]])
    null = await client.patch(f"/records/{record['id']}", json={"cases": None}, headers=AUTH)
    assert null.status_code == 422


async def _seed(client: Client) -> list[dict[str, Any]]:
    rows = [
        ("Alpha", "2003-03-17", 5),
        ("Alpha", "2003-03-18", 5),
        ("Beta", "2003-03-17", 1),
        ("Beta", "2003-03-19", 30),
        ("Gamma", "2003-03-18", 5),
    ]
    return [await create_record(client, country=c, date=d, cases=n) for c, d, n in rows]


async def test_filters(client: Client) -> None:
    seeded = await _seed(client)
    ids = [r["id"] for r in seeded]

    async def listed(query: str) -> list[int]:
        response = await client.get(f"/records?{query}")
        assert response.status_code == 200, await response.get_data()
        return [r["id"] for r in (await response.get_json())["items"]]

    assert await listed("country=Beta") == ids[2:4]
    assert await listed("country=beta") == []
    assert await listed(f"country_id={seeded[0]['country_id']}") == ids[:2]
    assert await listed("date_from=2003-03-18") == [ids[1], ids[3], ids[4]]
    assert await listed("date_to=2003-03-17") == [ids[0], ids[2]]
    assert await listed("date_from=2003-03-18&date_to=2003-03-18") == [ids[1], ids[4]]
    assert await listed("min_cases=5") == [ids[0], ids[1], ids[3], ids[4]]
    country_id = seeded[2]["country_id"]
    nested = await client.get(f"/countries/{country_id}/records")
    assert [r["id"] for r in (await nested.get_json())["items"]] == ids[2:4]
    assert (await client.get("/countries/999999/records")).status_code == 404
    for bad in (
        "date_from=2003-03-19&date_to=2003-03-18",
        "min_cases=-1",
        "country_id=0",
        "date_from=yesterday",
        "country_id=99999999999",
    ):
        response = await client.get(f"/records?{bad}")
        assert response.status_code == 422, bad


@pytest.mark.parametrize("order", ["id", "-id", "date", "-date", "cases", "-cases"])
async def test_every_order_walks_each_row_once(client: Client, order: str) -> None:
    seeded = await _seed(client)
    field = order.lstrip("-")
    expected = sorted(seeded, key=lambda r: (r[field], r["id"]), reverse=order.startswith("-"))
    for limit in (1, 2, 500):
        walked = await walk(client, f"/records?order={order}&limit={limit}")
        assert [r["id"] for r in walked] == [r["id"] for r in expected]


async def test_link_header_and_cursor_tampering(client: Client) -> None:
    await _seed(client)
    response = await client.get("/records?order=date&limit=2&country=Alpha&date_from=2003-01-01")
    body = await response.get_json()
    assert body["next_cursor"] is None
    response = await client.get("/records?order=date&limit=2")
    body = await response.get_json()
    cursor = body["next_cursor"]
    assert cursor and f"cursor={cursor}" in response.headers["Link"]
    assert 'rel="next"' in response.headers["Link"] and "order=date" in response.headers["Link"]
    tampered = cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB")
    for bad in (tampered, "garbage", "x.y", cursor + "x"):
        response = await client.get(f"/records?order=date&limit=2&cursor={bad}")
        assert response.status_code == 422, bad
        assert (await response.get_json())["errors"][0]["field"] == "cursor"
    other_order = await client.get(f"/records?order=-date&limit=2&cursor={cursor}")
    assert other_order.status_code == 422


async def test_numbered_pages(client: Client) -> None:
    seeded = await _seed(client)
    response = await client.get("/records?page=2&per_page=2&order=-id")
    body = await response.get_json()
    assert (body["page"], body["per_page"], body["total"], body["pages"]) == (2, 2, 5, 3)
    assert [r["id"] for r in body["items"]] == [seeded[2]["id"], seeded[1]["id"]]
    beyond = await (await client.get("/records?page=9&per_page=2")).get_json()
    assert beyond["items"] == [] and beyond["total"] == 5
    for bad in (
        "page=0",
        "per_page=0",
        "per_page=501",
        "limit=0",
        "limit=501",
        "page=x",
        "page=1&cursor=abc",
    ):
        assert (await client.get(f"/records?{bad}")).status_code == 422, bad


async def test_bulk_error_mode_refuses_conflicts(client: Client) -> None:
    await create_record(client, country="Elbonia", date="2003-04-01")
    items = [
        {"country": "Elbonia", "date": "2003-04-01", "cases": 1},
        {"country": "Elbonia", "date": "2003-04-02", "cases": 2},
        {"country": "Freedonia", "date": "2003-04-02", "cases": 3},
        {"country": "Freedonia", "date": "2003-04-02", "cases": 4},
    ]
    response = await client.post("/records/bulk", json={"records": items}, headers=AUTH)
    assert response.status_code == 409
    body = await response.get_json()
    assert [e["field"] for e in body["errors"]] == ["records.0", "records.2", "records.3"]
    assert len(await walk(client, "/records")) == 1


async def test_bulk_skip_and_update(client: Client) -> None:
    stored = await create_record(client, country="Sylvania", date="2003-04-01", cases=1)
    source = await create_source(client)
    items = [
        {"country": "Sylvania", "date": "2003-04-01", "cases": 100},
        {"country": "Sylvania", "date": "2003-04-02", "cases": 2, "source_ids": [source["id"]]},
        {"country": "Sylvania", "date": "2003-04-02", "cases": 3},
    ]
    skip = await client.post(
        "/records/bulk", json={"records": items, "on_conflict": "skip"}, headers=AUTH
    )
    assert await skip.get_json() == {"created": 1, "updated": 0, "skipped": 2}
    by_date = {r["date"]: r for r in await walk(client, "/records")}
    assert by_date["2003-04-01"]["cases"] == 1
    assert (by_date["2003-04-02"]["cases"], by_date["2003-04-02"]["source_ids"]) == (
        2,
        [source["id"]],
    )
    again = await client.post(
        "/records/bulk", json={"records": items, "on_conflict": "skip"}, headers=AUTH
    )
    assert await again.get_json() == {"created": 0, "updated": 0, "skipped": 3}

    update = await client.post(
        "/records/bulk", json={"records": items, "on_conflict": "update"}, headers=AUTH
    )
    assert await update.get_json() == {"created": 0, "updated": 2, "skipped": 1}
    by_date = {r["date"]: r for r in await walk(client, "/records")}
    assert (by_date["2003-04-01"]["cases"], by_date["2003-04-01"]["version"]) == (100, 2)
    assert (by_date["2003-04-02"]["cases"], by_date["2003-04-02"]["source_ids"]) == (3, [])
    assert by_date["2003-04-01"]["id"] == stored["id"]


async def test_bulk_invalid_item_names_its_index(client: Client) -> None:
    items = [{"country": "Ok", "date": "2003-04-01", "cases": 1}] * 3
    items = [*items[:3], {"country": "Bad", "date": "2003-04-01", "cases": -5}]
    response = await client.post("/records/bulk", json={"records": items}, headers=AUTH)
    assert response.status_code == 422
    assert (await response.get_json())["errors"][0]["field"] == "records.3.cases"
    unknown = [{"country_id": 999999, "date": "2003-04-01", "cases": 1}]
    response = await client.post("/records/bulk", json={"records": unknown}, headers=AUTH)
    assert (await response.get_json())["errors"][0]["field"] == "records.0.country_id"
    too_many = {"records": [{"country": "X", "date": "2003-04-01", "cases": 1}] * 10_001}
    assert (await client.post("/records/bulk", json=too_many, headers=AUTH)).status_code == 422
    mode = {"records": items[:1], "on_conflict": "merge"}
    assert (await client.post("/records/bulk", json=mode, headers=AUTH)).status_code == 422
    assert await walk(client, "/records") == []
