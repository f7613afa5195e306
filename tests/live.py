"""Run the real service under Hypercorn in a subprocess, for tests that need a real server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.compat.quart import LOST_CANCEL

REPO_ROOT = Path(__file__).resolve().parent.parent


def needs_commands(*commands: str) -> pytest.MarkDecorator:
    """Skip when a command is missing (scripts/system-packages.sh installs them) - except in
    CI (CI=true), where a missing command must fail the test rather than hide it."""
    missing = [command for command in commands if shutil.which(command) is None]
    return pytest.mark.skipif(
        bool(missing) and os.environ.get("CI") != "true",
        reason=f"{', '.join(missing)} not installed (run scripts/system-packages.sh as root)",
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# What a healthy server never logs, whatever its clients do.
LOG_PROBLEMS = (
    "SAWarning",
    "Future exception was never retrieved",
    "Task was destroyed but it is pending",
    "Traceback",
    LOST_CANCEL,
)


@dataclass
class LiveServer:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    host = "127.0.0.1"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def problems(self, patterns: tuple[str, ...] = LOG_PROBLEMS) -> dict[str, int]:
        """How many times each pattern occurs in the server's log (only those that do)."""
        text = self.output()
        return {pattern: text.count(pattern) for pattern in patterns if pattern in text}

    def worker_pid(self) -> int:
        """The pid of the (single) Hypercorn worker: the multiprocessing child of the server."""
        for pid in _children(self.process.pid):
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        raise RuntimeError(f"no worker process under {self.process.pid}")


@contextmanager
def live_server(
    database_url: str,
    log: Path,
    *,
    app: str = "service.serve:app",
    options: tuple[str, ...] = (),
    **settings: str,
) -> Iterator[LiveServer]:
    """Hypercorn (with ``options``) serving ``app`` on a free port until the block ends."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING", **settings}
    command = [
        *(sys.executable, "-m", "hypercorn", *options),
        *("--bind", f"127.0.0.1:{port}", app),
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=sink, stderr=sink)
    server = LiveServer(f"http://127.0.0.1:{port}", port, process, log)
    try:
        _wait_until_up(server)
        yield server
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_until_up(server: LiveServer, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited early:\n{server.output()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"the server did not answer in {timeout} s:\n{server.output()}")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command may hold spaces and parentheses: fields start after the last ')'.
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found
