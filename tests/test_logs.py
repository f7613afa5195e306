"""Request logs and slow-statement logs: the figures are there, the secrets are not."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.engine.events import ConnectionEvents
from sqlalchemy.exc import DBAPIError

from service.app import create_app
from service.db import Database
from service.logs import JSONFormatter
from service.settings import load_settings
from tests.conftest import AUTH, TOKEN, settings_for
from tests.databases import Databases, migrate
from tests.live import REPO_ROOT, live_server


async def test_one_line_per_request_with_its_figures(
    databases: Databases, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings_for(databases.shared_url))
    async with app.test_app():
        client = app.test_client()
        with caplog.at_level(logging.INFO, logger="service.request"):
            await client.get("/countries/12345", headers={"X-Request-ID": "trace-1"})
            await client.get("/health")
    lines = [r for r in caplog.records if r.name == "service.request"]
    assert len(lines) == 2
    first = lines[0].__dict__
    assert (first["request_id"], first["method"], first["status"]) == ("trace-1", "GET", 404)
    assert first["route"] == "/countries/<id:country_id>"
    # SQLite counts the BEGIN the engine emits itself; asyncpg sends it outside the cursor.
    assert first["queries"] == (2 if databases.name == "sqlite" else 1)
    assert first["duration_ms"] >= 0
    assert lines[1].__dict__["queries"] == 0
    entry = orjson.loads(JSONFormatter().format(lines[0]))
    assert entry["request_id"] == "trace-1" and entry["status"] == 404


async def test_no_token_or_parameter_value_reaches_the_logs(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings_for(database_url, DB_ECHO=True, SLOW_QUERY_MS=0.001))
    secret_name = "Secret Valley 8f3a"
    async with app.test_app():
        with caplog.at_level(logging.DEBUG):
            response = await app.test_client().post(
                "/countries", json={"name": secret_name}, headers=AUTH
            )
            assert response.status_code == 201
            duplicate = await app.test_client().post(
                "/countries", json={"name": secret_name}, headers=AUTH
            )
            assert duplicate.status_code == 409
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "INSERT INTO countries" in text  # the echo and the slow-statement log are on
    assert any(r.name == "service.slow_query" for r in caplog.records)
    assert TOKEN not in text
    assert secret_name not in text


async def test_every_statement_is_counted_and_timed(
    databases: Databases, caplog: pytest.LogCaptureFixture
) -> None:
    database = Database(load_settings(settings_for(databases.shared_url, SLOW_QUERY_MS=0.001)))
    async with database:
        with caplog.at_level(logging.WARNING, logger="service.slow_query"):
            async with database.engine.connect() as connection:
                # The first statement also brings the dialect's own (and SQLite's BEGIN).
                await connection.exec_driver_sql("SELECT 1")  # do_execute_no_params
                before = database.statements.total
                await connection.execute(text("SELECT 1 WHERE 1 = :x"), {"x": 1})  # do_execute
                await connection.exec_driver_sql("CREATE TEMPORARY TABLE numbers (x integer)")
                insert = text("INSERT INTO numbers (x) VALUES (:x)")
                await connection.execute(insert, [{"x": 1}, {"x": 2}, {"x": 3}])  # executemany
                assert (await connection.scalar(text("SELECT count(*) FROM numbers"))) == 3
                assert database.statements.total == before + 4
                with pytest.raises(DBAPIError):
                    await connection.exec_driver_sql("SELECT * FROM no_such_table")
                assert database.statements.total == before + 5
    slow = [r.__dict__["statement"] for r in caplog.records if r.name == "service.slow_query"]
    assert "SELECT * FROM no_such_table" in slow
    assert len(slow) == database.statements.total


async def test_statement_watch_leaves_connections_off_the_event_path(
    databases: Databases,
) -> None:
    # A single connection event makes SQLAlchemy dispatch events on every checkout, begin,
    # commit and rollback of every connection; on PostgreSQL the service needs none.
    database = Database(load_settings(settings_for(databases.shared_url)))
    async with database:
        dispatch = database.engine.sync_engine.dispatch
        listened = {name for name in _CONNECTION_EVENTS if getattr(dispatch, name)}
    assert listened == ({"begin"} if databases.name == "sqlite" else set())


_CONNECTION_EVENTS = [
    name for name in dir(ConnectionEvents) if not name.startswith("_") and name != "dispatch"
]


async def test_pool_lines_log_under_sqlalchemy_not_the_service(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(load_settings(settings_for(database_url)))
    pool = db.engine.sync_engine.pool
    with caplog.at_level(logging.INFO):
        async with db.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        await db.dispose()
    assert isinstance(pool.logger, logging.Logger)
    assert pool.logger.name == f"sqlalchemy.pool.impl.{type(pool).__name__}"
    service_lines = [r.getMessage() for r in caplog.records if r.name.startswith("service")]
    assert not [line for line in service_lines if "Pool" in line], service_lines


@pytest.mark.e2e
@pytest.mark.sqlite_only
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_served_by_hypercorn_each_request_and_event_is_one_line(
    backend: str, tmp_path: Path, log_format: str
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path}/logs.db"
    migrate(database_url)
    request_ids = [f"one-line-{index}" for index in range(5)]
    options = ("--config", "hypercorn.toml", "--workers", "1")
    with live_server(
        database_url, tmp_path / "server.log", options=options, LOG_LEVEL="INFO",
        LOG_FORMAT=log_format,
    ) as server:  # fmt: skip
        for request_id in request_ids:
            response = httpx.get(f"{server.url}/countries", headers={"X-Request-ID": request_id})
            assert response.status_code == 200
    lines = server.output().splitlines()
    for request_id in request_ids:
        assert sum(request_id in line for line in lines) == 1, lines
    # Logged by the worker before it served /health, which live_server waited for.
    assert sum("Running on" in line for line in lines) == 1, lines
    if log_format == "json":
        entries = [orjson.loads(line) for line in lines]
        assert {entry["logger"] for entry in entries} >= {"hypercorn.error", "service.request"}


@pytest.mark.e2e
@pytest.mark.sqlite_only
def test_migrations_log_json_when_asked(backend: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/migrated.db",
        "LOG_FORMAT": "json",
    }
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    entries = [orjson.loads(line) for line in result.stderr.splitlines()]
    assert any(entry["logger"].startswith("alembic") for entry in entries), entries


def test_json_lines_carry_rfc3339_utc_times_with_milliseconds() -> None:
    record = logging.makeLogRecord({"msg": "x", "created": 1_049_956_200.1234})
    entry = orjson.loads(JSONFormatter().format(record))
    assert entry["time"] == "2003-04-10T06:30:00.123Z"
