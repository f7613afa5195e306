"""Sources: CRUD, validation, and the many-to-many link with records."""

from __future__ import annotations

from quart.typing import TestClientProtocol as Client

from tests.conftest import AUTH
from tests.factories import create_record, create_source, walk


async def test_create_read_update_delete(client: Client) -> None:
    response = await client.post(
        "/sources",
        json={
            "title": " WHO update 12 ",
            "url": "https://www.who.int/csr/sars/archive/",
            "published_on": "2003-03-28",
        },
        headers=AUTH,
    )
    assert response.status_code == 201
    source = await response.get_json()
    assert response.headers["Location"] == f"/sources/{source['id']}"
    assert (source["title"], source["url"], source["published_on"]) == (
        "WHO update 12",
        "https://www.who.int/csr/sars/archive/",
        "2003-03-28",
    )
    assert await (await client.get(f"/sources/{source['id']}")).get_json() == source
    patched = await client.patch(
        f"/sources/{source['id']}", json={"url": None, "title": "Renamed"}, headers=AUTH
    )
    assert (await patched.get_json())["url"] is None
    assert (await patched.get_json())["title"] == "Renamed"
    assert (await client.delete(f"/sources/{source['id']}", headers=AUTH)).status_code == 204
    assert (await client.get(f"/sources/{source['id']}")).status_code == 404


async def test_validation(client: Client) -> None:
    for payload in (
        {},
        {"title": ""},
        {"title": "x" * 301},
        {"title": "A", "url": "ftp://x"},
        {"title": "A", "url": "not a url"},
        {"title": "A", "published_on": "2003"},
        {"title": "A", "url": "https://x/" + "a" * 2048},
    ):
        response = await client.post("/sources", json=payload, headers=AUTH)
        assert response.status_code == 422, payload
    source = await create_source(client)
    response = await client.patch(f"/sources/{source['id']}", json={"title": None}, headers=AUTH)
    assert response.status_code == 422


async def test_deleting_a_source_unlinks_its_records(client: Client) -> None:
    kept, gone = await create_source(client), await create_source(client)
    record = await create_record(client, source_ids=[kept["id"], gone["id"]])
    linked = await walk(client, f"/sources/{gone['id']}/records")
    assert [r["id"] for r in linked] == [record["id"]]
    assert (await client.delete(f"/sources/{gone['id']}", headers=AUTH)).status_code == 204
    after = await (await client.get(f"/records/{record['id']}")).get_json()
    assert after["source_ids"] == [kept["id"]]
    assert (await client.get(f"/sources/{gone['id']}/records")).status_code == 404


async def test_list_orders(client: Client) -> None:
    for title in ("b", "a", "c"):
        await create_source(client, title=title)
    titles = [s["title"] for s in await walk(client, "/sources?order=title&limit=1")]
    assert titles == ["a", "b", "c"]
    titles = [s["title"] for s in await walk(client, "/sources?order=-id")]
    assert titles == ["c", "a", "b"]
