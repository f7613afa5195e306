"""503 with Retry-After, never a hang or a 500, when the database is out of reach."""

from __future__ import annotations

import asyncio
import time

from quart import Quart

from service.app import create_app
from service.db import get_database
from tests import probe
from tests.conftest import settings_for
from tests.databases import Databases


def _unreachable_url(databases: Databases) -> str:
    if databases.name == "sqlite":
        return "sqlite+aiosqlite:////nonexistent-directory/sars.db"
    return "postgresql+asyncpg://postgres@127.0.0.1:1/none"


async def test_unreachable_database_is_503_quickly(databases: Databases) -> None:
    app = create_app(settings_for(_unreachable_url(databases), DB_POOL_TIMEOUT=1))
    async with app.test_app():
        client = app.test_client()
        for path in ("/records", "/countries/1", "/stats", "/ready"):
            started = time.monotonic()
            response = await client.get(path)
            assert time.monotonic() - started < 2.5, path
            assert response.status_code == 503, path
            assert response.headers["Retry-After"] == "1"
            assert response.headers["Content-Type"] == "application/problem+json"
        assert (await client.get("/health")).status_code == 200
        assert get_database(app).open_sessions == 0


async def _exhausted_pool_app(database_url: str) -> Quart:
    app = create_app(
        settings_for(database_url, DB_POOL_SIZE=1, DB_MAX_OVERFLOW=0, DB_POOL_TIMEOUT=0.05)
    )
    probe.install(app)
    return app


async def test_exhausted_pool_is_503_then_recovers(database_url: str) -> None:
    app = await _exhausted_pool_app(database_url)
    async with app.test_app():
        client = app.test_client()
        holder = asyncio.create_task(client.get("/probe/slow"))
        await asyncio.sleep(0.05)  # the slow request now holds the only connection
        started = time.monotonic()
        refused = await client.get("/records")
        assert time.monotonic() - started < 1.5
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert (await holder).status_code == 200
        assert (await client.get("/records")).status_code == 200
        db = get_database(app)
        await db.wait_for_closes()
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
