"""Small factories that create data through the API, as a client would."""

from __future__ import annotations

import itertools
from typing import Any

from quart.typing import TestClientProtocol as Client

from tests.conftest import AUTH

_serial = itertools.count(1)


def unique_name(prefix: str = "Country") -> str:
    return f"{prefix} {next(_serial)}"


async def create_country(client: Client, name: str | None = None) -> dict[str, Any]:
    response = await client.post("/countries", json={"name": name or unique_name()}, headers=AUTH)
    assert response.status_code == 201, await response.get_data()
    body: dict[str, Any] = await response.get_json()
    return body


async def create_record(client: Client, **fields: Any) -> dict[str, Any]:
    payload = {"date": "2003-04-01", "cases": 10, **fields}
    if "country" not in payload and "country_id" not in payload:
        payload["country"] = unique_name()
    response = await client.post("/records", json=payload, headers=AUTH)
    assert response.status_code == 201, await response.get_data()
    body: dict[str, Any] = await response.get_json()
    return body


async def create_source(client: Client, **fields: Any) -> dict[str, Any]:
    payload = {"title": unique_name("Source"), **fields}
    response = await client.post("/sources", json=payload, headers=AUTH)
    assert response.status_code == 201, await response.get_data()
    body: dict[str, Any] = await response.get_json()
    return body


async def walk(client: Client, url: str) -> list[dict[str, Any]]:
    """Every item of a cursor-paginated list, following next_cursor to the end."""
    items: list[dict[str, Any]] = []
    separator = "&" if "?" in url else "?"
    next_url: str | None = url
    while next_url:
        response = await client.get(next_url)
        assert response.status_code == 200, await response.get_data()
        body = await response.get_json()
        items += body["items"]
        cursor = body["next_cursor"]
        next_url = f"{url}{separator}cursor={cursor}" if cursor else None
    return items
