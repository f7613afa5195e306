"""Cursors: whatever string a client sends as a cursor, the answer is a page or a 422.

The forged cursors are signed with the app's own secret, as anyone who knew it could: the
signature holds, so only the payload's validation stands between them and the database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import urllib.parse

import orjson
import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from tests.factories import create_country, create_record, create_source


def forge(secret: str, payload: bytes) -> str:
    """A cursor over ``payload`` with a valid signature for ``secret``."""
    digest = hmac.new(secret.encode(), payload, hashlib.sha256).digest()[:16]
    body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    return f"{body}.{base64.urlsafe_b64encode(digest).decode().rstrip('=')}"


def _secret(app: Quart) -> str:
    secret: str = app.config["SETTINGS"].CURSOR_SECRET
    return secret


WRONG_VALUES: list[object] = [
    None,
    True,
    1.5,
    -(2**31) - 1,
    2**31,
    2**63,
    2**64,
    "",
    "x" * 5000,
    "a\x00b",
    "2003-02-30",
    "\ud800",
    [],
    {},
    ["2003-01-01"],
]
# Payloads of the wrong shape, whatever the order.
WRONG_SHAPES = [
    b"",
    b"not json",
    b"\xff\xfe",
    b"null",
    b"{}",
    b'"date"',
    b"[]",
    b'["date"]',
    b'["date", "2003-01-01"]',
    b'["date", "2003-01-01", 1, 2]',
    b'[1, "2003-01-01", 1]',
    b"[null, null, null]",
    b'["' + b"d" * 100 + b'", 1, 1]',
    b'["date", "2003-01-01", "1"]',
    b'["date", "2003-01-01", 1e400]',
    b'["date", "2003-01-01", NaN]',
]
LISTS = [
    ("/records", ["id", "-id", "date", "-date", "cases", "-cases"]),
    ("/countries", ["name", "-name"]),
    ("/sources", ["title", "-title"]),
]


async def _assert_page_or_422(client: Client, path: str, order: str, cursor: str) -> int:
    query = urllib.parse.urlencode({"order": order, "limit": 2, "cursor": cursor})
    response = await client.get(f"{path}?{query}")
    assert response.status_code in (200, 422), (path, order, cursor, response.status_code)
    if response.status_code == 422:
        assert (await response.get_json())["errors"][0]["field"] == "cursor"
    return response.status_code


async def _seed(client: Client) -> None:
    country = await create_country(client)
    await create_record(client, country_id=country["id"], date="2003-03-01")
    await create_record(client, country_id=country["id"], date="2003-03-02")
    await create_source(client)


@pytest.mark.parametrize(("path", "orders"), LISTS)
async def test_signed_cursors_with_wrong_values_are_422(
    app: Quart, client: Client, path: str, orders: list[str]
) -> None:
    await _seed(client)
    for order in orders:
        for value in WRONG_VALUES:
            for row_id in (1, value):
                # json, not orjson: it writes integers beyond 64 bits and lone surrogates.
                payload = json.dumps([order, value, row_id]).encode()
                cursor = forge(_secret(app), payload)
                status = await _assert_page_or_422(client, path, order, cursor)
                out_of_range = isinstance(value, int) and not -(2**31) <= value < 2**31
                if out_of_range or value is None or not isinstance(value, str | int):
                    assert status == 422, (order, value)


@pytest.mark.parametrize(("path", "orders"), LISTS)
async def test_signed_cursors_of_the_wrong_shape_are_422(
    app: Quart, client: Client, path: str, orders: list[str]
) -> None:
    for order in orders:
        for payload in WRONG_SHAPES:
            cursor = forge(_secret(app), payload)
            assert await _assert_page_or_422(client, path, order, cursor) == 422, payload


async def test_altered_cursors_are_422(app: Quart, client: Client) -> None:
    good = forge(_secret(app), b'["date", "2003-03-01", 1]')
    body, _, signature = good.partition(".")
    for cursor in (
        f"{body}.{signature[:-1]}é",
        f"{body}.ñ{signature}",
        f"é{body}.{signature}",
        f"{body}.{signature}\u2028",
        f"{body}.",
        f".{signature}",
        ".",
        "é",
        forge("another-secret", b'["date", "2003-03-01", 1]'),
    ):
        assert await _assert_page_or_422(client, "/records", "date", cursor) == 422, cursor


async def test_a_signed_cursor_of_the_right_types_is_a_page(app: Quart, client: Client) -> None:
    await _seed(client)
    for order, value in (("date", "2003-03-01"), ("cases", 0), ("-id", 2**31 - 1)):
        cursor = forge(_secret(app), orjson.dumps([order, value, 2**31 - 1]))
        assert await _assert_page_or_422(client, "/records", order, cursor) == 200
    cursor = forge(_secret(app), orjson.dumps(["name", "Ünïcode ☃", 1]))
    assert await _assert_page_or_422(client, "/countries", "name", cursor) == 200


async def test_the_next_link_is_relative_whatever_the_host(client: Client) -> None:
    await _seed(client)
    response = await client.get(
        "/records?order=date&limit=1&tag=a%20b&tag=c",
        headers={"Host": "attacker.example:4444", "X-Forwarded-Host": "attacker.example"},
    )
    link = response.headers["Link"]
    assert link.startswith("</records?") and link.endswith('>; rel="next"'), link
    assert "attacker" not in link and "://" not in link
    assert "tag=a+b&tag=c" in link and "order=date" in link
    cursor = (await response.get_json())["next_cursor"]
    assert f"cursor={urllib.parse.quote(cursor, safe='')}" in link or f"cursor={cursor}" in link
