"""Hypercorn in a subprocess serving any app module, with its worker process at hand.

``tests.live.live_server`` serves ``service.app:app`` only; the pool-exhaustion test needs
``tests.slow_app:app`` and the soak needs the worker's pid (Hypercorn runs each worker as a
child process of its own, spawned by multiprocessing).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.conftest import TOKEN
from tests.live import REPO_ROOT, free_port

# What a healthy server never logs, whatever its clients do.
LOG_PROBLEMS = (
    "SAWarning",
    "Future exception was never retrieved",
    "Task was destroyed but it is pending",
    "Traceback",
)


@dataclass
class Server:
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
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"spawn_main" in cmdline:
                return pid
        raise RuntimeError(f"no worker process under {self.process.pid}")


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


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


@contextmanager
def hypercorn(
    database_url: str,
    log: Path,
    *,
    app: str = "service.app:app",
    worker_class: str = "asyncio",
    **settings: str,
) -> Iterator[Server]:
    """Serve ``app`` with one Hypercorn worker on a free port until the block ends."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "API_TOKENS": TOKEN,
        "LOG_LEVEL": "WARNING",
        **settings,
    }
    command = [
        *(sys.executable, "-m", "hypercorn", "--worker-class", worker_class),
        *("--bind", f"127.0.0.1:{port}", app),
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=sink, stderr=sink)
    server = Server(f"http://127.0.0.1:{port}", port, process, log)
    try:
        _wait_until_up(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_up(server: Server, timeout: float = 30) -> None:
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
