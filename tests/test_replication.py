"""tests/replication.py itself: real streaming replication between local clusters, paused,
stopped, caught up and failed over; and its command line as CI uses it."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.databases import in_a_thread
from tests.live import REPO_ROOT
from tests.pgcluster import Cluster, needs_postgres_binaries
from tests.replication import Replication

pytestmark = [pytest.mark.e2e, needs_postgres_binaries()]


def _count(node: Cluster, database: str = "postgres") -> int:
    return int(node.query("SELECT count(*) FROM replicated", database))


def test_a_paused_standby_lags_and_catches_up_on_resume(replicas: Replication) -> None:
    primary, (paused, live) = replicas.primary, replicas.standbys
    primary.query("DROP TABLE IF EXISTS replicated; CREATE TABLE replicated (n int)")
    primary.query("INSERT INTO replicated VALUES (1)")
    replicas.wait_caught_up()
    assert replicas.lag_bytes(paused) == 0

    replicas.pause_replay(paused)
    primary.query("INSERT INTO replicated SELECT generate_series(2, 1000)")
    replicas.wait_caught_up(live)
    assert (_count(paused), _count(live)) == (1, 1000)
    assert replicas.lag_bytes(paused) > 0

    replicas.resume_replay(paused)
    replicas.wait_caught_up(paused)
    assert _count(paused) == 1000
    assert replicas.lag_bytes(paused) == 0


def test_a_stopped_standby_catches_up_with_what_it_missed(replicas: Replication) -> None:
    primary, standby = replicas.primary, replicas.standbys[1]
    primary.query("DROP TABLE IF EXISTS replicated; CREATE TABLE replicated (n int)")
    replicas.stop_standby(standby)
    assert replicas.running_standbys() == replicas.standbys[:1]
    primary.query("INSERT INTO replicated SELECT generate_series(1, 500)")

    replicas.start_standby(standby)
    replicas.wait_caught_up(standby)
    assert _count(standby) == 500


def test_a_created_database_is_migrated_and_on_every_standby(replicas: Replication) -> None:
    name = f"replicated_{os.getpid()}"
    url = in_a_thread(lambda: replicas.create_database(name))  # Alembic runs its own loop
    try:
        assert url == replicas.primary_url(name)
        for standby in replicas.standbys:
            assert standby.query("SELECT count(*) FROM countries", name) == "0"
            assert standby.query("SELECT count(*) FROM alembic_version", name) == "1"
    finally:
        replicas.drop_database(name)


async def test_a_promoted_synchronous_standby_has_every_acknowledged_write() -> None:
    with Replication(1, synchronous=True) as replication:
        old_primary, standby = replication.primary, replication.standbys[0]
        old_primary.query("CREATE TABLE replicated (n int)")
        for n in range(1, 21):  # each acknowledged only once the standby applied it
            old_primary.query(f"INSERT INTO replicated VALUES ({n})")
            assert _count(standby) == n

        replication.kill_primary()
        assert replication.promote(standby) is standby
        assert replication.primary is standby and replication.standbys == []
        standby.query("INSERT INTO replicated VALUES (21)")  # no standby left to wait for
        assert _count(standby) == 21

        # The multi-host URL finds the writable node, past the dead one listed first.
        engine = create_async_engine(replication.multi_host_url())
        try:
            async with engine.connect() as connection:
                in_recovery = await connection.scalar(text("SELECT pg_is_in_recovery()"))
                port = await connection.scalar(text("SELECT current_setting('port')"))
        finally:
            await engine.dispose()
        assert (in_recovery, int(port)) == (False, standby.port)
    assert not replication.directory.exists()


@pytest.fixture
def cli_dir() -> Iterator[Path]:
    # Not under pytest's tmp_path: as root, the clusters run as `postgres`, which must reach it.
    parent = Path(tempfile.mkdtemp(prefix="replication-cli-"))
    parent.chmod(0o755)
    yield parent / "cluster"
    subprocess.run([*CLI, "down", "--dir", str(parent / "cluster")], capture_output=True)
    parent.rmdir()


CLI = [sys.executable, "-m", "tests.replication"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )


def test_the_command_line_brings_a_synchronous_pair_up_and_down(cli_dir: Path) -> None:
    up = _cli("up", "--replicas", "1", "--synchronous", "--dir", str(cli_dir))
    assert up.returncode == 0, up.stderr
    env = dict(line.split("=", 1) for line in up.stdout.splitlines())
    assert sorted(env) == [
        "TEST_POSTGRES_REPLICA_URL", "TEST_POSTGRES_REPLICA_URLS", "TEST_POSTGRES_URL",
    ]  # fmt: skip
    assert env["TEST_POSTGRES_REPLICA_URLS"] == env["TEST_POSTGRES_REPLICA_URL"]

    replication = Replication.load(cli_dir)
    assert env["TEST_POSTGRES_URL"].endswith(f"@{replication.primary.address}/postgres")
    replication.primary.query("CREATE TABLE replicated (n int); INSERT INTO replicated VALUES (1)")
    assert _count(replication.standbys[0]) == 1  # remote_apply: there as soon as committed

    again = _cli("up", "--dir", str(cli_dir))
    assert again.returncode != 0 and "already up" in again.stderr

    down = _cli("down", "--dir", str(cli_dir))
    assert down.returncode == 0, down.stderr
    assert not cli_dir.exists()
    assert not [node for node in replication.nodes if _accepts_connections(node)]


def _accepts_connections(node: Cluster) -> bool:
    ready = subprocess.run(
        [str(node.pg_bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(node.port)]
    )
    return ready.returncode == 0
