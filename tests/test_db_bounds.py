"""Bounded waits on the database: a cancelled statement frees its connection, and statement,
lock and command timeouts answer 503 with Retry-After and leave a usable pool behind."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest
from quart import Quart
from sqlalchemy import Table, insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

import service.asgi
import service.db
from service.app import create_app
from service.compat import asyncpg as compat_asyncpg
from service.compat.asyncpg import CancellableConnection
from service.db import Database, current_session, get_database
from service.models import Country, utc_now
from service.settings import ConfigError, Settings, load_settings
from tests import asgi
from tests.conftest import AUTH, settings_for
from tests.databases import Databases, migrate
from tests.reliability.database import dsn

pytestmark = pytest.mark.postgresql_only
COUNTRIES: Table = Country.__table__  # type: ignore[assignment]

# Rows of one multi-row INSERT: more bytes of Bind/Execute messages (about 15 MB) than the
# socket buffers between the service and the server hold, so the driver has to wait for the
# server to read before it can send the rest.
PIPELINE_ROWS = 300_000
# How long a cancelled statement, or a timed-out one, may take to give its connection back.
BOUND = 10.0


async def _backend_alive(database_url: str, pid: int) -> bool:
    connection = await asyncpg.connect(dsn(database_url))
    try:
        return bool(
            await connection.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)
        )
    finally:
        await connection.close()


async def _backends(database_url: str, where: str) -> int:
    """Other backends of the test's database that match ``where`` (a fresh snapshot)."""
    connection = await asyncpg.connect(dsn(database_url))
    try:
        count: int = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            f" AND pid <> pg_backend_pid() AND ({where})"
        )
        return count
    finally:
        await connection.close()


async def _until(predicate: Any, seconds: float = BOUND) -> bool:
    """Poll an async predicate every 20 ms until it holds or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.02)
    return False


@pytest.fixture
async def blocker(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's own, in an open transaction, rolled back at the end."""
    connection = await asyncpg.connect(dsn(database_url))
    transaction = connection.transaction()
    await transaction.start()
    try:
        yield connection
    finally:
        await transaction.rollback()
        await connection.close()


async def test_a_statement_cancelled_inside_executemany_frees_its_connection(
    database_url: str, blocker: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test's transaction inserts the first name without committing: the service's
    # INSERT of that name waits for it on the server, which then stops reading the rest of
    # the pipeline, and the driver waits for the socket to drain. A cancel that lands there
    # used to be swallowed by asyncpg: the task waited forever for a reply, holding its
    # connection (and its backend idle in transaction).
    monkeypatch.setattr(compat_asyncpg, "EXECUTEMANY_CHUNK_ROWS", PIPELINE_ROWS)  # one call
    now = utc_now()
    await blocker.execute(
        "INSERT INTO countries (name, created_at, updated_at) VALUES ('Blocked 0', $1, $1)", now
    )
    rows = [
        {"name": f"Blocked {i}", "created_at": now, "updated_at": now}
        for i in range(PIPELINE_ROWS)
    ]
    settings = settings_for(
        database_url, DB_STATEMENT_TIMEOUT="0", DB_LOCK_TIMEOUT="0", DB_COMMAND_TIMEOUT="0"
    )
    async with Database(load_settings(settings)) as db:
        driver: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        async def write() -> None:
            async with db.session_scope() as session:
                connection = await session.connection()
                driver.set_result((await connection.get_raw_connection()).driver_connection)
                await session.execute(insert(COUNTRIES), rows)

        writing = asyncio.create_task(write())
        raw = await asyncio.wait_for(driver, BOUND)
        assert isinstance(raw, CancellableConnection)
        pid = raw.get_server_pid()
        try:

            async def paused() -> bool:
                return not raw._protocol.writing_allowed.is_set()

            assert await _until(paused, 60), "the pipeline never filled the socket"
            writing.cancel()
            done, _ = await asyncio.wait([writing], timeout=BOUND)
            assert writing in done, "the cancel was swallowed: the statement never ended"
            assert writing.cancelled()
            await db.wait_for_closes()
            assert db.open_sessions == 0
            assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]

            async def backend_gone() -> bool:
                return not await _backend_alive(database_url, pid)

            assert await _until(backend_gone), "the backend outlived its cancelled statement"
        finally:
            if not writing.done():  # a failure must not leave the task behind
                raw.terminate()
                await asyncio.wait([writing], timeout=BOUND)


async def test_a_client_that_leaves_a_bulk_write_blocked_mid_pipeline_costs_nothing_lasting(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Through the request path: a bulk write whose 200,000 links wait behind a source row the
    # test has locked; its client leaves, the disconnect grace ends, and the request must end
    # with its connection closed and its backend gone, not hang in the driver.
    monkeypatch.setattr(service.asgi, "DISCONNECT_GRACE_SECONDS", 0.1)
    monkeypatch.setattr(compat_asyncpg, "EXECUTEMANY_CHUNK_ROWS", 1_000_000)  # one call
    settings = settings_for(
        database_url, DB_STATEMENT_TIMEOUT="0", DB_LOCK_TIMEOUT="0", DB_COMMAND_TIMEOUT="0"
    )
    app = create_app(settings)
    holder = await asyncpg.connect(dsn(database_url))
    async with app.test_app():
        source_ids = [
            row["id"]
            for row in await holder.fetch(
                "INSERT INTO sources (title, created_at, updated_at)"
                " SELECT 's' || n, now(), now() FROM generate_series(1, 100) AS n RETURNING id"
            )
        ]
        start = dt.date(2004, 1, 1)
        items = [
            {
                "country": "Left",
                "date": str(start + dt.timedelta(days=d)),
                "cases": d,
                "source_ids": source_ids,
            }
            for d in range(2_000)
        ]
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("SELECT 1 FROM sources WHERE id = $1 FOR UPDATE", source_ids[0])
        gone = asyncio.Event()
        body = orjson.dumps({"records": items})
        call = asyncio.create_task(asgi.call(app, "POST", "/records/bulk", body, disconnect=gone))
        try:

            async def waits_for_the_lock() -> bool:
                return await _backends(database_url, "wait_event_type = 'Lock'") == 1

            assert await _until(waits_for_the_lock, 60)
            gone.set()
            done, _ = await asyncio.wait([call], timeout=BOUND)
            assert call in done, "the request never ended"
            assert call.result().status is None
            await _settled(app)

            async def only_the_holder() -> bool:
                # The holder idles in its transaction; the request's backend must be gone.
                return await _backends(database_url, "state NOT LIKE 'idle%'") == 0

            assert await _until(only_the_holder), "the request's backend outlived it"
        finally:
            if not call.done():  # a failure must not leave the request behind
                await holder.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                await asyncio.wait([call], timeout=BOUND)
            await transaction.rollback()
            await holder.close()


async def test_large_multi_row_statements_go_in_chunks_whole(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each call is bounded by the command timeout as a whole: inside a transaction, rows go
    # in chunks, and the result is the same as one call's.
    monkeypatch.setattr(compat_asyncpg, "EXECUTEMANY_CHUNK_ROWS", 1_000)
    calls: list[int] = []
    original = CancellableConnection._executemany_cancellable

    async def counted(self: CancellableConnection, *args: Any) -> Any:
        calls.append(len(args[1]))
        return await original(self, *args)

    monkeypatch.setattr(CancellableConnection, "_executemany_cancellable", counted)
    connection = await asyncpg.connect(dsn(database_url), connection_class=CancellableConnection)
    try:
        names = [(f"Chunked {i}",) for i in range(2_500)]
        async with connection.transaction():
            await connection.executemany(
                "INSERT INTO countries (name, created_at, updated_at) VALUES ($1, now(), now())",
                names,
            )
            returned = await connection.fetchmany(
                "UPDATE countries SET updated_at = now() WHERE name = $1 RETURNING name", names
            )
        assert calls == [1_000, 1_000, 500] * 2
        assert [row["name"] for row in returned] == [name for (name,) in names]
        assert await connection.fetchval("SELECT count(*) FROM countries") == 2_500
        calls.clear()
        await connection.executemany("DELETE FROM countries WHERE name = $1", names)
        assert calls == [2_500]  # outside a transaction: one atomic call, as asyncpg makes it
    finally:
        await connection.close()


@pytest.fixture
async def bounded_app(database_url: str) -> AsyncIterator[Quart]:
    """The service with short timeouts, and a route whose statement takes 30 s."""
    app = create_app(
        settings_for(
            database_url,
            # The earlier deadline wins: a lock wait ends on the lock timeout.
            DB_STATEMENT_TIMEOUT="1",
            DB_LOCK_TIMEOUT="0.2",
            DB_COMMAND_TIMEOUT="3",
        )
    )

    @app.get("/sleep")
    async def sleep() -> dict[str, str]:
        await current_session().execute(text("SELECT pg_sleep(30)"))
        return {"status": "done"}

    async with app.test_app():
        yield app


async def _settled(app: Quart) -> None:
    db = get_database(app)
    await db.wait_for_closes()
    assert db.open_sessions == 0
    assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_the_sessions_carry_the_server_timeouts(bounded_app: Quart) -> None:
    db = get_database(bounded_app)
    async with db.session_scope(writes=False) as session:
        statement = await session.scalar(text("SHOW statement_timeout"))
        lock = await session.scalar(text("SHOW lock_timeout"))
    assert (statement, lock) == ("1s", "200ms")


async def test_a_statement_past_the_statement_timeout_is_503_and_its_connection_serves_on(
    bounded_app: Quart,
) -> None:
    client = bounded_app.test_client()
    started = time.monotonic()
    response = await client.get("/sleep")
    assert time.monotonic() - started < BOUND  # not the statement's 30 s
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.content_type == "application/problem+json"
    assert "took too long" in (await response.get_json())["detail"]
    assert (await client.get("/records")).status_code == 200
    await _settled(bounded_app)


async def test_a_write_blocked_by_a_held_lock_is_503_then_succeeds_once_released(
    bounded_app: Quart, database_url: str
) -> None:
    client = bounded_app.test_client()
    created = await client.post(
        "/records", json={"country": "Locked", "date": "2003-05-01", "cases": 1}, headers=AUTH
    )
    assert created.status_code == 201
    record_id = (await created.get_json())["id"]
    holder = await asyncpg.connect(dsn(database_url))
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("SELECT 1 FROM records WHERE id = $1 FOR UPDATE", record_id)
        started = time.monotonic()
        blocked = await client.patch(f"/records/{record_id}", json={"cases": 2}, headers=AUTH)
        assert time.monotonic() - started < BOUND
        assert blocked.status_code == 503
        assert blocked.headers["Retry-After"] == "1"
        assert "locked" in (await blocked.get_json())["detail"]
        await transaction.rollback()
    finally:
        await holder.close()
    patched = await client.patch(f"/records/{record_id}", json={"cases": 2}, headers=AUTH)
    assert patched.status_code == 200
    assert (await patched.get_json())["cases"] == 2
    await _settled(bounded_app)


async def test_a_server_that_does_not_answer_in_time_is_503_and_the_pool_recovers(
    database_url: str,
) -> None:
    # No server-side timeout: the driver's own deadline (DB_COMMAND_TIMEOUT) ends the wait;
    # the driver cancels the statement on the server, and the connection serves on.
    app = create_app(
        settings_for(database_url, DB_STATEMENT_TIMEOUT="0", DB_COMMAND_TIMEOUT="0.5")
    )

    @app.get("/sleep")
    async def sleep() -> dict[str, str]:
        await current_session().execute(text("SELECT pg_sleep(30)"))
        return {"status": "done"}

    async with app.test_app():
        client = app.test_client()
        started = time.monotonic()
        response = await client.get("/sleep")
        assert time.monotonic() - started < BOUND
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert "did not answer in time" in (await response.get_json())["detail"]
        assert (await client.get("/records")).status_code == 200
        await _settled(app)

        async def nothing_active() -> bool:
            connection = await asyncpg.connect(dsn(database_url))
            try:
                active: int = await connection.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid() AND state <> 'idle'"
                )
            finally:
                await connection.close()
            return active == 0

        assert await _until(nothing_active)


async def test_migrations_run_without_the_request_timeouts(
    databases: Databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A migration may build an index for minutes or wait for traffic to release a lock.
    monkeypatch.setenv("DB_STATEMENT_TIMEOUT", "0.001")
    seen: list[Settings] = []
    original = service.db.create_engine

    def recording(settings: Settings) -> AsyncEngine:
        seen.append(settings)
        return original(settings)

    monkeypatch.setattr(service.db, "create_engine", recording)
    url = await databases.create(migrated=False)
    try:
        await asyncio.to_thread(migrate, url)
    finally:
        await databases.drop(url)
    assert [(s.DB_STATEMENT_TIMEOUT, s.DB_LOCK_TIMEOUT, s.DB_COMMAND_TIMEOUT) for s in seen] == [
        (0, 0, 0)
    ]


@pytest.mark.parametrize("name", ["DB_STATEMENT_TIMEOUT", "DB_LOCK_TIMEOUT", "DB_COMMAND_TIMEOUT"])
def test_a_bad_timeout_names_its_variable(name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({name: "-1"})


def test_the_command_timeout_must_be_above_the_statement_timeout() -> None:
    with pytest.raises(ConfigError, match=r"DB_COMMAND_TIMEOUT: .*above DB_STATEMENT_TIMEOUT"):
        load_settings({"DB_STATEMENT_TIMEOUT": "10", "DB_COMMAND_TIMEOUT": "5"})
    assert load_settings({"DB_STATEMENT_TIMEOUT": "0", "DB_COMMAND_TIMEOUT": "5"})
    assert load_settings({"DB_STATEMENT_TIMEOUT": "10", "DB_COMMAND_TIMEOUT": "0"})
