"""Where a GET /records/{id} spends its CPU, layer by layer, with the app called in process.

Each rung calls an ASGI app directly (no HTTP server, no client sockets) for a number of
GETs at a fixed concurrency, against a PostgreSQL database that holds records (a database
``bench/run.py --keep-database`` left, or any migrated and loaded one), and reports the cost
per request. Every rung adds one layer to the one before:

- ``quart-floor``: a one-route Quart app on an asyncpg pool: what any Quart app pays;
- ``routes``: the service's app (its own app class, ``service/asgi.py``), routes and
  schemas, without request hooks and without a session; the row is fetched with asyncpg on
  a pool of its own. It can cost less than ``quart-floor``: the app class skips per-request
  work that stock Quart does;
- ``session``: plus the per-request ``AsyncSession`` (opened in ``before_request``, removed
  at teardown); the row is still fetched with asyncpg, on the session's connection;
- ``sqlalchemy``: plus the statement run by SQLAlchemy Core instead of asyncpg;
- ``service``: plus every other request hook (metrics, request id, request log, body
  limit, auth): the service as served, minus the HTTP server.

Timings on a shared machine swing by tens of percent between identical runs, so by default
each rung runs under valgrind (cachegrind) and the figure is CPU instructions per request,
exact to about 1 % from run to run; ``--time`` reports CPU microseconds instead::

    python bench/ladder.py --database-url postgresql://postgres@127.0.0.1:5432/bench_xxx
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parent.parent
RUNGS = ("quart-floor", "routes", "session", "sqlalchemy", "service")
ASGIApp = Any  # Quart, as an ASGI callable


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="PostgreSQL with records")
    parser.add_argument("--requests", type=int, default=600, help="GETs per measured batch")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--time", action="store_true", help="CPU µs instead of instructions")
    parser.add_argument("--rungs", default=",".join(RUNGS), help="comma-separated subset")
    parser.add_argument("--rung", help=argparse.SUPPRESS)  # the child process: one rung
    parser.add_argument("--batches", type=int, default=1, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# -- the child: one rung, some batches of requests ------------------------------------------


def build(rung: str, url: str, pool_size: int) -> ASGIApp:
    """The rung's ASGI app."""
    if rung == "quart-floor":
        return _quart_floor(pool_size)
    from service.app import create_app
    from service.db import get_database
    from service.queries import records as queries
    from service.routes import records as routes

    app = create_app(
        {
            "DATABASE_URL": url,
            "DB_POOL_SIZE": pool_size,
            "DB_MAX_OVERFLOW": 0,
            "LOG_LEVEL": "WARNING",
            "API_TOKENS": "ladder",
        }
    )
    if rung == "service":
        return app
    # Keep only the Database's hooks: the session opened before the request, removed after.
    database = get_database(app)
    before = app.before_request_funcs[None]
    before[:] = [hook for hook in before if getattr(hook, "__self__", None) is database]
    app.after_request_funcs[None].clear()
    if rung == "sqlalchemy":
        return app
    if rung == "session":
        read = _read_on_the_sessions_connection()
    else:
        before.clear()
        app.teardown_request_funcs[None].clear()
        setattr(routes, "current_session", lambda: None)  # noqa: B010 - the route gets None
        read = _read_on_a_pool(_pool_opened_at_startup(app, pool_size))
    setattr(queries, "read_record", read)  # noqa: B010 - monkeypatching, on purpose
    return app


def _pool_opened_at_startup(app: Any, pool_size: int) -> list[Any]:
    """A list that holds an asyncpg pool on DATABASE_URL once ``app`` has started."""
    import asyncpg

    from bench.peers.common import plain_url

    pool: list[asyncpg.Pool] = []

    async def connect() -> None:
        pool.append(await asyncpg.create_pool(plain_url(), max_size=pool_size))

    app.before_serving(connect)
    return pool


def _read_on_the_sessions_connection() -> Callable[..., Any]:
    """read_record with the statement sent by asyncpg on the session's connection."""
    from bench.peers.raw_app import RECORD_BY_ID, _record
    from service.schemas.records import RecordPublic

    async def read_record(session: Any, record_id: int) -> RecordPublic:
        connection = await (await session.connection()).get_raw_connection()
        row = await connection.driver_connection.fetchrow(RECORD_BY_ID, record_id)
        return RecordPublic.model_validate(_record(row))

    return read_record


def _read_on_a_pool(pool: list[Any]) -> Callable[..., Any]:
    """read_record with the statement sent by asyncpg on a pool of its own (no session)."""
    from bench.peers.raw_app import RECORD_BY_ID, _record
    from service.schemas.records import RecordPublic

    async def read_record(_session: None, record_id: int) -> RecordPublic:
        row = await pool[0].fetchrow(RECORD_BY_ID, record_id)
        return RecordPublic.model_validate(_record(row))

    return read_record


def _quart_floor(pool_size: int) -> ASGIApp:
    import orjson
    from quart import Quart, Response

    from bench.peers.raw_app import RECORD_BY_ID, _record

    app = Quart(__name__)
    pool = _pool_opened_at_startup(app, pool_size)

    @app.get("/records/<int:record_id>")
    async def get(record_id: int) -> Response:
        row = await pool[0].fetchrow(RECORD_BY_ID, record_id)
        body = orjson.dumps(_record(row), option=orjson.OPT_UTC_Z)
        return Response(body, content_type="application/json")

    return app


async def get(app: ASGIApp, record_id: int) -> None:
    path = f"/records/{record_id}"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost"), (b"user-agent", b"ladder")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
        "extensions": {},
    }
    messages = [{"type": "http.request", "body": b"", "more_body": False}]
    statuses = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client never leaves
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, send)
    if statuses != [200]:
        raise SystemExit(f"GET {path} answered {statuses}")


async def child(options: argparse.Namespace) -> None:
    import asyncpg

    from bench.peers.common import plain_url
    from service.collector import tune_collector_for_serving

    connection = await asyncpg.connect(plain_url())
    rows = await connection.fetch("SELECT id FROM records ORDER BY random() LIMIT 2000")
    await connection.close()
    ids = [row["id"] for row in rows]
    if not ids:
        raise SystemExit("the database has no records")
    app = build(options.rung, options.database_url, options.concurrency)
    tune_collector_for_serving()  # as in the served process, for every rung alike
    startup, shutdown = asyncio.Queue[dict[str, Any]](), asyncio.Queue[dict[str, Any]]()
    await startup.put({"type": "lifespan.startup"})
    lifespan = asyncio.ensure_future(app({"type": "lifespan"}, startup.get, shutdown.put))
    assert (await shutdown.get())["type"] == "lifespan.startup.complete"

    async def batch(requests: int) -> None:
        async def client(count: int) -> None:
            for _ in range(count):
                await get(app, random.choice(ids))

        share = requests // options.concurrency
        await asyncio.gather(*(client(share) for _ in range(options.concurrency)))

    await batch(max(200, options.requests // 2))  # warm-up: pool, caches, prepared statements
    started = time.process_time()
    for _ in range(options.batches):
        await batch(options.requests)
    cpu = time.process_time() - started
    await startup.put({"type": "lifespan.shutdown"})
    await shutdown.get()
    await lifespan
    served = options.batches * (options.requests // options.concurrency) * options.concurrency
    print(json.dumps({"cpu_us": cpu / served * 1e6, "requests": served}))


# -- the parent: every rung in its own process -----------------------------------------------


def run_rung(options: argparse.Namespace, rung: str, batches: int, *, valgrind: bool) -> float:
    """CPU µs per request, or (valgrind) the total instructions of the whole process."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        f"--database-url={options.database_url}",
        f"--requests={options.requests}",
        f"--concurrency={options.concurrency}",
        f"--rung={rung}",
        f"--batches={batches}",
    ]
    if valgrind:
        command = ["valgrind", "--tool=cachegrind", "--cache-sim=no",
                   "--cachegrind-out-file=/dev/null", *command]  # fmt: skip
    # The child and the peers' helpers it borrows read the database from the environment.
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY), "DATABASE_URL": options.database_url}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPOSITORY)
    if done.returncode != 0:
        raise SystemExit(f"rung {rung} failed:\n{done.stdout}\n{done.stderr[-3000:]}")
    if not valgrind:
        figures: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
        return figures["cpu_us"]
    refs = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if refs is None:
        raise SystemExit(f"no instruction count from valgrind:\n{done.stderr}")
    return float(refs.group(1).replace(",", ""))


def per_request(options: argparse.Namespace, rung: str) -> float:
    if options.time:
        return min(run_rung(options, rung, 3, valgrind=False) for _ in range(3))
    # Two runs that differ only in the number of measured batches: the difference is the
    # cost of the extra requests alone, without start-up, imports and warm-up.
    one = run_rung(options, rung, 1, valgrind=True)
    three = run_rung(options, rung, 3, valgrind=True)
    served = 2 * (options.requests // options.concurrency) * options.concurrency
    return float((three - one) / served)


def main(argv: list[str] | None = None) -> None:
    options = parse_args(argv)
    if options.rung:
        import uvloop  # the service's event loop (hypercorn.toml)

        uvloop.run(child(options))
        return
    if not options.time and shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind), or use --time")
    unit = "CPU µs" if options.time else "instructions"
    print(f"GET /records/{{id}} in process, concurrency {options.concurrency}, {unit} per request")
    previous = None
    for rung in options.rungs.split(","):
        cost = per_request(options, rung)
        step = "" if previous is None else f"  ({cost - previous:+,.0f})"
        print(f"{rung:12s} {cost:>12,.0f}{step}", flush=True)
        previous = cost


if __name__ == "__main__":
    main()
