"""What a newcomer meets first: the run command, and helpful messages when something is off."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from quart.typing import TestClientProtocol as Client

from service.app import create_app
from tests.conftest import settings_for
from tests.databases import Databases
from tests.live import REPO_ROOT, free_port


def _import_app(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import service.serve"],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_URL", "postgresql+psycopg2://user@localhost/db"),
        ("DATABASE_URL", "mysql://user@localhost/db"),
        ("DB_POOL_SIZE", "lots"),
        ("LOG_LEVEL", "LOUD"),
    ],
)
def test_a_bad_setting_stops_start_up_with_one_line(variable: str, value: str) -> None:
    result = _import_app(**{variable: value})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0], result.stderr


async def test_an_unmigrated_database_says_what_to_run(
    databases: Databases, caplog: pytest.LogCaptureFixture
) -> None:
    url = await databases.create(migrated=False)
    try:
        app = create_app(settings_for(url))
        with caplog.at_level(logging.WARNING, logger="service.routes.meta"):
            async with app.test_app():
                response = await app.test_client().get("/records")
                assert response.status_code == 503
                assert "alembic upgrade head" in (await response.get_json())["detail"]
        assert any("alembic upgrade head" in r.getMessage() for r in caplog.records)
    finally:
        await databases.drop(url)


async def test_a_write_without_token_says_how_to_authenticate(client: Client) -> None:
    response = await client.post("/countries", json={"name": "X"})
    assert "Authorization: Bearer" in (await response.get_json())["detail"]


async def test_no_tokens_configured_is_named(databases: Databases) -> None:
    app = create_app(settings_for(databases.shared_url, API_TOKENS=""))
    async with app.test_app():
        response = await app.test_client().post("/countries", json={"name": "X"})
    assert "API_TOKENS" in (await response.get_json())["detail"]


@pytest.mark.e2e
@pytest.mark.sqlite_only
def test_serve_script_runs_migrated_and_prints_its_address(tmp_path: Path, backend: str) -> None:
    port = free_port()
    env = {**os.environ, "PORT": str(port), "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/s.db"}
    server = subprocess.Popen(
        ["scripts/serve.sh"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        for line in server.stdout:
            if "listening on" in line:
                assert f"http://127.0.0.1:{port}" in line
                break
        else:
            pytest.fail("scripts/serve.sh never said where it listens")
        ready = _wait_for(f"http://127.0.0.1:{port}/ready")
        assert ready.json() == {"status": "ready", "database": "ok", "migrations": "head"}
    finally:
        server.terminate()
        server.wait(timeout=20)
        if server.stdout is not None:
            server.stdout.close()


@pytest.mark.e2e
@pytest.mark.sqlite_only
def test_serve_script_names_a_port_in_use(backend: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            ["scripts/serve.sh"],
            cwd=REPO_ROOT,
            env={**os.environ, "PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 1
    assert f"port {port}" in result.stderr and "in use" in result.stderr


def _wait_for(url: str, timeout: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=2)
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
