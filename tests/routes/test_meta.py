"""The operational routes: index, health, readiness, docs, and CORS."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client
from sqlalchemy import text

from service import __version__
from service.app import create_app
from service.db import get_database
from service.routes.meta import head_revisions
from tests.conftest import settings_for
from tests.databases import Databases

UNREACHABLE_URL = "postgresql+asyncpg://nobody@127.0.0.1:1/none"
ALLOWED = "https://allowed.example"


def _local_url(tmp_path: Path) -> str:
    """A SQLite file that the routes under test never open."""
    return f"sqlite+aiosqlite:///{tmp_path / 'untouched.db'}"


@pytest.fixture
async def local_app(tmp_path: Path) -> AsyncIterator[Quart]:
    app = create_app(settings_for(_local_url(tmp_path)))
    async with app.test_app():
        yield app


@pytest.fixture
async def unreachable_app() -> AsyncIterator[Quart]:
    """The service pointed at a port where no database listens."""
    app = create_app(settings_for(UNREACHABLE_URL, DB_POOL_TIMEOUT=1))
    async with app.test_app():
        yield app


async def test_index_links_every_resource(local_app: Quart) -> None:
    response = await local_app.test_client().get("/")
    assert response.status_code == 200
    body = await response.get_json()
    assert body["name"] == "SARS records API"
    assert body["version"] == __version__
    assert set(body["links"].values()) == {
        "/countries",
        "/records",
        "/sources",
        "/stats",
        "/docs",
        "/openapi.json",
        "/health",
        "/ready",
        "/metrics",
    }


async def test_health_needs_no_database(unreachable_app: Quart) -> None:
    response = await unreachable_app.test_client().get("/health")
    assert response.status_code == 200
    assert (await response.get_json()) == {"status": "ok"}


async def test_ready_is_503_quickly_when_the_database_is_unreachable(
    unreachable_app: Quart,
) -> None:
    started = time.monotonic()
    response = await unreachable_app.test_client().get("/ready")
    assert time.monotonic() - started < 3
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.headers["Content-Type"] == "application/problem+json"
    assert (await response.get_json())["detail"] == "database: unavailable"


async def test_ready_on_a_migrated_database(real_app: Quart) -> None:
    response = await real_app.test_client().get("/ready")
    assert response.status_code == 200
    body = await response.get_json()
    assert {key: body.pop(key) for key in ("status", "database", "migrations")} == {
        "status": "ready",
        "database": "ok",
        "migrations": "head",
    }
    # With read replicas configured, and only then, the replicas' health is added.
    replicas = get_database(real_app).replicas is not None
    assert set(body) == ({"replicas", "degraded"} if replicas else set())


async def test_ready_in_the_rollback_fixture(client: Client) -> None:
    assert (await client.get("/ready")).status_code == 200


async def test_ready_names_migrations_when_the_schema_is_behind(databases: Databases) -> None:
    url = await databases.create(migrated=False)
    head = ", ".join(head_revisions())
    try:
        app = create_app(settings_for(url))
        async with app.test_app():
            client = app.test_client()
            response = await client.get("/ready")
            assert response.status_code == 503
            assert response.headers["Retry-After"] == "1"
            detail = (await response.get_json())["detail"]
            assert detail.startswith(
                f"migrations: database at none, head is {head}; run `alembic upgrade head`"
            )

            async with get_database(app).session_scope(commit=True) as session:
                await session.execute(
                    text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
                )
                await session.execute(text("INSERT INTO alembic_version VALUES ('0000')"))
            response = await client.get("/ready")
            assert response.status_code == 503
            detail = (await response.get_json())["detail"]
            assert detail.startswith(f"migrations: database at 0000, head is {head};")
    finally:
        await databases.drop(url)


async def test_docs_work_offline(local_app: Quart) -> None:
    client = local_app.test_client()
    response = await client.get("/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = await response.get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert assets
    for asset in assets:
        assert asset.startswith("/docs/static/"), asset
        assert (await client.get(asset)).status_code == 200, asset
    assert "://" not in page


def _cors_app(tmp_path: Path, origins: str) -> Quart:
    return create_app(settings_for(_local_url(tmp_path), CORS_ORIGINS=origins))


async def test_cors_for_an_allowed_origin(tmp_path: Path) -> None:
    app = _cors_app(tmp_path, f"{ALLOWED}, https://other.example")
    async with app.test_app():
        response = await app.test_client().get("/health", headers={"Origin": ALLOWED})
        assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
        exposed = {
            h.strip().lower() for h in response.headers["Access-Control-Expose-Headers"].split(",")
        }
        assert exposed == {
            "consistency-token",
            "etag",
            "location",
            "link",
            "x-request-id",
            "retry-after",
        }


async def test_cors_preflight(tmp_path: Path) -> None:
    app = _cors_app(tmp_path, ALLOWED)
    async with app.test_app():
        response = await app.test_client().options(
            "/countries",
            headers={
                "Origin": ALLOWED,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "Authorization, Content-Type",
            },
        )
        assert response.status_code == 200
        assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
        methods = response.headers["Access-Control-Allow-Methods"]
        expected = set("GET HEAD OPTIONS POST PUT PATCH DELETE".split())
        assert {m.strip() for m in methods.split(",")} == expected
        allowed_headers = response.headers["Access-Control-Allow-Headers"].lower()
        assert {h.strip() for h in allowed_headers.split(",")} == {"authorization", "content-type"}


async def test_cors_ignores_other_origins(tmp_path: Path) -> None:
    app = _cors_app(tmp_path, ALLOWED)
    async with app.test_app():
        response = await app.test_client().get(
            "/health", headers={"Origin": "https://evil.example"}
        )
        assert response.status_code == 200
        assert "Access-Control-Allow-Origin" not in response.headers


async def test_no_cors_headers_without_origins(tmp_path: Path) -> None:
    app = _cors_app(tmp_path, "")
    async with app.test_app():
        client = app.test_client()
        simple = await client.get("/health", headers={"Origin": ALLOWED})
        preflight = await client.options(
            "/countries", headers={"Origin": ALLOWED, "Access-Control-Request-Method": "POST"}
        )
        for response in (simple, preflight):
            assert not [
                name
                for name in response.headers.keys()
                if name.lower().startswith("access-control-")
            ]


@pytest.mark.postgresql_only
async def test_ready_gives_up_within_the_pool_timeout(databases: Databases) -> None:
    """A database that answers nothing (here: a migration holding its lock) is a quick 503."""
    url = await databases.create()
    try:
        app = create_app(settings_for(url, DB_POOL_TIMEOUT=1))
        async with app.test_app(), get_database(app).session_scope() as locker:
            await locker.execute(text("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE"))
            started = time.monotonic()
            response = await app.test_client().get("/ready")
            assert time.monotonic() - started < 3
            assert response.status_code == 503
            assert (await response.get_json())["detail"] == "database: unavailable"
            await locker.rollback()
            assert (await app.test_client().get("/ready")).status_code == 200
    finally:
        await databases.drop(url)
