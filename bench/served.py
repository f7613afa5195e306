"""What a request costs the service as served: Hypercorn included, counted in instructions.

The service runs under Hypercorn (its ``hypercorn.toml``, one worker, no access log) inside
valgrind; this script is the client, sending keep-alive HTTP/1.1 requests over loopback
from 16 connections. Twice: once with a few hundred requests, once with a thousand more.
The difference in the server's instruction count, divided by the extra requests, is what
one request costs the server process: HTTP parsing, Quart, the session, SQLAlchemy,
asyncpg and the event loop, without start-up or warm-up. Endpoints: GET /records/{id} (random
ids), a list page (``/records?country=NAME&limit=50``) and POST /records, which writes:
each POST creates a record, in countries named ``served-<run>-<n>``. It repeats to about 2 %, where
requests per second on a shared machine swing by tens of per cent, so it shows what a
small change buys. PostgreSQL's own work is not counted (another process).

Give git revisions to compare them side by side (each is checked out in a temporary
worktree); without one, the working tree is measured::

    python -m bench.served --database-url postgresql://postgres@127.0.0.1:5432/bench_xxx
    python -m bench.served --database-url ... --rev HEAD~1 --rev HEAD --endpoints get,list

With ``--replica-url`` (a hot standby of the database's cluster), each revision is measured a
second time with that replica configured, reads routed to it: what routing costs a request.
Its health check then runs once, before the requests (``REPLICA_CHECK_INTERVAL`` is an hour):
its cost is per second and per worker, not per request.

The database must hold records (see ``bench/ladder.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import asyncpg
import orjson

from bench.run import free_port, hypercorn_config

REPOSITORY = Path(__file__).resolve().parent.parent
CONCURRENCY = 16
FEW, MORE = 300, 1300  # requests per run; list pages cost about two GETs: a third of that
ENDPOINTS = ("get", "list", "post")
TOKEN = "served"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="PostgreSQL with records")
    parser.add_argument("--rev", action="append", default=[], help="git revision (repeatable)")
    parser.add_argument("--endpoints", default=",".join(ENDPOINTS), help="get,list,post")
    parser.add_argument("--replica-url", help="a hot standby: also measure with it configured")
    return parser.parse_args(argv)


async def sample_paths(database_url: str) -> dict[str, list[str]]:
    """Paths of each endpoint: random record ids, and countries with at least a page."""
    connection = await asyncpg.connect(database_url)
    try:
        ids = await connection.fetch("SELECT id FROM records ORDER BY random() LIMIT 2000")
        names = await connection.fetch(
            "SELECT c.name FROM countries c JOIN records r ON r.country_id = c.id "
            "GROUP BY c.name HAVING count(*) >= 50 ORDER BY c.name LIMIT 50"
        )
    finally:
        await connection.close()
    if not ids or not names:
        raise SystemExit("the database needs records, and a country with 50 of them")
    return {
        "get": [f"/records/{row['id']}" for row in ids],
        "list": [f"/records?country={quote(row['name'])}&limit=50" for row in names],
    }


def requests_of(endpoint: str, paths: dict[str, list[str]]) -> Callable[[], bytes]:
    """A maker of the endpoint's requests: GETs of random sample paths, or POSTs that each
    create a record (a new country every 300 dates, named after this run: no conflicts)."""
    chooser = random.Random(2003)
    if endpoint != "post":
        sample = paths[endpoint]
        return lambda: f"GET {chooser.choice(sample)} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    run = uuid.uuid4().hex[:12]
    made = itertools.count()

    def post() -> bytes:
        n = next(made)
        day = dt.date(2003, 1, 1) + dt.timedelta(days=n % 300)
        body = orjson.dumps({"country": f"served-{run}-{n // 300}", "date": day, "cases": 1})
        head = (
            "POST /records HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    return post


async def send_requests(port: int, make_request: Callable[[], bytes], count: int) -> None:
    """``count`` requests over CONCURRENCY keep-alive connections; each must succeed."""
    left = count

    async def connection() -> None:
        nonlocal left
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while left > 0:
            left -= 1
            request = make_request()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not re.match(rb"HTTP/1.1 20[01] ", head):
                raise SystemExit(f"{request.split()[1]!r} answered {head[:60]!r}")
            length = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
            assert length is not None, head
            await reader.readexactly(int(length.group(1)))
        writer.close()

    await asyncio.gather(*(connection() for _ in range(CONCURRENCY)))


def served_app(tree: Path) -> str:
    """The served app of ``tree``: revisions before service/serve.py served service.app:app."""
    return "service.serve:app" if (tree / "service" / "serve.py").is_file() else "service.app:app"


def instructions(
    tree: Path,
    database_url: str,
    make_request: Callable[[], bytes],
    count: int,
    replica_url: str | None = None,
) -> int:
    """The server's instruction count over its whole life, having served ``count`` requests."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="served-") as scratch:
        out = Path(scratch) / "cachegrind.out"
        command = [
            "valgrind", "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={out}",
            sys.executable, "-m", "hypercorn", "--config",
            str(hypercorn_config(Path(scratch), tree)), "--workers", "0",
            "--bind", f"127.0.0.1:{port}", served_app(tree),
        ]  # fmt: skip
        env = {
            **os.environ,
            "PYTHONPATH": str(tree),
            "DATABASE_URL": database_url.replace("postgresql://", "postgresql+asyncpg://", 1),
            "LOG_LEVEL": "WARNING",
            "API_TOKENS": TOKEN,
            "DB_POOL_SIZE": str(CONCURRENCY),
            "DB_MAX_OVERFLOW": "0",
            "PYTHONHASHSEED": "0",
        }
        if replica_url is not None:
            env["DATABASE_REPLICA_URLS"] = replica_url
            env["REPLICA_CHECK_INTERVAL"] = "3600"
        log = Path(scratch) / "server.log"
        with log.open("wb") as stderr:
            server = subprocess.Popen(command, cwd=tree, env=env, stdout=stderr, stderr=stderr)
        try:
            if not is_up(server, port):
                raise SystemExit(f"the server did not start:\n{log.read_text()[-3000:]}")
            if replica_url is not None and not replica_takes_reads(port):
                raise SystemExit(f"the replica takes no reads:\n{log.read_text()[-3000:]}")
            asyncio.run(send_requests(port, make_request, count))
        finally:
            server.send_signal(signal.SIGINT)  # a graceful stop: valgrind writes its counts
            server.wait(timeout=300)
        found = re.search(r"^summary: (\d+)", out.read_text(), re.MULTILINE)
        if found is None:
            raise SystemExit(f"no instruction count from valgrind:\n{log.read_text()[-3000:]}")
        return int(found.group(1))


def is_up(server: subprocess.Popen[bytes], port: int) -> bool:
    """Whether the server answers /health within 300 s (imports under valgrind are slow)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and server.poll() is None:
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read()
            return True
        time.sleep(0.5)
    return False


def replica_takes_reads(port: int) -> bool:
    """Whether /ready names the replica healthy within 60 s (its first check runs at start)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5).read()
            ready = orjson.loads(body)
            if ready.get("replicas") and not ready["degraded"]:
                return True
        time.sleep(0.5)
    return False


def per_request(
    tree: Path,
    database_url: str,
    endpoint: str,
    paths: dict[str, list[str]],
    replica_url: str | None = None,
) -> float:
    few, more = (FEW // 3, MORE // 3) if endpoint == "list" else (FEW, MORE)
    make_request = requests_of(endpoint, paths)
    served_more = instructions(tree, database_url, make_request, more, replica_url)
    served_few = instructions(tree, database_url, make_request, few, replica_url)
    return (served_more - served_few) / (more - few)


@contextlib.contextmanager
def checkout(rev: str | None) -> Iterator[Path]:
    """The working tree, or ``rev`` in a temporary git worktree."""
    if rev is None:
        yield REPOSITORY
        return
    with tempfile.TemporaryDirectory(prefix="served-tree-") as scratch:
        tree = Path(scratch) / "tree"
        _git("worktree", "add", "--detach", str(tree), rev)
        try:
            yield tree
        finally:
            _git("worktree", "remove", "--force", str(tree))


def _git(*args: str) -> None:
    subprocess.run(["git", *args], cwd=REPOSITORY, check=True, capture_output=True)


def main(argv: list[str] | None = None) -> None:
    options = parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    endpoints = options.endpoints.split(",")
    paths = asyncio.run(sample_paths(options.database_url))
    revisions: list[str | None] = options.rev or [None]
    print(f"instructions per request of the server process (Hypercorn), c={CONCURRENCY}")
    print(f"{'revision':14s}" + "".join(f"{endpoint:>14s}" for endpoint in endpoints))
    first: list[float] = []
    replica_urls = [None] if options.replica_url is None else [None, options.replica_url]
    for rev in revisions:
        with checkout(rev) as tree:
            # Revisions from before read replicas are measured without.
            routes = (tree / "service" / "replicas.py").is_file()
            for replica_url in replica_urls if routes else [None]:
                costs = [
                    per_request(tree, options.database_url, endpoint, paths, replica_url)
                    for endpoint in endpoints
                ]
                cells = "".join(f"{cost:>14,.0f}" for cost in costs)
                if first:
                    cells += "   " + " ".join(
                        f"{(cost - base) / base:+.1%}"
                        for cost, base in zip(costs, first, strict=True)
                    )
                first = first or costs
                label = (rev or "working tree") + (" +replica" if replica_url else "")
                print(f"{label:14s}{cells}", flush=True)


if __name__ == "__main__":
    main()
