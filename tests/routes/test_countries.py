"""Countries: every route, filter, order and error of the contract."""

from __future__ import annotations

from quart.typing import TestClientProtocol as Client

from tests.conftest import AUTH
from tests.factories import create_country, create_record, walk


async def test_create_read_rename_delete(client: Client) -> None:
    response = await client.post("/countries", json={"name": "  Atlantis "}, headers=AUTH)
    assert response.status_code == 201
    created = await response.get_json()
    assert created["name"] == "Atlantis"
    assert response.headers["Location"] == f"/countries/{created['id']}"
    assert created["created_at"].endswith("Z")

    read = await client.get(f"/countries/{created['id']}")
    assert (await read.get_json()) == created

    renamed = await client.patch(
        f"/countries/{created['id']}", json={"name": "Lemuria"}, headers=AUTH
    )
    assert renamed.status_code == 200
    assert (await renamed.get_json())["name"] == "Lemuria"

    deleted = await client.delete(f"/countries/{created['id']}", headers=AUTH)
    assert deleted.status_code == 204
    assert (await client.get(f"/countries/{created['id']}")).status_code == 404


async def test_duplicate_names_conflict(client: Client) -> None:
    first = await create_country(client, "Utopia")
    other = await create_country(client, "Erewhon")
    duplicate = await client.post("/countries", json={"name": "Utopia"}, headers=AUTH)
    assert duplicate.status_code == 409
    assert duplicate.headers["Content-Type"] == "application/problem+json"
    assert (await duplicate.get_json())["status"] == 409
    rename = await client.patch(f"/countries/{other['id']}", json={"name": "Utopia"}, headers=AUTH)
    assert rename.status_code == 409
    same = await client.patch(f"/countries/{first['id']}", json={"name": "Utopia"}, headers=AUTH)
    assert same.status_code == 200


async def test_delete_with_records_needs_cascade(client: Client) -> None:
    record = await create_record(client, country="Oceania")
    country_id = record["country_id"]
    refused = await client.delete(f"/countries/{country_id}", headers=AUTH)
    assert refused.status_code == 409
    assert (await client.get(f"/records/{record['id']}")).status_code == 200
    cascaded = await client.delete(f"/countries/{country_id}?cascade=true", headers=AUTH)
    assert cascaded.status_code == 204
    assert (await client.get(f"/records/{record['id']}")).status_code == 404


async def test_name_validation(client: Client) -> None:
    for payload in (
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 101},
        {},
        {"name": 5},
        {"name": "nul\u0000byte"},
        {"name": "tab\tinside"},
    ):
        response = await client.post("/countries", json=payload, headers=AUTH)
        assert response.status_code == 422, payload
        body = await response.get_json()
        assert body["errors"][0]["field"] in {"name", "body"}
    assert (
        await client.post("/countries", json={"name": "x" * 100}, headers=AUTH)
    ).status_code == 201


async def test_filter_and_orders(client: Client) -> None:
    for name in ("Gondor", "Rohan", "Mordor", "gondolin"):
        await create_country(client, name)
    response = await client.get("/countries?q=GOND&order=name")
    names = [c["name"] for c in (await response.get_json())["items"]]
    assert names == ["Gondor", "gondolin"]
    for order, expected in (
        ("name", ["Gondor", "Mordor", "Rohan", "gondolin"]),
        ("-name", ["gondolin", "Rohan", "Mordor", "Gondor"]),
        ("id", ["Gondor", "Rohan", "Mordor", "gondolin"]),
        ("-id", ["gondolin", "Mordor", "Rohan", "Gondor"]),
    ):
        items = await walk(client, f"/countries?order={order}&limit=1")
        assert [c["name"] for c in items] == expected, order
    assert (await client.get("/countries?order=size")).status_code == 422


async def test_like_wildcards_are_literal(client: Client) -> None:
    await create_country(client, "100% Country")
    await create_country(client, "Plain")
    response = await client.get("/countries?q=%25")
    assert [c["name"] for c in (await response.get_json())["items"]] == ["100% Country"]


async def test_unknown_and_malformed_ids_are_404(client: Client) -> None:
    for path in (
        "/countries/999999",
        "/countries/abc",
        "/countries/0",
        "/countries/-1",
        "/countries/99999999999",
        "/countries/2147483648",
    ):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.headers["Content-Type"] == "application/problem+json"


async def test_control_characters_in_query_text_are_422(client: Client) -> None:
    for path in ("/countries?q=%00", "/records?country=a%00b", "/countries?q=%1f"):
        response = await client.get(path)
        assert response.status_code == 422, path


async def test_q_ignores_the_case_of_letters_beyond_ascii(client: Client) -> None:
    await create_country(client, "Écosse")
    await create_country(client, "ÅLAND")
    await create_country(client, "Ελλάδα")
    for q, expected in (("écosse", "Écosse"), ("åland", "ÅLAND"), ("ΕΛΛΆΔΑ", "Ελλάδα")):
        response = await client.get("/countries", query_string={"q": q})
        assert [c["name"] for c in (await response.get_json())["items"]] == [expected], q
