"""The real server for the reliability suite: one Hypercorn worker, the suite's token.

Any app module (the pool-exhaustion test serves ``tests.slow_app:app``) on either worker
class; the soak reads the worker's memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import TOKEN
from tests.live import LiveServer, live_server


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


@contextmanager
def hypercorn(
    database_url: str,
    log: Path,
    *,
    app: str = "service.serve:app",
    worker_class: str = "asyncio",
    **settings: str,
) -> Iterator[LiveServer]:
    """Serve ``app`` with one Hypercorn worker of ``worker_class`` until the block ends."""
    with live_server(
        database_url,
        log,
        app=app,
        options=("--worker-class", worker_class),
        **{"API_TOKENS": TOKEN, **settings},
    ) as server:
        yield server
