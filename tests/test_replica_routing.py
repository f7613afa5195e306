"""Read-replica routing in the session core, without replication: where each statement goes,
which replica a token allows, how lag is judged, and that nothing changes when it is off.

A second database on the test server stands in for a replica where only routing is under
test (the data tells which one answered); tests/test_replicas.py runs real replication.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from quart import Quart
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

from service.app import create_app
from service.db import Database, RoutingSession, get_database
from service.models import Country
from service.replicas import (
    TOKEN_HEADER,
    TOKEN_VERSION,
    Position,
    Replica,
    ReplicaSet,
    token_key,
)
from service.settings import ConfigError, load_settings
from service.signing import sign
from tests.conftest import AUTH, settings_for
from tests.databases import Databases, fresh_database
from tests.waiting import until

PRIMARY = Position(system_id=7, timeline=2, lsn=1_000)
DEAD_REPLICA = "postgresql+asyncpg://postgres@127.0.0.1:9/sars"


# -- settings ---------------------------------------------------------------------------------


def test_replicas_need_a_postgresql_primary() -> None:
    with pytest.raises(ConfigError, match=r"DATABASE_REPLICA_URLS.*PostgreSQL DATABASE_URL"):
        load_settings({"DATABASE_URL": "sqlite+aiosqlite:///x.db", "DATABASE_REPLICA_URLS": "p"})


def test_replica_urls_are_postgresql_urls_for_the_async_driver() -> None:
    settings = load_settings(
        {
            "DATABASE_URL": "postgresql://u@h1/db",
            "DATABASE_REPLICA_URLS": " postgres://u:secret@h2:5433/db , postgresql://u@h3/db",
        }
    )
    assert settings.DATABASE_REPLICA_URLS == (
        "postgresql+asyncpg://u:secret@h2:5433/db",
        "postgresql+asyncpg://u@h3/db",
    )
    assert "secret" not in repr(settings)
    for wrong in (
        "mysql://h/db",
        "sqlite+aiosqlite:///x.db",
        "not a url",
        "postgresql://u:pw@h:x/d",
    ):
        with pytest.raises(ConfigError, match=r"DATABASE_REPLICA_URLS.*not a PostgreSQL URL") as e:
            load_settings({"DATABASE_URL": "postgresql://u@h1/db", "DATABASE_REPLICA_URLS": wrong})
        assert "sqlite" not in str(e.value).replace(wrong, "") and "pw" not in str(e.value)


# -- off: nothing changes ---------------------------------------------------------------------


async def test_without_replicas_nothing_is_routed_or_added(database_url: str) -> None:
    app = create_app(settings_for(database_url, DATABASE_REPLICA_URLS=""))
    async with app.test_app():
        await _nothing_routed_or_added(app)


async def _nothing_routed_or_added(app: Quart) -> None:
    database = get_database(app)
    assert database.replicas is None
    assert database.sessionmaker.kw.get("sync_session_class", Session) is Session
    client = app.test_client()
    created = await client.post("/countries", json={"name": "Nowhere"}, headers=AUTH)
    assert created.status_code == 201
    assert TOKEN_HEADER not in created.headers
    ready = await (await client.get("/ready")).get_json()
    assert set(ready) == {"status", "database", "migrations"}
    metrics = await (await client.get("/metrics")).get_data(as_text=True)
    assert "db_reads" not in metrics and "db_replica" not in metrics


# -- where statements go ------------------------------------------------------------------------


@pytest.fixture
async def stand_in(databases: Databases) -> AsyncIterator[str]:
    """Another database of the test server, holding one country the primary does not have."""
    async with fresh_database(databases) as url:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as connection:
                await connection.execute(insert(Country).values(name="Only on the replica"))
        finally:
            await engine.dispose()
        yield url


@pytest.mark.postgresql_only
async def test_a_replica_session_sends_plain_selects_there_and_the_rest_to_the_primary(
    database_url: str, stand_in: str
) -> None:
    settings = load_settings(settings_for(database_url, DATABASE_REPLICA_URLS=stand_in))
    async with Database(settings) as db:
        assert db.replicas is not None
        db.replicas.create_engines()
        replica = db.replicas.replicas[0]
        async with db.session_scope(commit=True) as session:
            assert isinstance(session.sync_session, RoutingSession)
            session.sync_session.replica = replica
            names = select(Country.name)
            assert (await session.scalars(names)).all() == ["Only on the replica"]
            core = select(Country.__table__.c.name)
            assert (await session.scalars(core)).all() == ["Only on the replica"]
            assert (await session.scalars(names.with_for_update())).all() == []
            session.add(Country(name="Written"))
            await session.flush()  # a flush goes to the primary, whatever the session reads
            assert (await session.scalars(names.with_for_update())).all() == ["Written"]
        async with db.session_scope(writes=False) as session:
            assert (await session.scalars(select(Country.name))).all() == ["Written"]


@pytest.mark.postgresql_only
async def test_get_requests_read_the_replica_and_writes_the_primary(
    database_url: str, stand_in: str
) -> None:
    app = create_app(
        settings_for(database_url, DATABASE_REPLICA_URLS=stand_in, REPLICA_CHECK_INTERVAL=3600)
    )
    async with app.test_app():
        replicas = get_database(app).replicas
        assert replicas is not None
        await until(lambda: bool(replicas.replicas) and replicas.checked, "the first check")
        # A database that is not in recovery is no replica: it takes no reads...
        assert not replicas.replicas[0].healthy
        assert "not a standby" in (replicas.replicas[0].error or "")
        _take_reads(replicas, replicas.replicas[0])  # ...unless the test says it does
        client = app.test_client()
        listed = await (await client.get("/countries")).get_json()
        assert [country["name"] for country in listed["items"]] == ["Only on the replica"]
        created = await client.post("/countries", json={"name": "Primary"}, headers=AUTH)
        assert created.status_code == 201 and created.headers[TOKEN_HEADER]
        # The stand-in has not replayed the write: the token's read goes to the primary.
        with_token = await client.get(
            "/countries", headers={TOKEN_HEADER: created.headers[TOKEN_HEADER]}
        )
        assert [country["name"] for country in (await with_token.get_json())["items"]] == [
            "Primary"
        ]
        assert (replicas.primary_reads, replicas.replicas[0].reads) == (1, 1)


@pytest.mark.postgresql_only
async def test_a_read_whose_replica_is_down_is_served_again_by_the_primary(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(
        settings_for(database_url, DATABASE_REPLICA_URLS=DEAD_REPLICA, REPLICA_CHECK_INTERVAL=3600)
    )
    async with app.test_app():
        replicas = get_database(app).replicas
        assert replicas is not None
        await until(lambda: bool(replicas.replicas) and replicas.checked, "the first check")
        dead = replicas.replicas[0]
        assert not dead.healthy and "check failed" in (dead.error or "")
        # Unfit from the first check on: said once in the log, not only in /ready.
        assert "replica 127.0.0.1:9 takes no reads: check failed" in caplog.text
        _take_reads(replicas, dead)
        client = app.test_client()
        response = await client.get("/countries")
        assert response.status_code == 200 and (await response.get_json())["items"] == []
        assert not dead.healthy and "a read failed" in (dead.error or "")
        assert replicas.primary_reads == 1
        ready = await (await client.get("/ready")).get_json()
        assert ready["degraded"] == ["127.0.0.1:9"] and ready["status"] == "ready"


def _take_reads(replicas: ReplicaSet, replica: Replica) -> None:
    # It has replayed none of the primary's WAL: only reads without a token may go there.
    replica.healthy, replica.error, replica.replay_lsn = True, None, 0
    replicas.refresh()


# -- which replica a token allows -----------------------------------------------------------------


@pytest.fixture
def replica_set() -> ReplicaSet:
    settings = load_settings({"DATABASE_URL": "postgresql://u@h/db", "READ_TOKEN_TTL": 60})
    replicas = ReplicaSet(settings, lambda url: create_async_engine(url))
    replicas.primary = PRIMARY
    engine = create_async_engine("postgresql+asyncpg://u@h/db")  # never connects
    behind, caught_up = (
        Replica(name, engine, engine, healthy=True) for name in ("behind:5432", "caught-up:5432")
    )
    behind.replay_lsn, caught_up.replay_lsn = 900, 1_000
    replicas.replicas = [behind, caught_up]
    replicas.refresh()
    return replicas


def _token(replicas: ReplicaSet, *fields: Any, secret: str | None = None) -> str:
    key = token_key(secret or replicas.settings.CURSOR_SECRET)
    return sign(key, orjson.dumps(list(fields)))


def test_without_a_token_reads_take_turns_over_healthy_replicas(replica_set: ReplicaSet) -> None:
    picked = {replica_set.pick(None).name for _ in range(4)}  # type: ignore[union-attr]
    assert picked == {"behind:5432", "caught-up:5432"}
    replica_set.replicas[1].healthy = False
    replica_set.refresh()
    assert {replica_set.pick(None).name for _ in range(4)} == {"behind:5432"}  # type: ignore[union-attr]
    replica_set.replicas[0].healthy = False
    replica_set.refresh()
    assert replica_set.pick(None) is None


def test_a_token_allows_only_replicas_past_its_position(replica_set: ReplicaSet) -> None:
    token = replica_set.token(Position(PRIMARY.system_id, PRIMARY.timeline, 950))
    assert {replica_set.pick(token).name for _ in range(4)} == {"caught-up:5432"}  # type: ignore[union-attr]
    ahead = replica_set.token(Position(PRIMARY.system_id, PRIMARY.timeline, 1_001))
    assert replica_set.pick(ahead) is None


@pytest.mark.parametrize(
    "describe",
    [
        pytest.param(lambda r: "garbage", id="garbage"),
        pytest.param(lambda r: "", id="empty"),
        pytest.param(lambda r: "é.ü", id="not-ascii"),
        pytest.param(lambda r: r.token(Position(7, 2, 1))[:-2] + "AA", id="altered-signature"),
        pytest.param(
            lambda r: _token(r, TOKEN_VERSION, 7, 2, 1, time.time(), secret="another-secret"),
            id="another-secret",
        ),
        pytest.param(lambda r: _token(r, TOKEN_VERSION, 7, 2, 1, time.time() - 61), id="expired"),
        pytest.param(lambda r: _token(r, TOKEN_VERSION, 8, 2, 1, time.time()), id="other-cluster"),
        pytest.param(lambda r: _token(r, TOKEN_VERSION, 7, 1, 1, time.time()), id="old-timeline"),
        pytest.param(lambda r: _token(r, 99, 7, 2, 1, time.time()), id="other-version"),
        pytest.param(lambda r: _token(r, TOKEN_VERSION, 7, 2), id="short"),
        pytest.param(lambda r: sign(r.settings.CURSOR_SECRET.encode(), b"{}"), id="not-a-list"),
        pytest.param(lambda r: _token(r, "1", "7", 2, 1, "now"), id="wrong-types"),
        pytest.param(lambda r: _token(r, TOKEN_VERSION, 7, 2, "1", time.time()), id="text-lsn"),
        pytest.param(lambda r: _token(r, TOKEN_VERSION, 7, 2, None, time.time()), id="null-lsn"),
        pytest.param(lambda r: _token(r, TOKEN_VERSION, 7, 2, 1, "now"), id="text-time"),
        pytest.param(lambda r: _token(r, TOKEN_VERSION, 7, 2, 1.5, time.time()), id="float-lsn"),
        pytest.param(lambda r: _token(r, True, 7, 2, 1, time.time()), id="bool-version"),
        pytest.param(
            lambda r: sign(
                r.settings.CURSOR_SECRET.encode(),
                orjson.dumps([TOKEN_VERSION, 7, 2, 1, time.time()]),
            ),
            id="signed-with-the-cursor-key",
        ),
    ],
)
def test_a_token_that_proves_nothing_reads_from_the_primary(
    replica_set: ReplicaSet, describe: Any
) -> None:
    assert replica_set.pick(describe(replica_set)) is None


def test_no_token_is_trusted_before_the_primary_was_seen(replica_set: ReplicaSet) -> None:
    token = replica_set.token(Position(PRIMARY.system_id, PRIMARY.timeline, 1))
    replica_set.primary = None
    assert replica_set.pick(token) is None


# -- how a check is judged ----------------------------------------------------------------------


def _row(**fields: Any) -> SimpleNamespace:
    found = {"in_recovery": True, "replay_lsn": 1_000, "system_id": 7, "timeline": 2, **fields}
    return SimpleNamespace(**found)


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        (_row(), None),
        (_row(timeline=None), None),
        (_row(in_recovery=False), "not a standby"),
        (_row(system_id=8), "another cluster"),
        (_row(timeline=1), "on timeline 1, the primary is on 2"),
        (_row(replay_lsn=1_000 - 101), "lags by 101 bytes"),
    ],
)
def test_a_replica_takes_reads_only_as_a_close_standby_of_the_same_cluster(
    replica_set: ReplicaSet, row: SimpleNamespace, problem: str | None
) -> None:
    replica_set.settings = load_settings(
        {"DATABASE_URL": "postgresql://u@h/db", "REPLICA_MAX_LAG_BYTES": 100}
    )
    replica = replica_set.replicas[0]
    replica.lag_bytes = replica.lag_seconds = 123  # what an earlier check found
    judged = replica_set._judge(replica, row)
    assert judged == problem or (problem is not None and problem in (judged or ""))
    # Lag figures are shown only for a standby of this cluster on the primary's timeline.
    measured = problem is None or problem.startswith("lags")
    assert (replica.lag_bytes is not None) == measured
    assert (replica.lag_seconds is not None) == measured


def test_lag_in_seconds_counts_from_when_the_primary_first_had_the_missing_wal(
    replica_set: ReplicaSet,
) -> None:
    now = time.monotonic()
    replica_set._history.extend([(800, now - 30), (950, now - 20), (1_000, now - 5)])
    replica = replica_set.replicas[0]
    assert replica_set._judge(replica, _row(replay_lsn=1_000)) is None
    assert replica.lag_seconds == 0.0
    assert "lags by 20." in (replica_set._judge(replica, _row(replay_lsn=900)) or "")
    assert replica_set._judge(replica, _row(replay_lsn=960)) is None
    assert replica.lag_seconds is not None and 5 <= replica.lag_seconds < 10
