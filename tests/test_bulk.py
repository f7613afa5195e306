"""Writes racing other transactions: a conflict is found by the constraint whenever it appears,
counts say what the statement did, rows are written in one order, lost races run again.

A competing transaction the test controls holds a row uncommitted while the request under test
runs into it. On PostgreSQL the test waits until the request waits for that row's lock
(pg_stat_activity), then commits or rolls the competitor back. SQLite writers queue at
``BEGIN IMMEDIATE`` before they read anything, so there is no window to force there: the same
tests check that whichever order the two take, the answer is the same.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from quart import Quart, Response
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from service.app import create_app
from service.db import WRITE_METHODS, Database, get_database
from service.load import load_csv
from service.queries.bulk import RecordRow, bulk_write
from service.queries.countries import country_id_for_name
from service.settings import load_settings
from service.transactions import RETRIED_MARK
from tests.conftest import AUTH, settings_for
from tests.factories import create_country, create_record, walk

D1, D2, D3 = dt.date(2003, 4, 1), dt.date(2003, 4, 2), dt.date(2003, 4, 3)


# A request waits for the competitor's row until the test ends the competitor: no timeout of
# the service's may end the wait first, however slowly a loaded machine runs the test.
UNBOUNDED_WAITS = {"DB_STATEMENT_TIMEOUT": "0", "DB_LOCK_TIMEOUT": "0", "DB_COMMAND_TIMEOUT": "0"}


@pytest.fixture
async def real_app(database_url: str) -> AsyncIterator[Quart]:
    """The service on a database of its own, its statements waiting as long as they must."""
    app = create_app(settings_for(database_url, **UNBOUNDED_WAITS))
    async with app.test_app():
        yield app


def _settings(database_url: str) -> Any:
    return load_settings({"DATABASE_URL": database_url, **UNBOUNDED_WAITS})


@asynccontextmanager
async def competitor(database_url: str) -> AsyncIterator[AsyncSession]:
    """A write transaction of another process's making, rolled back unless committed."""
    async with (
        Database(_settings(database_url)) as other,
        other.session_scope() as session,
    ):
        yield session


def _dsn(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(False)


async def until_a_request_waits_for_a_lock(backend: str, database_url: str) -> None:
    """Return once another connection to the database waits for a lock (PostgreSQL)."""
    if backend == "sqlite":
        return
    connection = await asyncpg.connect(_dsn(database_url))
    try:
        async with asyncio.timeout(60):
            while not await connection.fetchval(  # noqa: ASYNC110 - the server's state, no event
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            ):
                await asyncio.sleep(0.01)
    finally:
        await connection.close()


async def _race(
    backend: str,
    database_url: str,
    holding: AsyncSession,
    request: Awaitable[Response],
    *,
    commit: bool = True,
) -> Response:
    """Run ``request`` against the competitor's uncommitted rows, then end the competitor."""
    running = asyncio.ensure_future(request)
    try:
        await until_a_request_waits_for_a_lock(backend, database_url)
        await (holding.commit() if commit else holding.rollback())
        return await running
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


def _bulk(client: Any, mode: str, *items: tuple[int, dt.date, int]) -> Awaitable[Response]:
    records = [{"country_id": c, "date": d.isoformat(), "cases": n} for c, d, n in items]
    return client.post(  # type: ignore[no-any-return]
        "/records/bulk", json={"records": records, "on_conflict": mode}, headers=AUTH
    )


async def _stored(client: Any, country_id: int) -> dict[str, dict[str, Any]]:
    return {r["date"]: r for r in await walk(client, f"/records?country_id={country_id}")}


EXPECTED = {
    # mode: (status, body, cases stored for D2)
    "error": (409, None, 2),
    "skip": (200, {"created": 2, "updated": 0, "skipped": 1}, 2),
    "update": (200, {"created": 2, "updated": 1, "skipped": 0}, 20),
}


@pytest.mark.parametrize("mode", ["error", "skip", "update"])
async def test_a_batch_meets_a_key_stored_while_it_runs(
    real_app: Quart, backend: str, database_url: str, mode: str
) -> None:
    client = real_app.test_client()
    country = (await create_country(client))["id"]
    async with competitor(database_url) as other:
        await bulk_write(other, [RecordRow(D2, 2, country_id=country)], "error")
        request = _bulk(client, mode, (country, D1, 10), (country, D2, 20), (country, D3, 30))
        response = await _race(backend, database_url, other, request)
    status, body, d2_cases = EXPECTED[mode]
    assert response.status_code == status, await response.get_data()
    stored = await _stored(client, country)
    assert stored[D2.isoformat()]["cases"] == d2_cases
    if status == 409:
        problem = await response.get_json()
        assert [e["field"] for e in problem["errors"]] == ["records.1"]
        assert list(stored) == [D2.isoformat()], "an error batch writes all or nothing"
    else:
        assert await response.get_json() == body
        assert sorted(stored) == [D1.isoformat(), D2.isoformat(), D3.isoformat()]
        assert stored[D2.isoformat()]["version"] == (2 if mode == "update" else 1)


async def test_an_error_batch_writes_the_key_a_competitor_gave_up(
    real_app: Quart, backend: str, database_url: str
) -> None:
    client = real_app.test_client()
    country = (await create_country(client))["id"]
    async with competitor(database_url) as other:
        await bulk_write(other, [RecordRow(D2, 2, country_id=country)], "error")
        request = _bulk(client, "error", (country, D1, 10), (country, D2, 20))
        response = await _race(backend, database_url, other, request, commit=False)
    assert await response.get_json() == {"created": 2, "updated": 0, "skipped": 0}
    assert (await _stored(client, country))[D2.isoformat()]["cases"] == 20


@pytest.mark.postgresql_only
async def test_a_batch_locks_its_records_in_key_order(
    real_app: Quart, backend: str, database_url: str
) -> None:
    client = real_app.test_client()
    first = await create_record(client, date=D1.isoformat())
    second = await create_record(client, country_id=first["country_id"], date=D2.isoformat())
    country = first["country_id"]
    async with competitor(database_url) as other:
        await other.execute(
            text("UPDATE records SET cases = cases WHERE id = :id"), {"id": second["id"]}
        )
        # The batch lists the later key first; written in key order, it locks D1, then waits.
        request = _bulk(client, "update", (country, D2, 20), (country, D1, 10))
        running = asyncio.ensure_future(request)
        try:
            await until_a_request_waits_for_a_lock(backend, database_url)
            with pytest.raises(DBAPIError) as locked:
                await other.execute(
                    text("SELECT id FROM records WHERE id = :id FOR UPDATE NOWAIT"),
                    {"id": first["id"]},
                )
            assert getattr(locked.value.orig, "sqlstate", None) == "55P03"
            await other.rollback()
            response = await running
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
    assert await response.get_json() == {"created": 0, "updated": 2, "skipped": 0}


@pytest.mark.parametrize("cascade", [True, False])
async def test_deleting_a_country_while_a_record_is_added_to_it(
    real_app: Quart, backend: str, database_url: str, cascade: bool
) -> None:
    client = real_app.test_client()
    record = await create_record(client, date=D1.isoformat())
    country = record["country_id"]
    async with competitor(database_url) as other:
        await bulk_write(other, [RecordRow(D2, 2, country_id=country)], "error")
        request = client.delete(
            f"/countries/{country}?cascade={str(cascade).lower()}", headers=AUTH
        )
        response = await _race(backend, database_url, other, request)
    stored = await walk(client, f"/records?country_id={country}")
    if cascade:
        assert response.status_code == 204, await response.get_data()
        assert stored == []
        assert (await client.get(f"/countries/{country}")).status_code == 404
    else:
        assert response.status_code == 409
        assert "still has records" in (await response.get_json())["detail"]
        assert len(stored) == 2


async def _hold_country(other: AsyncSession, name: str) -> None:
    await other.execute(
        text("INSERT INTO countries (name, created_at, updated_at) VALUES (:n, :t, :t)"),
        {"n": name, "t": dt.datetime(2003, 1, 1)},
    )


@pytest.mark.parametrize(
    "path", ["create country", "rename country", "create record", "move record"]
)
async def test_a_single_write_meets_a_key_stored_while_it_runs(
    real_app: Quart, backend: str, database_url: str, path: str
) -> None:
    client = real_app.test_client()
    country = await create_country(client, "Ruritania")
    record = await create_record(client, country_id=country["id"], date=D1.isoformat())
    key = {"country_id": country["id"], "date": D2.isoformat()}
    requests = {
        "create country": lambda: client.post("/countries", json={"name": "Taken"}, headers=AUTH),
        "rename country": lambda: client.patch(
            f"/countries/{country['id']}", json={"name": "Taken"}, headers=AUTH
        ),
        "create record": lambda: client.post("/records", json={**key, "cases": 1}, headers=AUTH),
        "move record": lambda: client.patch(
            f"/records/{record['id']}", json={"date": D2.isoformat()}, headers=AUTH
        ),
    }
    async with competitor(database_url) as other:
        if "country" in path:
            await _hold_country(other, "Taken")
        else:
            await bulk_write(other, [RecordRow(D2, 2, country_id=country["id"])], "error")
        response = await _race(backend, database_url, other, requests[path]())
    assert response.status_code == 409, await response.get_data()
    detail = (await response.get_json())["detail"]
    expected = "already exists" if "country" in path else "already has a record for 2003-04-02"
    assert expected in detail


def test_every_write_route_runs_its_transaction_again_when_it_loses_a_race() -> None:
    app = create_app(settings_for("sqlite+aiosqlite:///:memory:"))
    write_rules = [
        rule for rule in app.url_map.iter_rules() if set(rule.methods or ()) & WRITE_METHODS
    ]
    assert write_rules
    unmarked = [
        rule.rule
        for rule in write_rules
        if not getattr(app.view_functions[rule.endpoint], RETRIED_MARK, False)
    ]
    assert unmarked == []


async def _lose_races(database_url: str, sqlstate: str, times: int) -> asyncpg.Connection:
    """Make the next ``times`` inserts into records fail with ``sqlstate``, as PostgreSQL
    fails the loser of a deadlock or a serialization conflict."""
    connection = await asyncpg.connect(_dsn(database_url))
    await connection.execute(
        f"""
        CREATE SEQUENCE lost_races;
        CREATE FUNCTION lose_a_race() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF nextval('lost_races') <= {times} THEN
                RAISE EXCEPTION 'a race lost on purpose' USING ERRCODE = '{sqlstate}';
            END IF;
            RETURN NULL;
        END $$;
        CREATE TRIGGER lose_a_race BEFORE INSERT ON records
            FOR EACH STATEMENT EXECUTE FUNCTION lose_a_race();
        """
    )
    return connection


WRITES = {
    "bulk": lambda client: client.post(
        "/records/bulk",
        json={"records": [{"country": "Lost", "date": "2003-04-01", "cases": 1}]},
        headers=AUTH,
    ),
    "single": lambda client: client.post(
        "/records", json={"country": "Lost", "date": "2003-04-01", "cases": 1}, headers=AUTH
    ),
}


@pytest.mark.postgresql_only
@pytest.mark.parametrize("write", sorted(WRITES))
@pytest.mark.parametrize("sqlstate", ["40P01", "40001"])
async def test_a_write_that_loses_a_race_runs_again(
    real_app: Quart, backend: str, database_url: str, sqlstate: str, write: str
) -> None:
    client = real_app.test_client()
    attempts = get_database(real_app).settings.DB_WRITE_ATTEMPTS
    connection = await _lose_races(database_url, sqlstate, attempts - 1)
    try:
        response = await WRITES[write](client)
        assert response.status_code in (200, 201), await response.get_data()
        assert await connection.fetchval("SELECT last_value FROM lost_races") == attempts
        assert await connection.fetchval("SELECT count(*) FROM records") == 1
        assert await connection.fetchval("SELECT count(*) FROM countries") == 1
    finally:
        await connection.close()


@pytest.mark.postgresql_only
@pytest.mark.parametrize("write", sorted(WRITES))
async def test_a_write_that_keeps_losing_races_is_503_with_retry_after(
    real_app: Quart, backend: str, database_url: str, write: str
) -> None:
    client = real_app.test_client()
    attempts = get_database(real_app).settings.DB_WRITE_ATTEMPTS
    connection = await _lose_races(database_url, "40P01", attempts)
    try:
        response = await WRITES[write](client)
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert response.headers["Content-Type"] == "application/problem+json"
        assert await connection.fetchval("SELECT last_value FROM lost_races") == attempts
        assert await connection.fetchval("SELECT count(*) FROM records") == 0
        assert await connection.fetchval("SELECT count(*) FROM countries") == 0
    finally:
        await connection.close()


async def test_an_error_mode_load_names_a_key_stored_while_it_writes(
    backend: str, database_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "data.csv"
    path.write_text(
        "date,country,cases,deaths,recoveries\n"
        "2003-04-01,Ruritania,10,0,0\n2003-04-02,Ruritania,20,0,0\n2003-04-03,Ruritania,30,0,0\n"
    )
    async with Database(_settings(database_url)) as db:
        async with db.session_scope(commit=True) as session:
            await bulk_write(session, [RecordRow(D1, 1, country="Elsewhere")], "error")
            country = await country_id_for_name(session, "Ruritania")
        async with competitor(database_url) as other:
            await bulk_write(other, [RecordRow(D2, 2, country_id=country)], "error")
            loading = asyncio.ensure_future(load_csv(db, path, "error", batch_size=1))
            try:
                await until_a_request_waits_for_a_lock(backend, database_url)
                await other.commit()
                report = await loading
            finally:
                loading.cancel()
                await asyncio.gather(loading, return_exceptions=True)
        async with db.session_scope(writes=False) as session:
            stored = (await session.execute(text("SELECT date, cases FROM records"))).all()
    assert [str(problem) for problem in report.problems] == [
        "line 3: (Ruritania, 2003-04-02) is stored already; use --on-conflict skip or update"
    ]
    assert (report.created, report.committed_rows) == (0, 0)
    assert sorted(cases for _, cases in stored) == [1, 2], "nothing of the file is written"


@pytest.mark.parametrize("write", sorted(WRITES))
async def test_a_record_named_after_a_country_deleted_meanwhile_creates_it_anew(
    real_app: Quart, backend: str, database_url: str, write: str
) -> None:
    client = real_app.test_client()
    old = await create_country(client, "Lost")
    async with competitor(database_url) as other:
        await other.execute(text("DELETE FROM countries WHERE id = :id"), {"id": old["id"]})
        # PostgreSQL: the write finds the old country, waits for its row, then misses it.
        response = await _race(backend, database_url, other, WRITES[write](client))
    assert response.status_code in (200, 201), await response.get_data()
    countries = await walk(client, "/countries")
    assert [c["name"] for c in countries] == ["Lost"]
    if backend == "postgresql":  # SQLite hands the highest id, freed by the delete, out again
        assert countries[0]["id"] != old["id"]
    [record] = await walk(client, "/records")
    assert record["country_id"] == countries[0]["id"]
