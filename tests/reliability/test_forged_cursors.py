"""Forged cursors of every shape, against real Hypercorn on PostgreSQL and on SQLite.

A seeded fuzz: random bytes and non-ASCII text, valid cursors altered, and payloads of every
shape signed with the server's own secret (the test starts the server with a secret of its
own, as an attacker who knew it could). Every answer must be a page (200) or a problem+json
422 naming the cursor; never a 5xx, never a traceback in the server's log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import urllib.parse
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AUTH
from tests.reliability import database
from tests.reliability.contract import problem_issues
from tests.reliability.rawhttp import Client, Response
from tests.reliability.report import Section
from tests.reliability.server import hypercorn

SECTION = ("5b", "Forged cursors")
SEED = 2003
SECRET = "reliability-cursor-secret-5b"
CASES_PER_KIND = 120
LISTS = {
    "/records": ["id", "-id", "date", "-date", "cases", "-cases"],
    "/countries": ["name", "-name"],
    "/sources": ["title", "-title"],
    "/countries/{country_id}/records": ["date", "-cases"],
    "/sources/{source_id}/records": ["-date", "id"],
}
# Values of every JSON type and of the edges the columns care about.
EDGE_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2**31 - 1, 2**31, -(2**31) - 1, 2**63, 2**64, 10**40,
    0.5, -0.0, 1e308, "", "a", "2003-04-01", "2003-02-30", "0000-01-01", "9999-12-31",
    "a\x00b", "\ud800", "\U0001f600", "x" * 2000, [], {}, [1], {"a": 1}, "1; DROP TABLE x",
]  # fmt: skip


def sign(payload: bytes) -> str:
    digest = hmac.new(SECRET.encode(), payload, hashlib.sha256).digest()[:16]
    body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    return f"{body}.{base64.urlsafe_b64encode(digest).decode().rstrip('=')}"


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(7 if depth < 3 else 5)
    if kind == 0:
        return rng.choice(EDGE_VALUES)
    if kind == 1:
        return rng.randint(-(2**70), 2**70)
    if kind == 2:
        return rng.uniform(-1e10, 1e10)
    if kind == 3:
        return "".join(chr(rng.randrange(0, 0x3000)) for _ in range(rng.randrange(12)))
    if kind == 4:
        return rng.choice([None, True, False])
    if kind == 5:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {str(rng.random()): _random_json(rng, depth + 1) for _ in range(rng.randrange(3))}


def _payload(value: Any) -> bytes:
    # json, not orjson: it writes integers beyond 64 bits and lone surrogates.
    return json.dumps(value).encode()


def _kinds(rng: random.Random, order: str) -> dict[str, Callable[[], str]]:
    """How to make one cursor of each kind, for a list sorted by ``order``."""

    def random_bytes() -> str:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))).decode("latin-1")

    def non_ascii() -> str:
        good = sign(_payload([order, 1, 1]))
        position = rng.randrange(len(good) + 1)
        odd = rng.choice("éñ☃\u2028\x85\x00ÿ\U0001f600")
        return good[:position] + odd + good[position:]

    def altered() -> str:
        good = list(sign(_payload([order, rng.randint(1, 100), rng.randint(1, 100)])))
        position = rng.randrange(len(good))
        good[position] = rng.choice("ABCxyz019-_.=")
        return "".join(good)[: rng.randrange(1, len(good) + 1)]

    def wrong_shape() -> str:
        return sign(_payload(_random_json(rng)))

    def wrong_types() -> str:
        value, row_id = rng.choice(EDGE_VALUES), rng.choice([*EDGE_VALUES, 1, 7])
        return sign(_payload([order, value, row_id]))

    def other_order() -> str:
        other = rng.choice([o for orders in LISTS.values() for o in orders if o != order])
        return sign(_payload([other, rng.choice(EDGE_VALUES), 1]))

    def not_json() -> str:
        return sign(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64))))

    return {
        "random bytes": random_bytes,
        "non-ASCII in a valid cursor": non_ascii,
        "altered valid cursor": altered,
        "signed, wrong shape": wrong_shape,
        "signed, wrong types or ranges": wrong_types,
        "signed, another order": other_order,
        "signed, not JSON": not_json,
    }


def _target(path: str, order: str, cursor: str) -> str:
    query = urllib.parse.urlencode({"order": order, "limit": 3, "cursor": cursor})
    return f"{path}?{query}"


def _issues(response: Response) -> list[str]:
    if response.status == 200:
        return []
    if response.status != 422:
        return [f"status {response.status}"]
    issues = problem_issues(response)
    if not issues and response.json()["errors"][0]["field"] != "cursor":
        issues.append("422 does not name the cursor")
    return issues


async def _fuzz(url: str, log: Path, backend: str, section: Section) -> None:
    await database.seed(url, countries=3, days=5)
    rng = random.Random(SEED)
    outcomes: Counter[tuple[str, int]] = Counter()
    failures: list[str] = []
    with hypercorn(url, log, CURSOR_SECRET=SECRET) as server:
        async with Client.for_url(server.url) as client:
            ids = await _existing_ids(client)
            for path_template, orders in LISTS.items():
                path = path_template.format(**ids)
                for order in orders:
                    for kind, make in _kinds(rng, order).items():
                        for _ in range(CASES_PER_KIND // len(orders)):
                            cursor = make()
                            response = await client.request("GET", _target(path, order, cursor))
                            outcomes[(kind, response.status)] += 1
                            issues = _issues(response)
                            if issues:
                                failures.append(f"{path} {order} {cursor[:40]!r}: {issues}")
        problems = server.problems((*_LOG_PROBLEMS,))
    total = sum(outcomes.values())
    by_kind: dict[str, dict[int, int]] = {}
    for (kind, status), count in sorted(outcomes.items()):
        by_kind.setdefault(kind, {})[status] = count
    section.figure(f"{backend}: cases run", total)
    section.figure(f"{backend}: cases failed", len(failures))
    for kind, statuses in by_kind.items():
        section.figure(f"{backend}: {kind} (status: count)", statuses)
    section.check(f"{backend}: every cursor is a page or a 422", not failures, failures[:3])
    section.check(f"{backend}: server log clean", not problems, problems or "clean")
    section.headline += f"{backend}: {total:,} cases, {len(failures)} failed; "


async def _existing_ids(client: Client) -> dict[str, int]:
    """A country with records, and a source linked to one of them (the seed has none)."""
    record = (await client.request("GET", "/records?limit=1")).json()["items"][0]
    source = await client.request("POST", "/sources", json={"title": "5b"}, headers=AUTH)
    source_id = source.json()["id"]
    patched = await client.request(
        "PATCH", f"/records/{record['id']}", json={"source_ids": [source_id]}, headers=AUTH
    )
    assert patched.status == 200, patched.text()
    return {"country_id": record["country_id"], "source_id": source_id}


_LOG_PROBLEMS = ("Traceback", "unhandled error", "SAWarning", "Task was destroyed")


@pytest.mark.reliability
async def test_forged_cursors_are_a_page_or_a_422(
    pg_url: str, sqlite_url: str, tmp_path: Path, section: Section
) -> None:
    section.parameters.update(
        seed=SEED,
        lists=", ".join(f"{path} ({len(orders)} orders)" for path, orders in LISTS.items()),
        kinds=", ".join(_kinds(random.Random(0), "id")),
        cases_per_kind_per_list=CASES_PER_KIND,
        secret="the server's CURSOR_SECRET, known to the test",
    )
    await _fuzz(pg_url, tmp_path / "postgresql.log", "PostgreSQL", section)
    await _fuzz(sqlite_url, tmp_path / "sqlite.log", "SQLite", section)
    section.headline = section.headline.removesuffix("; ")
    section.assert_checks()
