"""``hypercorn service.app:app``, the ASGI path the HTTP contract names, serves the service,
and the same path stops on a bad setting with one line and a non-zero status."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import TOKEN
from tests.live import REPO_ROOT, free_port, live_server

CONTRACT_PATH = "service.app:app"


@pytest.mark.e2e
@pytest.mark.parametrize(
    "workers",
    [(), ("--workers", "0")],
    ids=["worker process", "main process (--workers 0)"],
)
def test_hypercorn_serves_the_contracts_asgi_path(
    database_url: str, tmp_path: Path, workers: tuple[str, ...]
) -> None:
    log = tmp_path / "server.log"
    with live_server(
        database_url, log, app=CONTRACT_PATH, options=workers, API_TOKENS=TOKEN
    ) as server:
        ready = httpx.get(f"{server.url}/ready")
        created = httpx.post(
            f"{server.url}/countries",
            json={"name": "Served by service.app:app"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        # A token the environment does not hold: the app read the test's settings, not defaults.
        refused = httpx.post(
            f"{server.url}/countries",
            json={"name": "Refused"},
            headers={"Authorization": "Bearer not-a-token"},
        )
        assert server.problems() == {}
    assert ready.json() == {"status": "ready", "database": "ok", "migrations": "head"}
    assert created.status_code == 201, created.text
    assert refused.status_code == 401


@pytest.mark.e2e
def test_a_bad_setting_stops_the_contracts_asgi_path_with_one_line() -> None:
    command = [
        *(sys.executable, "-m", "hypercorn", "--config", "hypercorn.toml"),
        *("--bind", f"127.0.0.1:{free_port()}", CONTRACT_PATH),
    ]
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": "sqlite+aiosqlite:///unused.db"}
    done = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env={**env, "DB_POOL_SIZE": "abc"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode != 0, lines
    assert len(lines) == 1, lines
    assert "configuration error" in lines[0] and "DB_POOL_SIZE" in lines[0], lines
