"""A PostgreSQL primary with streaming hot standbys on free local ports, for tests and CI.

The primary streams its WAL (wal_level=replica) to standbys made by ``pg_basebackup -R -X
stream``; each standby connects with an application_name of its own (``standby-1``, ...).
Asynchronous by default; ``synchronous=True`` makes every commit wait until a standby has
applied it (synchronous_standby_names='*', synchronous_commit=remote_apply): whatever the
primary acknowledged is visible on a standby at once, and survives the primary's loss.

From the command line (CI runs the whole suite once against such a cluster)::

    python -m tests.replication up --replicas 1 --dir D [--synchronous]   # prints env lines
    python -m tests.replication down --dir D
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from tests.pgcluster import Cluster, find_pg_bin

STATE_FILE = "replication.json"
# A guard against a hang, not an expectation: replication on an idle machine takes milliseconds.
WAIT_GUARD_SECONDS = 120.0


def wait_for(
    condition: Callable[[], bool], what: str, timeout: float = WAIT_GUARD_SECONDS
) -> None:
    """Return once ``condition()`` holds; fail naming ``what`` if it does not within timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout:g} s: {what}")
        time.sleep(0.05)


class Replication:
    """A primary and ``replicas`` streaming hot standbys under one directory.

    :meth:`up` builds and starts them, :meth:`remove` stops them and deletes every file; as a
    context manager, both. After :meth:`promote`, ``primary`` is the promoted standby and
    ``standbys`` the others; ``nodes`` keeps every cluster in the order they were made.
    """

    def __init__(
        self,
        replicas: int = 1,
        *,
        synchronous: bool = False,
        directory: Path | None = None,
        ports: Sequence[int] | None = None,
    ) -> None:
        if replicas < 1:
            raise ValueError("a replication needs at least one standby")
        self.directory = directory or Path(tempfile.mkdtemp(prefix="replication-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o755)  # the postgres user reaches the clusters below it
        self.synchronous = synchronous
        port_of = list(ports) if ports else [0] * (replicas + 1)
        self.primary = Cluster(self.directory / "primary", port_of[0] or None)
        self.standbys = [
            Cluster(self.directory / f"standby-{i}", port_of[i] or None)
            for i in range(1, replicas + 1)
        ]
        self.nodes = [self.primary, *self.standbys]

    # -- life cycle ------------------------------------------------------------------------

    def up(self) -> Replication:
        try:
            self._check_reachable()
            self._start_primary()
            for standby in self.standbys:
                standby.base_backup_of(self.primary, self.name_of(standby))
                standby.start()
            for standby in self.standbys:
                self.wait_streaming(standby)
            self._save_state()
        except BaseException:
            self.remove()
            raise
        return self

    def _check_reachable(self) -> None:
        """As root, the clusters run as ``postgres``, which must reach the directory."""
        if os.geteuid() != 0:
            return
        probe = ["runuser", "-u", "postgres", "--", "test", "-x", str(self.directory)]
        if subprocess.run(probe).returncode != 0:
            raise PermissionError(
                f"the postgres user cannot reach {self.directory}; use a directory whose "
                "parents it may enter (e.g. mode 755)"
            )

    def _start_primary(self) -> None:
        self.primary.init()
        settings = [
            "wal_level = replica",
            "max_wal_senders = 10",
            "hot_standby = on",
            # A standby stopped for a while finds the WAL it missed still there.
            "wal_keep_size = '512MB'",
        ]
        if self.synchronous:
            settings += ["synchronous_standby_names = '*'", "synchronous_commit = remote_apply"]
        # In postgresql.conf, which standbys copy: ALTER SYSTEM on a promoted one overrides it.
        self.primary.configure(*settings, file="postgresql.conf")
        self.primary.configure("host replication all 127.0.0.1/32 trust", file="pg_hba.conf")
        self.primary.start()

    def remove(self) -> None:
        """Stop every cluster (immediate) and delete the directory."""
        for node in self.nodes:
            node.remove()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Replication:
        return self.up()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.remove()

    # -- addresses -------------------------------------------------------------------------

    @staticmethod
    def name_of(standby: Cluster) -> str:
        """The application_name a standby streams under (``standby-1``, ...)."""
        return standby.directory.name

    def primary_url(self, database: str = "postgres") -> str:
        return self.primary.url_for(database)

    def standby_urls(self, database: str = "postgres") -> list[str]:
        return [standby.url_for(database) for standby in self.standbys]

    def multi_host_url(self, database: str = "postgres") -> str:
        """Every node, for a client that connects to whichever is writable (libpq-style)."""
        hosts = "&".join(f"host={node.address}" for node in self.nodes)
        return f"postgresql+asyncpg://postgres@/{database}?{hosts}&target_session_attrs=read-write"

    # -- databases -------------------------------------------------------------------------

    def create_database(self, name: str, *, migrated: bool = True) -> str:
        """A new database on the primary (migrated to head: Alembic runs its own event loop, so
        call this from a thread without one), replayed by the running standbys; its URL."""
        from tests.databases import migrate  # Alembic, only for those who create databases

        self.primary.query(f'CREATE DATABASE "{name}"')
        url = self.primary_url(name)
        if migrated:
            migrate(url)
        self.wait_caught_up()
        return url

    def drop_database(self, name: str) -> None:
        self.primary.query(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # -- WAL positions ---------------------------------------------------------------------

    def current_lsn(self) -> str:
        return self.primary.query("SELECT pg_current_wal_lsn()")

    def replay_lsn(self, standby: Cluster) -> str:
        return standby.query("SELECT pg_last_wal_replay_lsn()")

    def lag_bytes(self, standby: Cluster) -> int:
        """How far the standby's replay is behind the primary's WAL, in bytes."""
        replayed = self.replay_lsn(standby)
        return int(
            self.primary.query(f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{replayed}')")
        )

    def wait_replayed(
        self, lsn: str, standby: Cluster | None = None, timeout: float = WAIT_GUARD_SECONDS
    ) -> None:
        """Wait until the standby (default: every running one) has replayed up to ``lsn``."""
        for node in [standby] if standby else self.running_standbys():
            wait_for(
                functools.partial(self.has_replayed, node, lsn),
                f"{self.name_of(node)} replays up to {lsn}",
                timeout,
            )

    @staticmethod
    def has_replayed(standby: Cluster, lsn: str) -> bool:
        return standby.query(f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'") == "t"

    def wait_caught_up(self, standby: Cluster | None = None) -> None:
        """Wait until the standby (default: every running one) has replayed all the primary's
        WAL written so far."""
        self.wait_replayed(self.current_lsn(), standby)

    def running_standbys(self) -> list[Cluster]:
        return [standby for standby in self.standbys if standby.running]

    def wait_streaming(self, standby: Cluster) -> None:
        name = self.name_of(standby)
        wait_for(
            lambda: (
                self.primary.query(
                    "SELECT count(*) FROM pg_stat_replication "
                    f"WHERE application_name = '{name}' AND state = 'streaming'"
                )
                == "1"
            ),
            f"{name} streams from the primary",
        )

    # -- control ---------------------------------------------------------------------------

    def pause_replay(self, standby: Cluster) -> None:
        """Stop applying WAL on the standby (it still receives it): it lags from now on.

        On a synchronous cluster this holds every commit until :meth:`resume_replay`.
        """
        standby.query("SELECT pg_wal_replay_pause()")
        wait_for(
            lambda: standby.query("SELECT pg_get_wal_replay_pause_state()") == "paused",
            f"replay paused on {self.name_of(standby)}",
        )

    def resume_replay(self, standby: Cluster) -> None:
        standby.query("SELECT pg_wal_replay_resume()")
        wait_for(
            lambda: standby.query("SELECT pg_get_wal_replay_pause_state()") == "not paused",
            f"replay resumed on {self.name_of(standby)}",
        )

    def replay_paused(self, standby: Cluster) -> bool:
        return standby.query("SELECT pg_get_wal_replay_pause_state()") != "not paused"

    def stop_standby(self, standby: Cluster) -> None:
        standby.stop("fast")

    def start_standby(self, standby: Cluster) -> None:
        """Start a stopped standby and wait until it streams again."""
        standby.start()
        self.wait_streaming(standby)

    def kill_primary(self) -> None:
        """Stop the primary at once, as a crash would (no shutdown checkpoint)."""
        self.primary.stop("immediate")

    def promote(self, standby: Cluster) -> Cluster:
        """Make ``standby`` the primary (``pg_promote``), writable on return.

        No other standby follows it, so a synchronous cluster's new primary waits for none
        (it would wait for ever otherwise).
        """
        if standby.query("SELECT pg_promote(true, 60)") != "t":
            raise RuntimeError(f"{self.name_of(standby)} was not promoted within 60 s")
        if self.synchronous:
            standby.query("ALTER SYSTEM SET synchronous_standby_names = ''")
            standby.query("SELECT pg_reload_conf()")
        self.standbys.remove(standby)
        self.primary = standby
        return standby

    # -- state for the command line --------------------------------------------------------

    def _save_state(self) -> None:
        state = {
            "pg_bin": str(self.primary.pg_bin),
            "synchronous": self.synchronous,
            "ports": [node.port for node in self.nodes],
        }
        (self.directory / STATE_FILE).write_text(json.dumps(state))

    @classmethod
    def load(cls, directory: Path) -> Replication:
        """The replication that ``up`` left running in ``directory``."""
        state = json.loads((directory / STATE_FILE).read_text())
        ports = state["ports"]
        return cls(
            len(ports) - 1, synchronous=state["synchronous"], directory=directory, ports=ports
        )

    def environment(self) -> dict[str, str]:
        """What the test suite reads to run against this cluster (tests/conftest.py)."""
        plain = [node.url_for("postgres", driver="postgresql") for node in self.standbys]
        return {
            "TEST_POSTGRES_URL": self.primary.url_for("postgres", driver="postgresql"),
            "TEST_POSTGRES_REPLICA_URL": plain[0],
            "TEST_POSTGRES_REPLICA_URLS": ",".join(plain),
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.replication",
        description="A PostgreSQL primary with streaming hot standbys on free local ports.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="build and start; print the suite's environment")
    up.add_argument("--replicas", type=int, default=1, help="standbys (default 1)")
    up.add_argument("--dir", type=Path, required=True, help="where the clusters live")
    up.add_argument(
        "--synchronous", action="store_true", help="commits wait until a standby applied them"
    )
    down = commands.add_parser("down", help="stop every cluster and delete the directory")
    down.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)

    directory: Path = args.dir.resolve()
    if args.command == "up":
        if find_pg_bin() is None:
            parser.error("initdb and pg_ctl not found (install postgresql, or set PG_BIN)")
        if args.replicas < 1:
            parser.error("--replicas needs a number >= 1")
        if (directory / STATE_FILE).exists():
            parser.error(f"a replication is already up in {directory}")
        try:
            replication = Replication(
                args.replicas, synchronous=args.synchronous, directory=directory
            ).up()
        except (PermissionError, RuntimeError, TimeoutError) as error:
            print(f"replication: {error}", file=sys.stderr)
            return 1
        for key, value in replication.environment().items():
            print(f"{key}={value}")
        return 0
    if not (directory / STATE_FILE).exists():
        print(f"no replication in {directory}", file=sys.stderr)
        return 0
    Replication.load(directory).remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
