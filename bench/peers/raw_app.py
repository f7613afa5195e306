"""Peer: a bare ASGI function on an asyncpg pool, served by Hypercorn like the service.

The floor of this stack: no framework, no ORM, no validation library; the service's SQL
sent straight to asyncpg (which prepares and caches each statement per connection), reads
outside a transaction as the service does them, the write in one transaction::

    hypercorn --worker-class uvloop --workers 1 bench.peers.raw_app:app
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import asyncpg
import orjson

from bench.peers.common import (
    POOL_SIZE,
    POOL_TIMEOUT,
    RequestError,
    authorized,
    make_cursor,
    parse_create,
    parse_cursor,
    parse_limit,
    plain_url,
    problem,
    utc_now,
)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

PUBLIC = """
SELECT records.id, records.country_id, countries.name AS country, records.date,
       records.cases, records.deaths, records.recoveries,
       (SELECT coalesce(json_agg(record_sources.source_id), '[]'::json)
          FROM record_sources WHERE record_sources.record_id = records.id) AS source_ids,
       records.version, records.created_at, records.updated_at
  FROM records JOIN countries ON countries.id = records.country_id
"""
RECORD_BY_ID = PUBLIC + "WHERE records.id = $1"
BY_COUNTRY = "WHERE records.country_id IN (SELECT id FROM countries WHERE name = $1) "
RECORDS_BY_COUNTRY = PUBLIC + BY_COUNTRY + "ORDER BY records.date, records.id LIMIT $2"
RECORDS_BY_COUNTRY_AFTER = (
    PUBLIC
    + BY_COUNTRY
    + "AND (records.date, records.id) > ($3, $4) ORDER BY records.date, records.id LIMIT $2"
)
COUNTRY_ID = "SELECT id FROM countries WHERE name = $1"
INSERT_COUNTRY = (
    "INSERT INTO countries (name, created_at, updated_at) VALUES ($1, $2, $2) "
    "ON CONFLICT (name) DO NOTHING RETURNING id"
)
INSERT_RECORD = (
    "INSERT INTO records (country_id, date, cases, deaths, recoveries, version, created_at, "
    "updated_at) VALUES ($1, $2, $3, $4, $5, 1, $6, $6) "
    "RETURNING id, country_id, date, cases, deaths, recoveries, version, created_at, updated_at"
)
JSON = [(b"content-type", b"application/json")]
PROBLEM = [(b"content-type", b"application/problem+json")]

pool: asyncpg.Pool | None = None


FIELDS = (
    "id", "country_id", "country", "date", "cases", "deaths", "recoveries", "source_ids",
    "version", "created_at", "updated_at",
)  # fmt: skip


def _record(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    """The service's JSON object (its key order too); source ids arrive as JSON text."""
    record = {name: row[name] for name in FIELDS}
    source_ids = record["source_ids"]
    if isinstance(source_ids, str):
        record["source_ids"] = sorted(orjson.loads(source_ids))
    return record


def _dumps(body: Any) -> bytes:
    return orjson.dumps(body, option=orjson.OPT_UTC_Z)


async def _get(record_id: int) -> tuple[int, Any]:
    assert pool is not None
    row = await pool.fetchrow(RECORD_BY_ID, record_id)
    if row is None:
        raise RequestError(404, f"record {record_id} does not exist")
    return 200, _record(row)


async def _list(query: dict[str, list[str]]) -> tuple[int, Any]:
    assert pool is not None
    name = query.get("country", [None])[0]
    if name is None:
        raise RequestError(422, "this peer lists one country's records: give country=NAME")
    limit = parse_limit(query.get("limit", [None])[0])
    if cursor := query.get("cursor", [None])[0]:
        rows = await pool.fetch(RECORDS_BY_COUNTRY_AFTER, name, limit + 1, *parse_cursor(cursor))
    else:
        rows = await pool.fetch(RECORDS_BY_COUNTRY, name, limit + 1)
    next_cursor = make_cursor(rows[limit - 1]) if len(rows) > limit else None
    return 200, {"items": [_record(row) for row in rows[:limit]], "next_cursor": next_cursor}


async def _create(body: bytes) -> tuple[int, Any]:
    assert pool is not None
    try:
        fields = parse_create(orjson.loads(body))
    except orjson.JSONDecodeError:
        raise RequestError(422, "the body must be a JSON object") from None
    now = utc_now()
    async with pool.acquire() as connection, connection.transaction():
        country_id = await connection.fetchval(COUNTRY_ID, fields["name"])
        if country_id is None:
            country_id = await connection.fetchval(
                INSERT_COUNTRY, fields["name"], now
            ) or await connection.fetchval(COUNTRY_ID, fields["name"])
        try:
            row = await connection.fetchrow(
                INSERT_RECORD,
                country_id,
                fields["date"],
                fields["cases"],
                fields["deaths"],
                fields["recoveries"],
                now,
            )
        except asyncpg.UniqueViolationError:
            detail = f"{fields['name']} already has a record for {fields['date']}"
            raise RequestError(409, detail) from None
    return 201, _record({**dict(row), "country": fields["name"], "source_ids": []})


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _route(scope: Scope, receive: Receive) -> tuple[int, Any]:
    path: str = scope["path"].rstrip("/")
    method: str = scope["method"]
    if path == "/records":
        if method == "GET":
            return await _list(parse_qs(scope["query_string"].decode()))
        if method == "POST":
            headers = dict(scope["headers"])
            if not authorized(headers.get(b"authorization", b"").decode()):
                raise RequestError(401, "writes need 'Authorization: Bearer <token>'")
            return await _create(await _body(receive))
    elif path.startswith("/records/") and method == "GET":
        record_id = path.removeprefix("/records/")
        if record_id.isdigit() and 0 < int(record_id) < 2**31:
            return await _get(int(record_id))
    raise RequestError(404, f"no route for {method} {path}")


async def _no_session_reset(_connection: asyncpg.Connection) -> None:
    """By default the pool sends ``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL`` each time a connection comes back: one more round trip per request, which
    the service's pool does not make either. An open transaction is still rolled back
    (asyncpg does that before calling this)."""


async def _lifespan(receive: Receive, send: Send) -> None:
    global pool
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            pool = await asyncpg.create_pool(
                plain_url(),
                min_size=POOL_SIZE,
                max_size=POOL_SIZE,
                timeout=POOL_TIMEOUT,
                reset=_no_session_reset,
            )
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if pool is not None:
                await pool.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    headers = JSON
    try:
        status, body = await _route(scope, receive)
    except RequestError as error:
        status, body, headers = error.status, problem(error.status, error.detail), PROBLEM
    payload = _dumps(body)
    headers = [*headers, (b"content-length", str(len(payload)).encode())]
    if status == 201:
        headers.append((b"location", f"/records/{body['id']}".encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
