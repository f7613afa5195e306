"""Auth: every write route refuses every credential but the right bearer token, and writes
nothing when it does."""

from __future__ import annotations

import base64
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AUTH, TOKEN
from tests.reliability import database
from tests.reliability.contract import problem_issues
from tests.reliability.rawhttp import Client
from tests.reliability.report import Section
from tests.reliability.server import hypercorn

SECTION = (6, "Auth")
WRITE_METHODS = ("post", "put", "patch", "delete")


def _flip(token: str, index: int) -> str:
    """``token`` with one character changed."""
    changed = "x" if token[index] != "x" else "y"
    return token[:index] + changed + token[index + 1 :]


# (name, headers, query string): every way a write may try to authenticate and must fail.
VARIANTS: list[tuple[str, dict[str, str], str]] = [
    ("no Authorization", {}, ""),
    ("wrong token", {"Authorization": "Bearer not-the-token"}, ""),
    ("last character changed", {"Authorization": f"Bearer {_flip(TOKEN, -1)}"}, ""),
    ("first character changed", {"Authorization": f"Bearer {_flip(TOKEN, 0)}"}, ""),
    ("middle character changed", {"Authorization": f"Bearer {_flip(TOKEN, len(TOKEN) // 2)}"}, ""),
    ("one character more", {"Authorization": f"Bearer {TOKEN}x"}, ""),
    ("one character less", {"Authorization": f"Bearer {TOKEN[:-1]}"}, ""),
    ("token in upper case", {"Authorization": f"Bearer {TOKEN.upper()}"}, ""),
    (
        "Basic user:token",
        {"Authorization": "Basic " + base64.b64encode(f"user:{TOKEN}".encode()).decode()},
        "",
    ),
    ("Basic token", {"Authorization": f"Basic {TOKEN}"}, ""),
    ("Token scheme", {"Authorization": f"Token {TOKEN}"}, ""),
    ("no scheme", {"Authorization": TOKEN}, ""),
    ("lowercase bearer, wrong token", {"Authorization": "bearer not-the-token"}, ""),
    ("uppercase BEARER, wrong token", {"Authorization": "BEARER not-the-token"}, ""),
    ("empty bearer", {"Authorization": "Bearer "}, ""),
    ("bare Bearer", {"Authorization": "Bearer"}, ""),
    ("empty Authorization", {"Authorization": ""}, ""),
    ("token in X-API-Token", {"X-API-Token": TOKEN}, ""),
    ("token in ?access_token=", {}, f"access_token={TOKEN}"),
    ("token in ?token=", {}, f"token={TOKEN}"),
    ("wrong bearer + ?access_token=", {"Authorization": "Bearer nope"}, f"access_token={TOKEN}"),
]


async def _fixtures(client: Client) -> dict[str, int]:
    """A country with a record and a source, created with the right token."""
    country = await client.request("POST", "/countries", json={"name": "Auth land"})
    source = await client.request("POST", "/sources", json={"title": "Auth source"})
    record = await client.request(
        "POST", "/records", json={"country": "Auth land", "date": "2003-04-01", "cases": 1}
    )
    assert (country.status, source.status, record.status) == (201, 201, 201)
    return {
        "country_id": country.json()["id"],
        "source_id": source.json()["id"],
        "record_id": record.json()["id"],
    }


def _body(method: str, path: str) -> Any:
    """A body the route would accept with the right token (so only auth can refuse it)."""
    if method == "delete":
        return None
    if path.startswith("/countries"):
        return {"name": "Renamed" if method == "patch" else "New country"}
    if path.startswith("/sources"):
        return {"title": "Changed source"}
    if path == "/records/bulk":
        return {"records": [{"country": "Bulk land", "date": "2003-04-02", "cases": 2}]}
    if method == "patch":
        return {"cases": 99}
    day = 3 if method == "post" else 4
    return {"country": "Auth land", "date": f"2003-04-0{day}", "cases": day}


@pytest.mark.reliability
async def test_every_write_route_refuses_every_wrong_credential(
    pg_url: str, server_log: Path, section: Section
) -> None:
    with hypercorn(pg_url, server_log) as server:
        async with Client.for_url(server.url) as client:
            async with Client.for_url(server.url, default_headers=AUTH) as creator:
                ids = await _fixtures(creator)
            document = (await client.request("GET", "/openapi.json")).json()
            routes = [
                (method, path)
                for path, operations in document["paths"].items()
                for method in operations
                if method in WRITE_METHODS
            ]
            before = await database.checksums(pg_url)
            statuses: Counter[int] = Counter()
            failures: list[str] = []
            for method, template in routes:
                path = template.format(**ids)
                body = _body(method, template)
                for name, headers, query in VARIANTS:
                    target = f"{path}?{query}" if query else path
                    response = await client.request(
                        method.upper(), target, json=body, headers={**headers, "If-Match": "*"}
                    )
                    statuses[response.status] += 1
                    issues = problem_issues(response)
                    if response.status != 401 or issues:
                        failures.append(
                            f"{method.upper()} {template} [{name}]: {response.status} {issues}"
                        )
            after = await database.checksums(pg_url)
            # The same requests with the right token succeed: only auth refused them above.
            authorised: Counter[int] = Counter()
            async with Client.for_url(server.url, default_headers=AUTH) as writer:
                for method, template in sorted(routes, key=lambda r: r[0] == "delete"):
                    path = template.format(**ids)
                    if template == "/countries/{country_id}" and method == "delete":
                        path += "?cascade=true"
                    response = await writer.request(
                        method.upper(), path, json=_body(method, template)
                    )
                    authorised[response.status // 100 * 100] += 1
        problems = server.problems()

    cases = len(routes) * len(VARIANTS)
    section.parameters.update(
        backend="PostgreSQL",
        write_routes=", ".join(f"{m.upper()} {p}" for m, p in routes),
        credentials=", ".join(name for name, _, _ in VARIANTS),
    )
    section.figure("write routes (from /openapi.json)", len(routes))
    section.figure("credential variants", len(VARIANTS))
    section.figure("cases", cases)
    section.figure("statuses", dict(statuses))
    section.figure("failures", len(failures))
    section.figure("same requests with the right token", dict(authorised))
    section.headline = (
        f"{cases} cases: {statuses[401]} x 401, database unchanged: {before == after}"
    )
    for failure in failures[:20]:
        section.note(failure)
    checks = [
        section.check(
            "every case 401 + WWW-Authenticate: Bearer + problem+json",
            not failures,
            f"{len(failures)} failures",
        ),
        section.check(
            "database unchanged", before == after, {t: (before[t][0], after[t][0]) for t in before}
        ),
        section.check(
            "the right token is accepted on every route",
            set(authorised) == {200},
            dict(authorised),
        ),
        section.check("server log clean", not problems, problems or "clean"),
    ]
    assert all(checks), section.checks
