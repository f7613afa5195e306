"""Graceful shutdown of the real server: Hypercorn with hypercorn.toml, SIGTERM mid-traffic.

Requests in flight finish, new connections get no answer, the process exits 0, and the
engine's pool is closed: no PostgreSQL backend of the service outlives it.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import tomllib
from contextlib import AbstractContextManager
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.gate import StatementGate
from tests.live import REPO_ROOT, LiveServer, live_server
from tests.waiting import HANG_GUARD_SECONDS, until

pytestmark = [pytest.mark.e2e, pytest.mark.postgresql_only]

GRACEFUL_TIMEOUT = float(
    tomllib.loads((REPO_ROOT / "hypercorn.toml").read_text())["graceful_timeout"]
)
# Time for the lifespan shutdown (disposing of the pool) and the main process to follow.
EXIT_MARGIN = 5.0
SLOW_REQUESTS = 4


def served(database_url: str, log: Path, *options: str) -> AbstractContextManager[LiveServer]:
    """Hypercorn as deployed (hypercorn.toml, one worker) serving tests/slow_app.py."""
    return live_server(
        database_url,
        log,
        app="tests.slow_app:app",
        options=("--config", "hypercorn.toml", *options),
    )


async def _backends(database_url: str, where: str = "true") -> int:
    """Connections to the test's database other than this one (pg_stat_activity)."""
    url = make_url(database_url).set(drivername="postgresql")
    connection = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        count: int = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            f" WHERE datname = current_database() AND pid <> pg_backend_pid() AND ({where})"
        )
        return count
    finally:
        await connection.close()


async def _wait_for_backends(database_url: str, count: int, where: str = "true") -> int:
    """Poll until exactly ``count`` backends match (or a hang guard passes); return the last
    count."""
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while (found := await _backends(database_url, where)) != count:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    return found


async def _no_answer(url: str) -> bool:
    """Whether a new connection gets no HTTP response (refused, reset or silent)."""
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            await client.get(f"{url}/health")
    except httpx.TransportError:
        return True
    return False


async def _exit_status(process: subprocess.Popen[bytes], within: float) -> int | None:
    """The exit status, or None if the process still runs after ``within`` seconds."""
    try:
        return await asyncio.to_thread(process.wait, max(within, 0))
    except subprocess.TimeoutExpired:
        return None


async def test_sigterm_lets_requests_in_flight_finish_then_closes_the_pool(
    database_url: str, tmp_path: Path
) -> None:
    gate = StatementGate(database_url)
    with served(database_url, tmp_path / "hypercorn.log") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=HANG_GUARD_SECONDS) as client:
            async with gate:
                params = {"key": gate.key}
                slow = [
                    asyncio.create_task(client.get("/blocked", params=params))
                    for _ in range(SLOW_REQUESTS)
                ]
                await gate.wait_until_blocked(SLOW_REQUESTS)
                server.process.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                # New connections go unanswered while the requests in flight still wait.
                await until(lambda: _no_answer(server.url), "a connection after SIGTERM refused")
                assert not any(request.done() for request in slow)
            responses = await asyncio.gather(*slow)
            drained = time.monotonic() - signalled

        assert [response.status_code for response in responses] == [200] * SLOW_REQUESTS
        assert all(response.json() == {"released": gate.key} for response in responses)
        assert drained < GRACEFUL_TIMEOUT
        status = await _exit_status(server.process, GRACEFUL_TIMEOUT + EXIT_MARGIN - drained)
        assert status == 0, server.output()
        assert time.monotonic() - signalled < GRACEFUL_TIMEOUT + EXIT_MARGIN
    assert await _wait_for_backends(database_url, 0) == 0


async def test_a_request_longer_than_the_grace_period_is_cut_and_its_backend_freed(
    database_url: str, tmp_path: Path
) -> None:
    grace = 1
    options = ("--graceful-timeout", str(grace))
    with served(database_url, tmp_path / "hypercorn.log", *options) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            slow = asyncio.create_task(client.get("/slow", params={"seconds": 20}))
            assert await _wait_for_backends(database_url, 1, "state = 'active'") == 1
            server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            try:
                cut: int | None = (await slow).status_code
            except httpx.TransportError:
                cut = None  # the connection closed without a response

        # Hypercorn cancels the request and answers a bare 500 in its place (0.18).
        assert cut in (500, None)
        status = await _exit_status(server.process, grace + EXIT_MARGIN)
        assert status == 0, server.output()
        assert time.monotonic() - signalled < grace + EXIT_MARGIN
    # The cancelled query was cancelled on the server too, and its connection closed.
    assert await _wait_for_backends(database_url, 0) == 0
