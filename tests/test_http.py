"""Conventions every route shares: errors, content types, limits, auth, ids, slashes."""

from __future__ import annotations

import pytest
from quart import Quart, Response
from quart.typing import TestClientProtocol as Client

from service.app import create_app
from tests.conftest import AUTH, TOKEN, settings_for
from tests.databases import Databases

RECORD = {"country": "Laputa", "date": "2003-04-01", "cases": 1}


async def _problem(response: Response, status: int) -> dict[str, object]:
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/problem+json"
    body: dict[str, object] = await response.get_json()
    assert body["status"] == status and body["type"] == "about:blank" and body["title"]
    return body


async def test_malformed_json_is_400(client: Client) -> None:
    for raw in (b"{", b"", b"{'a': 1}", b"NaN", b"[1, 2", b'{"cases": NaN}', b"\xff\xfe"):
        response = await client.post(
            "/records", data=raw, headers={**AUTH, "Content-Type": "application/json"}
        )
        await _problem(response, 400)


async def test_body_that_is_not_an_object_is_400(client: Client) -> None:
    for body in ([1, 2], "text", 5, None):
        response = await client.post("/records", json=body, headers=AUTH)
        await _problem(response, 400)


async def test_wrong_content_type_is_415(client: Client) -> None:
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/xml"):
        response = await client.post(
            "/records", data=b'{"a": 1}', headers={**AUTH, "Content-Type": content_type}
        )
        await _problem(response, 415)
    response = await client.post(
        "/records", json=RECORD, headers={**AUTH, "Content-Type": "application/merge-patch+json"}
    )
    assert response.status_code == 201


async def test_oversized_bodies_are_413(databases: Databases) -> None:
    app = create_app(
        settings_for(databases.shared_url, MAX_BODY_BYTES=200, BULK_MAX_BODY_BYTES=400)
    )
    async with app.test_app():
        client = app.test_client()
        padded = {**RECORD, "country": "x" * 90, "pad": "y" * 200}
        await _problem(await client.post("/records", json=padded, headers=AUTH), 413)
        medium = {"records": [RECORD], "pad": "y" * 250}
        response = await client.post("/records/bulk", json=medium, headers=AUTH)
        assert response.status_code == 422  # within the bulk limit: validated, not refused
        big = {"records": [RECORD], "pad": "y" * 500}
        await _problem(await client.post("/records/bulk", json=big, headers=AUTH), 413)


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer wrong",
        f"Bearer {TOKEN[:-1]}x",
        f"Basic {TOKEN}",
        f"Token {TOKEN}",
        TOKEN,
        f"Bearer {TOKEN}x",
    ],
)
async def test_writes_need_a_valid_token(client: Client, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, path in (
        ("POST", "/records"),
        ("POST", "/countries"),
        ("PUT", "/records/1"),
        ("PATCH", "/records/1"),
        ("DELETE", "/records/1"),
        ("POST", "/records/bulk"),
        ("POST", "/sources"),
        ("DELETE", "/countries/1"),
        ("PATCH", "/sources/1"),
    ):
        response = await client.open(path, method=method, json=RECORD, headers=headers)
        await _problem(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await (await client.get("/records")).get_json())["items"] == []
    assert (await (await client.get("/countries")).get_json())["items"] == []


async def test_no_tokens_configured_refuses_every_write(databases: Databases) -> None:
    app = create_app(settings_for(databases.shared_url, API_TOKENS=""))
    async with app.test_app():
        response = await app.test_client().post("/countries", json={"name": "A"}, headers=AUTH)
        await _problem(response, 401)


async def test_lowercase_bearer_scheme_is_accepted(client: Client) -> None:
    response = await client.post(
        "/countries", json={"name": "Lower"}, headers={"Authorization": f"bearer {TOKEN}"}
    )
    assert response.status_code == 201


async def test_unknown_routes_and_methods(client: Client) -> None:
    await _problem(await client.get("/nowhere"), 404)
    await _problem(await client.post("/nowhere", json={}, headers=AUTH), 404)
    await _problem(await client.post("/nowhere", json={}), 404)
    response = await client.put("/records", json={}, headers=AUTH)
    await _problem(response, 405)
    assert "GET" in response.headers["Allow"]


async def test_repeated_slashes_are_the_same_resource_with_no_redirect(client: Client) -> None:
    created = await client.post("/countries", json={"name": "Doubled"}, headers=AUTH)
    country_id = (await created.get_json())["id"]
    plain = await client.get(f"/countries/{country_id}")
    for path in (
        f"/countries//{country_id}",
        f"//countries/{country_id}//",
        f"/countries///{country_id}",
    ):
        response = await client.get(path, headers={"Host": "attacker.example"})
        assert response.status_code == 200, path
        assert "Location" not in response.headers
        assert await response.get_json() == await plain.get_json()
    listed = await client.get(f"/countries//{country_id}//records")
    assert listed.status_code == 200 and "Location" not in listed.headers


async def test_trailing_slash_is_the_same_resource(client: Client) -> None:
    await client.post("/countries/", json={"name": "Slashed"}, headers=AUTH)
    plain = await client.get("/countries")
    slashed = await client.get("/countries/")
    assert slashed.status_code == 200
    assert await plain.get_json() == await slashed.get_json()
    assert len((await plain.get_json())["items"]) == 1


async def test_request_ids(client: Client) -> None:
    echoed = await client.get("/health", headers={"X-Request-ID": "abc.DEF-123_x"})
    assert echoed.headers["X-Request-ID"] == "abc.DEF-123_x"
    for bad in ("", "has space", "x" * 129, "semi;colon"):
        response = await client.get("/nowhere", headers={"X-Request-ID": bad})
        assert response.headers["X-Request-ID"] not in {bad, ""}
    first = (await client.get("/health")).headers["X-Request-ID"]
    second = (await client.get("/health")).headers["X-Request-ID"]
    assert first != second


async def test_handler_bug_is_a_problem_500(app: Quart) -> None:
    @app.get("/bug")
    async def bug() -> str:
        raise RuntimeError("oops")

    body = await _problem(await app.test_client().get("/bug"), 500)
    assert "oops" not in str(body)
