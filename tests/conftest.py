"""Fixtures: every database test runs on SQLite and PostgreSQL, isolated from the others.

- ``app``: the service on a shared database per backend, each test inside an outer
  transaction that requests join through savepoints and that is rolled back at the end;
- ``real_app``: the service on a fresh database of its own with a real engine and pool, for
  behaviour a rollback fixture cannot show (pools, cancellation, concurrency, commits);
- ``replication``: a PostgreSQL primary with two streaming hot standbys of the session's own
  (``replicas``: the same, put back as it was after the test).

With TEST_POSTGRES_REPLICA_URL (a synchronous standby of the server at TEST_POSTGRES_URL, see
scripts/test-replicas.sh), the service under test reads from that standby too.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client
from sqlalchemy.engine import make_url

from service.app import create_app
from service.db import get_database
from tests.databases import (
    Databases,
    PostgresDatabases,
    SQLiteDatabases,
    fresh_database,
    in_a_thread,
)
from tests.pgcluster import postgres_binaries_missing
from tests.replication import Replication
from tests.waiting import HANG_GUARD_SECONDS

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ALL_BACKENDS = ("sqlite", "postgresql")
BACKENDS = tuple(
    name for name in os.environ.get("TEST_BACKENDS", ",".join(ALL_BACKENDS)).split(",") if name
)
REPLICA_URL = os.environ.get("TEST_POSTGRES_REPLICA_URL", "")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with its tier: reliability, e2e (marked by hand, or using the
    ``replication`` cluster), integration or unit.

    ``scripts/test.sh --fast`` runs the unit and integration tiers alone.
    """
    for item in items:
        if "reliability" in item.path.parts:
            if item.get_closest_marker("e2e") is not None:
                raise pytest.UsageError(f"{item.nodeid}: a reliability test is not also e2e")
            item.add_marker(pytest.mark.reliability)
        elif "replication" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)
        elif item.get_closest_marker("e2e") is None:
            tier = "integration" if "backend" in getattr(item, "fixturenames", ()) else "unit"
            item.add_marker(tier)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" not in metafunc.fixturenames:
        return
    backends = list(BACKENDS)
    for only in ALL_BACKENDS:
        if metafunc.definition.get_closest_marker(f"{only}_only"):
            backends = [name for name in backends if name == only]
    metafunc.parametrize("backend", backends)


def _started_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    # asyncio's default executor threads end with the test's event loop.
    return [
        thread
        for thread in threading.enumerate()
        if thread not in before and not thread.name.startswith("asyncio_")
    ]


@pytest.fixture(autouse=True)
async def nothing_left_running() -> AsyncIterator[None]:
    """Fail a test that leaves a task or a thread (a SQLite connection's) running after it.

    Torn down after every other fixture of the test, while its event loop still runs: a
    thread that outlived the loop would fail a later test ("Event loop is closed").
    """
    threads_before = set(threading.enumerate())
    tasks_before = asyncio.all_tasks()
    yield
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() - tasks_before if task is not current]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=HANG_GUARD_SECONDS)
    threads = _started_threads(threads_before)
    # A connection closed at the very end may still be leaving its thread.
    for thread in threads:
        await asyncio.to_thread(thread.join, HANG_GUARD_SECONDS)
    assert not tasks, f"the test left tasks running: {tasks}"
    assert not [thread for thread in threads if thread.is_alive()], (
        f"the test left threads running: {threads}"
    )


@pytest.fixture(scope="session")
def sqlite_databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SQLiteDatabases]:
    directory = tmp_path_factory.mktemp("sqlite")
    databases = in_a_thread(lambda: SQLiteDatabases(directory))
    yield databases
    in_a_thread(databases.close)


@pytest.fixture(scope="session")
def postgresql_databases() -> Iterator[PostgresDatabases]:
    try:
        databases = in_a_thread(PostgresDatabases)
    except OSError as error:
        pytest.fail(
            f"PostgreSQL is not reachable at TEST_POSTGRES_URL ({error}); start it, "
            "or run with TEST_BACKENDS=sqlite",
            pytrace=False,
        )
    yield databases
    in_a_thread(databases.close)


@pytest.fixture
def databases(backend: str, request: pytest.FixtureRequest) -> Databases:
    found: Databases = request.getfixturevalue(f"{backend}_databases")
    return found


def settings_for(database_url: str, **overrides: Any) -> dict[str, Any]:
    settings = {"DATABASE_URL": database_url, "API_TOKENS": TOKEN}
    if REPLICA_URL and make_url(database_url).get_backend_name() == "postgresql":
        settings["DATABASE_REPLICA_URLS"] = replica_url_for(database_url)
    return {**settings, **overrides}


def replica_url_for(database_url: str) -> str:
    """The same database on the standby at TEST_POSTGRES_REPLICA_URL."""
    database = make_url(database_url).database
    replica = make_url(REPLICA_URL).set(drivername="postgresql+asyncpg", database=database)
    return replica.render_as_string(hide_password=False)


@pytest.fixture
async def database_url(databases: Databases) -> AsyncIterator[str]:
    """A fresh, migrated database of this test's own."""
    async with fresh_database(databases) as url:
        yield url


@pytest.fixture
async def app(databases: Databases) -> AsyncIterator[Quart]:
    """The service on the shared database; the test's writes are rolled back at its end."""
    app = create_app(settings_for(databases.shared_url))
    db = get_database(app)
    async with app.test_app():
        connection = await db.engine.connect()
        transaction = await connection.begin()
        db.join_transaction(connection)
        try:
            yield app
        finally:
            await transaction.rollback()
            await connection.close()


@pytest.fixture
async def real_app(database_url: str) -> AsyncIterator[Quart]:
    """The service with a real engine and pool on a database of its own."""
    app = create_app(settings_for(database_url))
    async with app.test_app():
        yield app


@pytest.fixture(scope="session")
def replication() -> Iterator[Replication]:
    """A primary with two asynchronous streaming hot standbys, made once for the session."""
    if postgres_binaries_missing() and os.environ.get("CI") != "true":
        pytest.skip("initdb/pg_ctl not found (install postgresql, or set PG_BIN)")
    replication = Replication(2).up()
    yield replication
    replication.remove()


@pytest.fixture
def replicas(replication: Replication) -> Iterator[Replication]:
    """The session's replication, every standby running, replaying and caught up after the
    test whatever it paused or stopped."""
    yield replication
    for standby in replication.standbys:
        if not standby.running:
            replication.start_standby(standby)
        if replication.replay_paused(standby):
            replication.resume_replay(standby)
    replication.wait_caught_up()


@pytest.fixture
def client(app: Quart) -> Client:
    return app.test_client()
