"""Request logs and slow-statement logs: the figures are there, the secrets are not."""

from __future__ import annotations

import logging

import orjson
import pytest

from service.app import create_app
from service.logs import JSONFormatter
from tests.conftest import AUTH, TOKEN, settings_for
from tests.databases import Databases


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
