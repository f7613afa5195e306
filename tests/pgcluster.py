"""A throwaway PostgreSQL cluster (initdb in a temporary directory) that a test may stop and
start at will, as scripts/stack.sh makes one: run as ``postgres`` when we are root."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.live import free_port

PG_ROOT = Path("/usr/lib/postgresql")


def find_pg_bin() -> Path | None:
    """The directory of initdb and pg_ctl: PG_BIN, else the newest /usr/lib/postgresql/*/bin."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(PG_ROOT.glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


def postgres_binaries_missing() -> bool:
    pg_bin = find_pg_bin()
    return pg_bin is None or not (pg_bin / "initdb").exists()


def needs_postgres_binaries() -> pytest.MarkDecorator:
    """Skip without initdb/pg_ctl, except in CI (CI=true), where that must fail instead."""
    return pytest.mark.skipif(
        postgres_binaries_missing() and os.environ.get("CI") != "true",
        reason="initdb/pg_ctl not found (install postgresql, or set PG_BIN)",
    )


class Cluster:
    """initdb (or a base backup), pg_ctl start/stop, and removal of one cluster on a free port.

    ``directory``: where its files go (created; by default a new temporary directory).
    """

    def __init__(self, directory: Path | None = None, port: int | None = None) -> None:
        pg_bin = find_pg_bin()
        assert pg_bin is not None, "initdb and pg_ctl not found; set PG_BIN"
        self.pg_bin = pg_bin
        self.port = port or free_port()
        if directory is None:
            directory = Path(tempfile.mkdtemp(prefix="reliability-pg-"))
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.data = self.directory / "data"
        self.log = self.directory / "postgres.log"
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            shutil.chown(self.directory, "postgres", "postgres")
            self._as_postgres = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url_for(self, database: str, driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://postgres@{self.address}/{database}"

    def _run(self, program: str, *args: str, timeout: float = 60) -> None:
        command = [*self._as_postgres, str(self.pg_bin / program), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{program} failed:\n{result.stdout}\n{result.stderr}")

    def init(self) -> None:
        self._run(
            "initdb", "--pgdata", str(self.data), "--username", "postgres", "--auth", "trust",
            "--encoding", "UTF8", "--no-sync",
        )  # fmt: skip

    def base_backup_of(self, primary: Cluster, application_name: str) -> None:
        """A standby of ``primary``: its files streamed by pg_basebackup (-R: standby.signal
        and primary_conninfo), replication connections named ``application_name``."""
        self._run(
            "pg_basebackup", "--pgdata", str(self.data), "--host", "127.0.0.1",
            "--port", str(primary.port), "--username", "postgres", "--wal-method", "stream",
            "--write-recovery-conf", "--checkpoint", "fast", "--no-sync",
            timeout=300,
        )  # fmt: skip
        conninfo = f"host=127.0.0.1 port={primary.port} user=postgres"
        self.configure(f"primary_conninfo = '{conninfo} application_name={application_name}'")

    def configure(self, *lines: str, file: str = "postgresql.auto.conf") -> None:
        """Append settings to a configuration file of the data directory (the last one wins)."""
        path = self.data / file
        with path.open("a") as config:
            config.write("".join(f"{line}\n" for line in lines))

    def start(self, *settings: str) -> None:
        """Start and wait until it accepts connections (a standby: until it is up)."""
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        options += "".join(f" -c {setting}" for setting in settings)
        self._run(
            "pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-o", options
        )

    def start_refusing_connections(self) -> None:
        """Start as a standby without hot standby: the postmaster runs and answers every
        connection with SQLSTATE 57P03 (cannot_connect_now), as any cluster does while it
        starts up or recovers, until :meth:`promote` ends the recovery."""
        signal = self.data / "standby.signal"
        signal.touch()
        if self._as_postgres:
            shutil.chown(signal, "postgres", "postgres")
        self.start("hot_standby=off")

    def promote(self) -> None:
        self._run("pg_ctl", "promote", "-D", str(self.data), "-w")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w")

    def send_signal(self, signum: signal.Signals) -> None:
        """Send ``signum`` to the postmaster and every process it started (SIGSTOP freezes
        the whole server: it accepts connections and answers nothing)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(postmaster)], capture_output=True, text=True
        ).stdout.split()
        for pid in [postmaster, *map(int, children)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def query(self, sql: str, database: str = "postgres", timeout: float = 60) -> str:
        """Run ``sql`` with psql; its result, unaligned and without headers (one row a line)."""
        command = [
            str(self.pg_bin / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
            "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database,
            "-c", sql,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"psql on {self.address} failed: {sql}\n{result.stderr}")
        return result.stdout.strip()

    def remove(self) -> None:
        """Stop the cluster if it runs (immediate), then delete its files."""
        if self.running:
            try:
                self.stop("immediate")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.directory, ignore_errors=True)
