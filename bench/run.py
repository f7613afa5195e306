"""The service against its peers, on the same PostgreSQL and the same data, in one run.

    .venv/bin/python bench/run.py [--quick]

1. Creates a fresh database ``bench_<random>`` on ``--postgres`` (default 127.0.0.1:5432),
   migrates it (``alembic upgrade head``), loads the SARS CSV (``python -m service.load``) and
   a synthetic set (``quart generate-data``, 100,000 records by default), then VACUUM ANALYZE.
2. Starts each server in turn (the service under Hypercorn, the peers in ``bench/peers``, the
   service under uvicorn), checks that it serves the service's JSON, warms it up, and measures
   the three endpoints with wrk at each concurrency; servers alternate round by round so that
   drift (the machine is shared) hits them all alike. The median of the rounds is reported.
3. Measures the service's worker RSS before and after a 100,000-request run.
4. Puts PostgreSQL 2 ms away (bench/delay_proxy.py) and compares the service with Flask.
5. Writes bench/RESULTS.md, bench/results.png and bench/results.json; drops the database.

The server runs on one core and wrk (and the delay proxy) on the other (``taskset``);
PostgreSQL is shared and not pinned. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import http.client
import importlib.metadata
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PYTHON = sys.executable


def shown(command: Sequence[str], workdir: Path) -> str:
    """A command line as RESULTS.md prints it: paths relative to the repository, the scratch
    directory as ``$WORKDIR``, so that it reads the same on any machine."""
    root = BENCH.parent
    python = Path(PYTHON).relative_to(root) if Path(PYTHON).is_relative_to(root) else "python"
    return shlex.join(
        str(python)
        if arg == PYTHON
        else arg.replace(str(workdir), "$WORKDIR").replace(f"{root}/", "")
        for arg in command
    )


SARS_CSV = (REPO / ".." / "shared" / "data" / "sars_2003.csv").resolve()
TOKEN = "bench-" + uuid.uuid4().hex
ENDPOINTS = ("get_record", "list_records", "create_record")
ENDPOINT_TITLES = {
    "get_record": "GET /records/{id}",
    "list_records": "GET /records?country=NAME&limit=50",
    "create_record": "POST /records",
}
MIB = 1024 * 1024


# -- settings -----------------------------------------------------------------------------


@dataclass
class Settings:
    quick: bool
    postgres: str
    rounds: int
    duration: float
    warmup: float
    concurrency: list[int]
    workers: int
    pool_size: int
    threads: int
    wrk_threads: int
    wrk_timeout: str
    countries: int
    days: int
    memory_requests: int
    memory_concurrency: int
    delay_ms: float
    delay_rounds: int
    delay_concurrency: int
    servers: list[str]
    server_cpus: str | None
    client_cpus: str | None
    skip_memory: bool
    skip_delay: bool
    skip_fixed_rate: bool
    fixed_rate_share: float
    fixed_rate_duration: float
    keep_database: bool
    output: Path


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        description="Benchmark the service against its peers (bench/README.md)."
    )
    parser.add_argument("--quick", action="store_true", help="short rounds, concurrency 16, 64")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rounds", type=int, help="rounds per server (default 5; quick 3)")
    parser.add_argument("--duration", type=float, help="seconds per wrk run (10; quick 2)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per endpoint (5; quick 1)")
    parser.add_argument("--concurrency", help="comma-separated (16,64,256; quick 16,64)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes per server")
    parser.add_argument("--pool-size", type=int, default=10, help="database pool per worker")
    parser.add_argument("--threads", type=int, help="gunicorn gthread threads (default: pool)")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--wrk-timeout", default="10s", help="slower responses are errors")
    parser.add_argument("--countries", type=int, default=200, help="synthetic countries")
    parser.add_argument("--days", type=int, default=500, help="synthetic days per country")
    parser.add_argument("--memory-requests", type=int, help="(100000; quick 20000)")
    parser.add_argument("--delay-ms", type=float, default=1.0, help="delay EACH way to PG")
    parser.add_argument("--delay-rounds", type=int, help="(default: --rounds)")
    parser.add_argument("--servers", help="comma-separated subset of " + ",".join(SERVERS))
    parser.add_argument("--server-cpus", default="0", help="taskset list for servers")
    parser.add_argument("--client-cpus", default="1", help="taskset list for wrk and proxy")
    parser.add_argument("--no-pin", action="store_true", help="no taskset at all")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-delay", action="store_true")
    parser.add_argument("--skip-fixed-rate", action="store_true")
    parser.add_argument(
        "--fixed-rate-share",
        type=float,
        default=0.7,
        help="open-loop rate as a share of the slowest server's c=64 req/s (0.7)",
    )
    parser.add_argument(
        "--fixed-rate-duration", type=float, help="seconds per open-loop run (10; quick 5)"
    )
    parser.add_argument("--keep-database", action="store_true", help="do not drop it at the end")
    parser.add_argument("--output", type=Path, default=BENCH, help="where RESULTS.md etc. go")
    args = parser.parse_args(argv)
    quick = args.quick
    concurrency = args.concurrency or ("16,64" if quick else "16,64,256")
    rounds = args.rounds or (3 if quick else 5)
    servers = args.servers.split(",") if args.servers else list(SERVERS)
    unknown = [name for name in servers if name not in SERVERS]
    if unknown or "service" not in servers:
        parser.error(f"--servers: unknown {unknown} (the service must be one of them)")
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    return Settings(
        quick=quick,
        postgres=args.postgres,
        rounds=rounds,
        duration=args.duration or (2.0 if quick else 10.0),
        warmup=args.warmup if args.warmup is not None else (1.0 if quick else 5.0),
        concurrency=[int(c) for c in concurrency.split(",")],
        workers=args.workers,
        pool_size=args.pool_size,
        threads=args.threads or args.pool_size,
        wrk_threads=args.wrk_threads,
        wrk_timeout=args.wrk_timeout,
        countries=args.countries,
        days=args.days,
        memory_requests=args.memory_requests or (20_000 if quick else 100_000),
        memory_concurrency=64,
        delay_ms=args.delay_ms,
        delay_rounds=args.delay_rounds or rounds,
        delay_concurrency=max(int(c) for c in concurrency.split(",")),
        servers=servers,
        server_cpus=args.server_cpus if pin else None,
        client_cpus=args.client_cpus if pin else None,
        skip_memory=args.skip_memory,
        skip_delay=args.skip_delay,
        skip_fixed_rate=args.skip_fixed_rate,
        fixed_rate_share=args.fixed_rate_share,
        fixed_rate_duration=args.fixed_rate_duration or (5.0 if quick else 10.0),
        keep_database=args.keep_database,
        output=args.output,
    )


# -- the servers --------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    name: str
    label: str
    command: Callable[[Settings, int, Path], list[str]]


def _hypercorn(app: str) -> Callable[[Settings, int, Path], list[str]]:
    def command(settings: Settings, port: int, config: Path) -> list[str]:
        return [
            PYTHON, "-m", "hypercorn", "--config", str(config), "--workers",
            str(settings.workers), "--bind", f"127.0.0.1:{port}", "--backlog", "2048", app,
        ]  # fmt: skip

    return command


def _uvicorn(app: str) -> Callable[[Settings, int, Path], list[str]]:
    def command(settings: Settings, port: int, _config: Path) -> list[str]:
        return [
            PYTHON, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port), "--workers",
            str(settings.workers), "--loop", "uvloop", "--http", "httptools", "--backlog",
            "2048", "--no-access-log", "--log-level", "warning", app,
        ]  # fmt: skip

    return command


def _gunicorn(settings: Settings, port: int, _config: Path) -> list[str]:
    return [
        PYTHON, "-m", "gunicorn", "--worker-class", "gthread", "--workers",
        str(settings.workers), "--threads", str(settings.threads), "--bind",
        f"127.0.0.1:{port}", "--backlog", "2048", "--log-level", "warning",
        "bench.peers.flask_app:app",
    ]  # fmt: skip


SERVERS = {
    server.name: server
    for server in (
        Server("service", "service (Quart, Hypercorn)", _hypercorn("service.serve:app")),
        Server("flask", "Flask + Flask-SQLAlchemy (gunicorn gthread)", _gunicorn),
        Server(
            "fastapi", "FastAPI + SQLAlchemy async (uvicorn)",
            _uvicorn("bench.peers.fastapi_app:app"),
        ),
        Server("raw", "bare ASGI + asyncpg (Hypercorn)", _hypercorn("bench.peers.raw_app:app")),
        Server("service-uvicorn", "service under uvicorn", _uvicorn("service.serve:app")),
    )
}  # fmt: skip


def hypercorn_config(directory: Path, tree: Path = REPO) -> Path:
    """The service's hypercorn.toml (``tree``'s, by default this checkout's) without its
    access log (no server here logs requests) and its logging configuration (a table, which
    the flat file written here cannot hold), written into ``directory``."""
    config = tomllib.loads((tree / "hypercorn.toml").read_text())
    config.pop("accesslog", None)
    config.pop("access_log_format", None)
    config.pop("logconfig_dict", None)
    config["loglevel"] = "WARNING"
    lines = [f"{key} = {json.dumps(value)}" for key, value in config.items()]
    path = directory / "hypercorn.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def pinned(cpus: str | None, command: list[str]) -> list[str]:
    return ["taskset", "-c", cpus, *command] if cpus else command


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Running:
    """A server started in a process group of its own; stopped through its main process."""

    def __init__(
        self, server: Server, settings: Settings, database_url: str, workdir: Path
    ) -> None:
        self.server = server
        self.port = free_port()
        self.command = server.command(settings, self.port, workdir / "hypercorn.toml")
        self.env = server_env(settings, database_url)
        self.log_path = workdir / f"{server.name}.log"
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            pinned(settings.server_cpus, self.command),
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, probe: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.server.name} exited; see {self.log_path}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, _, _ = request("127.0.0.1", self.port, "GET", probe)
                if status == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{self.server.name} not ready after {timeout} s; see {self.log_path}")

    def pids(self) -> list[int]:
        return [self.process.pid, *descendants(self.process.pid)]

    def worker_rss(self) -> list[int]:
        """RSS in bytes of each worker (the processes that serve; not masters or trackers)."""
        children = descendants(self.process.pid)
        workers = [pid for pid in children if "resource_tracker" not in cmdline(pid)]
        return [rss(pid) for pid in (workers or [self.process.pid])]

    def stop(self) -> None:
        """SIGTERM to the main process (Hypercorn's workers die at once on a group-wide
        SIGTERM), then SIGKILL to whichever of its processes are left, one by one."""
        group = self.process.pid
        members = descendants(group)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pid in members:
            with contextlib.suppress(OSError):
                if os.getpgid(pid) == group:  # still ours, not a recycled pid
                    os.kill(pid, signal.SIGKILL)


def server_env(settings: Settings, database_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(REPO),
        DATABASE_URL=database_url,
        API_TOKENS=TOKEN,
        DB_POOL_SIZE=str(settings.pool_size),
        DB_MAX_OVERFLOW="0",
        DB_POOL_TIMEOUT="10",
        LOG_LEVEL="WARNING",
        CURSOR_SECRET="bench-" + "x" * 32,
    )
    return env


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                parent = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    stack = list(children.get(pid, []))
    while stack:
        child = stack.pop()
        found.append(child)
        stack.extend(children.get(child, []))
    return found


def cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


def rss(pid: int, field_name: str = "VmRSS") -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    return 0


def request(
    host: str, port: int, method: str, path: str, body: Any = None
) -> tuple[int, dict[str, str], Any]:
    connection = http.client.HTTPConnection(host, port, timeout=30)
    headers = {}
    payload = None
    if body is not None:
        payload = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    try:
        connection.request(method, path, payload, headers)
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    parsed = json.loads(data) if data else None
    return response.status, {k.lower(): v for k, v in response.getheaders()}, parsed


# -- the database -------------------------------------------------------------------------


@dataclass
class Dataset:
    database: str
    url: str  # postgresql://... (no driver)
    records: int
    countries: int
    ids_file: Path
    names_file: Path
    sample_ids: list[int]
    sample_names: list[str]
    load_notes: list[str] = field(default_factory=list)


def with_database(url: str, database: str, *, driver: str | None = None) -> str:
    scheme, rest = url.split("://", 1)
    base = rest.rsplit("/", 1)[0] if "/" in rest else rest
    scheme = f"postgresql+{driver}" if driver else "postgresql"
    return f"{scheme}://{base}/{database}"


def admin(settings: Settings, sql: str) -> None:
    with psycopg.connect(settings.postgres, autocommit=True) as connection:
        connection.execute(sql.encode())


def run_step(
    command: list[str], env: dict[str, str], what: str
) -> subprocess.CompletedProcess[str]:
    log(f"  $ {shlex.join(command)}")
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        log(f"  {what} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-500:]}")
    return done


def create_dataset(settings: Settings, workdir: Path) -> Dataset:
    database = "bench_" + uuid.uuid4().hex[:10]
    log(f"database {database}")
    admin(settings, f'CREATE DATABASE "{database}"')
    url = with_database(settings.postgres, database)
    env = {**os.environ, "PYTHONPATH": str(REPO), "DATABASE_URL": url, "LOG_LEVEL": "WARNING"}
    notes: list[str] = []
    alembic = shutil.which("alembic", path=str(Path(PYTHON).parent)) or "alembic"
    if run_step([alembic, "upgrade", "head"], env, "migration").returncode != 0:
        raise RuntimeError("alembic upgrade head failed")
    loaded = run_step(
        [PYTHON, "-m", "service.load", str(SARS_CSV), "--on-conflict", "skip"], env, "load"
    )
    if loaded.returncode != 0:
        notes.append("service.load failed; the SARS CSV was loaded by bench/run.py with SQL")
        load_csv_with_sql(url, SARS_CSV)
    else:
        notes.append(f"SARS CSV: `python -m service.load` ({loaded.stdout.strip()})")
    generated = run_step(
        [
            PYTHON, "-m", "quart", "--app", "service.app", "generate-data", "--countries",
            str(settings.countries), "--days", str(settings.days), "--seed", "2003",
        ],
        env,
        "generate-data",
    )  # fmt: skip
    if generated.returncode != 0:
        notes.append("generate-data failed; the synthetic set was made with generate_series")
        generate_with_sql(url, settings.countries, settings.days)
    else:
        summary = generated.stdout.strip().splitlines()[-1] if generated.stdout.strip() else ""
        notes.append(f"synthetic: `quart generate-data --countries {settings.countries} "
                     f"--days {settings.days} --seed 2003` ({summary})")  # fmt: skip
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")
        ids = [row[0] for row in connection.execute("SELECT id FROM records ORDER BY id")]
        names = [
            row[0]
            for row in connection.execute(
                "SELECT name FROM countries WHERE EXISTS "
                "(SELECT 1 FROM records WHERE country_id = countries.id) ORDER BY name"
            )
        ]
    ids_file = workdir / "ids.txt"
    ids_file.write_text("\n".join(map(str, ids)) + "\n")
    names_file = workdir / "names.txt"
    names_file.write_text("\n".join(quote(name, safe="") for name in names) + "\n")
    rng = random.Random(2003)
    log(f"  {len(ids):,} records, {len(names)} countries")
    return Dataset(
        database=database,
        url=url,
        records=len(ids),
        countries=len(names),
        ids_file=ids_file,
        names_file=names_file,
        sample_ids=[ids[0], ids[len(ids) // 2], ids[-1], *rng.sample(ids, 3)],
        sample_names=["Hong Kong SAR, China", *rng.sample(names, 3)],
        load_notes=notes,
    )


def load_csv_with_sql(url: str, path: Path) -> None:
    """The SARS CSV (skipping the duplicate key), should service.load be unusable."""
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    now = dt.datetime.now(dt.UTC)
    with psycopg.connect(url) as connection:
        for name in sorted({row["country"] for row in rows}):
            connection.execute(
                "INSERT INTO countries (name, created_at, updated_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (name) DO NOTHING",
                (name, now, now),
            )
        with connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO records (country_id, date, cases, deaths, recoveries, version, "
                "created_at, updated_at) SELECT id, %s, %s, %s, %s, 1, %s, %s FROM countries "
                "WHERE name = %s ON CONFLICT (country_id, date) DO NOTHING",
                [
                    (r["date"], r["cases"], r["deaths"], r["recoveries"], now, now, r["country"])
                    for r in rows
                ],
            )


def generate_with_sql(url: str, countries: int, days: int) -> None:
    """countries x days synthetic records, should generate-data be unusable."""
    with psycopg.connect(url) as connection:
        connection.execute(
            "INSERT INTO countries (name, created_at, updated_at) "
            "SELECT 'Synthetic ' || n, now(), now() FROM generate_series(1, %s) AS n",
            (countries,),
        )
        connection.execute(
            "INSERT INTO records (country_id, date, cases, deaths, recoveries, version, "
            "created_at, updated_at) "
            "SELECT c.id, date '2003-03-17' + d, d * 10, d, d * 5, 1, now(), now() "
            "FROM countries c CROSS JOIN generate_series(0, %s - 1) AS d "
            "WHERE c.name LIKE 'Synthetic %%'",
            (days,),
        )


def drop_database(settings: Settings, database: str) -> None:
    admin(settings, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    log(f"dropped database {database}")


# -- wrk ----------------------------------------------------------------------------------


@dataclass
class Measurement:
    scenario: str
    server: str
    round: int
    endpoint: str
    concurrency: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non2xx: int
    socket_errors: int
    # CPU seconds (user + system) the server's processes and its PostgreSQL backends used
    # during the run: per request, robust to a busy machine in a way req/s is not.
    server_cpu_s: float
    pg_cpu_s: float
    # PostgreSQL connections the server opened during the run (0 once its pool is full,
    # unless it throws connections away).
    pg_connections_opened: int
    # Open-loop runs only (bench/fixed_rate.py): the rate asked for, p99.9, and how late the
    # generator itself was to send (its p99).
    target_rate: float = 0.0
    p999_ms: float = 0.0
    lag_p99_ms: float = 0.0
    client_us: float = 0.0  # the generator's own CPU per request

    @property
    def errors(self) -> int:
        return self.non2xx + self.socket_errors

    @property
    def server_us_per_request(self) -> float:
        return self.server_cpu_s / self.requests * 1e6 if self.requests else float("nan")

    @property
    def pg_us_per_request(self) -> float:
        return self.pg_cpu_s / self.requests * 1e6 if self.requests else float("nan")


_tags = iter(range(1, 1_000_000))


def wrk_command(
    settings: Settings,
    url: str,
    endpoint: str,
    concurrency: int,
    duration: float,
    dataset: Dataset,
    tag: str,
) -> list[str]:
    script = BENCH / "wrk" / f"{endpoint}.lua"
    args = {
        "get_record": [str(dataset.ids_file)],
        "list_records": [str(dataset.names_file)],
        "create_record": [f"{tag}-{next(_tags)}", TOKEN],
    }[endpoint]
    threads = min(settings.wrk_threads, concurrency)
    return [
        "wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{duration:g}s",
        "--timeout", settings.wrk_timeout, "-s", str(script), url, "--", *args,
    ]  # fmt: skip


def run_wrk(
    settings: Settings,
    url: str,
    endpoint: str,
    concurrency: int,
    duration: float,
    dataset: Dataset,
    tag: str,
    requests_per_thread: int = 0,
) -> dict[str, Any]:
    """Run wrk for ``duration`` s, or (``requests_per_thread``) until each thread is done."""
    command = wrk_command(settings, url, endpoint, concurrency, duration, dataset, tag)
    env = {**os.environ, "BENCH_REQUESTS_PER_THREAD": str(requests_per_thread)}
    threads = min(settings.wrk_threads, concurrency)
    output: list[str] = []
    with subprocess.Popen(
        pinned(settings.client_cpus, command),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    ) as process:
        assert process.stdout is not None
        finished = 0
        try:
            for line in process.stdout:
                output.append(line)
                if line.startswith("BENCH_THREAD_DONE"):
                    finished += 1
                    if finished == threads:  # wrk would sleep out -d: make it report now
                        process.send_signal(signal.SIGINT)
        except BaseException:
            process.kill()
            raise
        process.wait()
    for line in output:
        if line.startswith("BENCH_RESULT "):
            result: dict[str, Any] = json.loads(line.removeprefix("BENCH_RESULT "))
            return result
    raise RuntimeError(f"wrk gave no result: {''.join(output)}")


def measure(
    settings: Settings,
    scenario: str,
    running: Running,
    round_number: int,
    endpoint: str,
    concurrency: int,
    dataset: Dataset,
) -> Measurement:
    server_before = cpu_seconds(running.pids())
    with PgSampler(settings, dataset.database) as pg:
        result = run_wrk(
            settings,
            running.url,
            endpoint,
            concurrency,
            settings.duration,
            dataset,
            f"{scenario}-{running.server.name}-r{round_number}-c{concurrency}",
        )
    server_cpu = cpu_seconds(running.pids()) - server_before
    return measurement(
        result, scenario, running, round_number, endpoint, concurrency, server_cpu, pg
    )


def measurement(
    result: dict[str, Any],
    scenario: str,
    running: Running,
    round_number: int,
    endpoint: str,
    concurrency: int,
    server_cpu: float,
    pg: PgSampler,
    **extra: float,
) -> Measurement:
    """A Measurement from a load generator's BENCH_RESULT (wrk's scripts or fixed_rate.py)."""
    seconds = result["duration_us"] / 1e6
    return Measurement(
        scenario=scenario,
        server=running.server.name,
        round=round_number,
        endpoint=endpoint,
        concurrency=concurrency,
        requests=result["requests"],
        seconds=seconds,
        rps=result["requests"] / seconds if seconds else 0.0,
        p50_ms=result["p50_us"] / 1000,
        p90_ms=result["p90_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        max_ms=result["max_us"] / 1000,
        non2xx=result["non2xx"],
        socket_errors=sum(result[key] for key in ("connect", "read", "write", "timeout")),
        server_cpu_s=server_cpu,
        pg_cpu_s=pg.cpu_seconds,
        pg_connections_opened=pg.opened,
        **extra,
    )


# Open-loop runs (bench/fixed_rate.py): the read endpoints, as the wrk scripts request them.
FIXED_RATE_ENDPOINTS = {
    "get_record": ("/records/{}", "ids_file"),
    "list_records": ("/records?country={}&limit=50&order=date", "names_file"),
}
FIXED_RATE_CONNECTIONS = 64


def fixed_rate_command(
    settings: Settings,
    url: str,
    endpoint: str,
    rate: float,
    dataset: Dataset,
    duration: float | None = None,
) -> list[str]:
    template, values = FIXED_RATE_ENDPOINTS[endpoint]
    seconds = settings.fixed_rate_duration if duration is None else duration
    return [
        PYTHON, "-m", "bench.fixed_rate", url, "--rate", f"{rate:g}", "--duration",
        f"{seconds:g}", "--connections", str(FIXED_RATE_CONNECTIONS),
        "--template", template, "--values", str(getattr(dataset, values)),
    ]  # fmt: skip


def refill_pool(settings: Settings, running: Running, dataset: Dataset) -> None:
    """A burst of 400 GETs that ends with every answer in: it opens whatever database
    connections the server lacks, outside the measurement.

    wrk's warm-up ends with requests in flight. A server that cancels a request whose client
    left in the middle of a statement loses that connection (SQLAlchemy closes it); the next
    requests would otherwise reopen it while being measured (tens of ms each).
    """
    command = fixed_rate_command(settings, running.url, "get_record", 2000, dataset, 0.2)
    subprocess.run(
        pinned(settings.client_cpus, command),
        cwd=BENCH.parent,
        capture_output=True,
        check=True,
        timeout=60,
    )


def measure_fixed_rate(
    settings: Settings,
    running: Running,
    round_number: int,
    endpoint: str,
    rate: float,
    dataset: Dataset,
) -> Measurement:
    command = fixed_rate_command(settings, running.url, endpoint, rate, dataset)
    server_before = cpu_seconds(running.pids())
    with PgSampler(settings, dataset.database) as pg:
        done = subprocess.run(
            pinned(settings.client_cpus, command),
            cwd=BENCH.parent,
            capture_output=True,
            text=True,
            timeout=settings.fixed_rate_duration + 120,
        )
    server_cpu = cpu_seconds(running.pids()) - server_before
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH_RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"fixed-rate generator failed: {done.stderr.strip()[-500:]}")
    result = json.loads(lines[-1].removeprefix("BENCH_RESULT "))
    return measurement(
        result, "fixed-rate", running, round_number, endpoint, FIXED_RATE_CONNECTIONS,
        server_cpu, pg, target_rate=rate, p999_ms=result["p999_us"] / 1000,
        lag_p99_ms=result["lag_p99_us"] / 1000, client_us=result["client_cpu_us"],
    )  # fmt: skip


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` from /proc/PID/stat; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def cpu_seconds(pids: Sequence[int]) -> float:
    return sum(process_cpu(pid) or 0.0 for pid in pids)


class PgSampler:
    """CPU time of the PostgreSQL backends serving the benchmark database during a run.

    Backends come and go (a server may drop connections and open new ones), so they are
    sampled every ``interval`` s: a backend seen at the start counts from its CPU time then,
    one that appears later from zero (its start-up is part of the run), one that exits counts
    up to its last sample.
    """

    def __init__(self, settings: Settings, database: str, interval: float = 0.2) -> None:
        self.connection = psycopg.connect(settings.postgres, autocommit=True)
        self.database = database
        self.interval = interval
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.initial: set[int] = set()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _pids(self) -> list[int]:
        rows = self.connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
            (self.database,),
        ).fetchall()
        return [int(row[0]) for row in rows]

    def _sample(self) -> None:
        for pid in self._pids():
            cpu = process_cpu(pid)
            if cpu is not None:
                self.first.setdefault(pid, cpu if pid in self.initial else 0.0)
                self.last[pid] = cpu

    def _run(self) -> None:
        while not self.done.wait(self.interval):
            with contextlib.suppress(psycopg.Error):
                self._sample()

    def __enter__(self) -> PgSampler:
        self.initial = set(self._pids())
        self._sample()
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.done.set()
        self.thread.join()
        with contextlib.suppress(psycopg.Error):
            self._sample()
        self.connection.close()

    @property
    def cpu_seconds(self) -> float:
        return sum(self.last[pid] - self.first[pid] for pid in self.last)

    @property
    def opened(self) -> int:
        return len(set(self.last) - self.initial)


def warm_up(settings: Settings, running: Running, dataset: Dataset) -> None:
    if settings.warmup <= 0:
        return
    concurrency = min(64, max(settings.concurrency))
    for endpoint in ENDPOINTS:
        run_wrk(settings, running.url, endpoint, concurrency, settings.warmup, dataset, "warm")


# -- checks -------------------------------------------------------------------------------


def probe_path(dataset: Dataset) -> str:
    return f"/records/{dataset.sample_ids[0]}"


def check_json(
    running: Running, dataset: Dataset, reference: dict[str, Any] | None
) -> tuple[dict[str, Any], list[str]]:
    """This server's answers to sample requests, and how they differ from the service's."""
    port = running.port
    answers: dict[str, Any] = {}
    problems: list[str] = []
    for record_id in dataset.sample_ids:
        status, _, body = request("127.0.0.1", port, "GET", f"/records/{record_id}")
        answers[f"get {record_id}"] = (status, body)
    for name in dataset.sample_names:
        path = f"/records?country={quote(name, safe='')}&limit=50&order=date"
        status, _, body = request("127.0.0.1", port, "GET", path)
        if isinstance(body, dict) and "next_cursor" in body:
            body["next_cursor"] = body["next_cursor"] is not None  # opaque: only its presence
        answers[f"list {name}"] = (status, body)
    created_name = f"Bench check {running.server.name} {uuid.uuid4().hex[:6]}"
    payload = {"country": created_name, "date": "2003-03-17", "cases": 7}
    status, headers, body = request("127.0.0.1", port, "POST", "/records", payload)
    if status != 201 or not isinstance(body, dict):
        problems.append(f"POST /records: {status} {body}")
    else:
        if headers.get("location") != f"/records/{body['id']}":
            problems.append(f"POST /records: Location {headers.get('location')!r}")
        status_again, _, stored = request("127.0.0.1", port, "GET", f"/records/{body['id']}")
        if (status_again, stored) != (200, body):
            problems.append(f"POST /records: created {body}, then read {stored}")
        # Ids and timestamps differ from server to server; the rest must not.
        shape = {key: (value if key in {"country", "date", "cases", "deaths", "recoveries",
                                         "source_ids", "version"} else type(value).__name__)
                 for key, value in body.items()}  # fmt: skip
        shape["country"] = "<created>" if body.get("country") == created_name else "?"
        answers["post"] = (status, list(shape.items()))
        if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", str(body["created_at"])):
            problems.append(f"POST /records: created_at {body['created_at']!r}")
    if reference is not None:
        for key, value in reference.items():
            if answers.get(key) != value:
                problems.append(f"{key}: differs from the service: {answers.get(key)!r:.300}")
    for key, (status, _) in answers.items():
        if status not in (200, 201):
            problems.append(f"{key}: status {status}")
    return answers, problems


# -- the scenarios --------------------------------------------------------------------------


@dataclass
class RoundLog:
    scenario: str
    server: str
    round: int
    rss_ready: list[int]
    rss_after: list[int]
    loadavg: str


def rotated(servers: list[str], round_number: int) -> list[str]:
    """The servers in the order of this round: each round starts one server further on, so
    no server always goes first."""
    offset = (round_number - 1) % len(servers)
    return servers[offset:] + servers[:offset]


class Harness:
    def __init__(self, settings: Settings, dataset: Dataset, workdir: Path) -> None:
        self.settings = settings
        self.dataset = dataset
        self.workdir = workdir
        self.measurements: list[Measurement] = []
        self.rounds: list[RoundLog] = []
        self.problems: list[str] = []
        self.commands: dict[str, str] = {}
        self.reference: dict[str, Any] | None = None
        self.checked: set[str] = set()
        self.memory: dict[str, Any] = {}
        self.delay: dict[str, Any] = {}
        self.fixed_rates: dict[str, float] = {}
        self.hypercorn_toml = (workdir / "hypercorn.toml").read_text()
        # The 1-minute load average after every server round: how busy the machine was.
        self.loads: list[float] = [load_one()]

    @contextlib.contextmanager
    def serve(self, name: str, database_url: str | None = None) -> Iterator[Running]:
        url = database_url or self.dataset.url
        running = Running(SERVERS[name], self.settings, url, self.workdir)
        self.commands.setdefault(
            name, shown(pinned(self.settings.server_cpus, running.command), self.workdir)
        )
        try:
            running.wait_ready(probe_path(self.dataset))
            yield running
        finally:
            running.stop()

    def check(self, running: Running, scenario: str) -> None:
        key = f"{scenario}/{running.server.name}"
        if key in self.checked:
            return
        self.checked.add(key)
        reference = None if running.server.name == "service" else self.reference
        answers, problems = check_json(running, self.dataset, reference)
        if running.server.name == "service" and self.reference is None:
            self.reference = answers
        for problem in problems:
            self.problems.append(f"{key}: {problem}")
            log(f"  JSON CHECK: {problem}")

    def main_rounds(self) -> None:
        servers = self.settings.servers
        for round_number in range(1, self.settings.rounds + 1):
            order = rotated(servers, round_number)
            if "service" in order and self.reference is None:
                order.remove("service")
                order.insert(0, "service")  # the reference JSON comes from the service
            for name in order:
                try:
                    self.server_round("main", name, round_number, self.settings.concurrency)
                except (RuntimeError, OSError, subprocess.SubprocessError) as error:
                    self.problems.append(f"main/{name} round {round_number}: {error}")
                    log(f"  FAILED: {error}")

    def server_round(
        self,
        scenario: str,
        name: str,
        round_number: int,
        concurrency: list[int],
        database_url: str | None = None,
    ) -> None:
        log(f"[{scenario} round {round_number}] {name}")
        with self.serve(name, database_url) as running:
            rss_ready = running.worker_rss()
            self.check(running, scenario)
            warm_up(self.settings, running, self.dataset)
            for conc in concurrency:
                for endpoint in ENDPOINTS:
                    result = measure(
                        self.settings, scenario, running, round_number, endpoint, conc,
                        self.dataset,
                    )  # fmt: skip
                    self.measurements.append(result)
                    log(
                        f"  c={conc:<4} {endpoint:<14} {result.rps:8.0f} req/s  "
                        f"p50 {result.p50_ms:7.1f} ms  p99 {result.p99_ms:7.1f} ms  "
                        f"errors {result.errors}"
                    )
                    time.sleep(0.3)
            self.rounds.append(
                RoundLog(scenario, name, round_number, rss_ready, running.worker_rss(),
                         loadavg())
            )  # fmt: skip
        self.loads.append(load_one())

    def memory_run(self) -> None:
        total = self.settings.memory_requests
        log(f"[memory] service: RSS before and after {total:,} requests")
        with self.serve("service") as running:
            before = running.worker_rss()
            threads = self.settings.wrk_threads
            per_thread = -(-total // (len(ENDPOINTS) * threads))  # rounded up
            served = 0
            errors = 0
            for endpoint in ENDPOINTS:
                result = run_wrk(
                    self.settings, running.url, endpoint, self.settings.memory_concurrency,
                    3600, self.dataset, "memory", requests_per_thread=per_thread,
                )  # fmt: skip
                served += result["requests"]
                errors += result["non2xx"] + sum(
                    result[key] for key in ("connect", "read", "write", "timeout")
                )
            after = running.worker_rss()
            peak = [rss(pid, "VmHWM") for pid in descendants(running.process.pid)
                    if "resource_tracker" not in cmdline(pid)]  # fmt: skip
            peak = [max(pair) for pair in zip(peak, after, strict=False)]  # HWM lags a bit
        self.memory = {
            "requests": served,
            "errors": errors,
            "before": before,
            "after": after,
            "peak": peak,
            "concurrency": self.settings.memory_concurrency,
        }
        log(f"  {served:,} requests, {errors} errors: RSS {mib(before)} -> {mib(after)} MiB")

    def fixed_rate_scenario(self) -> None:
        """Every server at the same fixed rate, open loop: latency as clients would see it."""
        rates = fixed_rates(self.measurements, self.settings)
        if not rates:
            raise RuntimeError("no main-scenario measurement to derive the fixed rates from")
        self.fixed_rates = rates
        servers = self.settings.servers
        for round_number in range(1, self.settings.rounds + 1):
            for name in rotated(servers, round_number):
                log(f"[fixed-rate round {round_number}] {name}")
                with self.serve(name) as running:
                    warm_up(self.settings, running, self.dataset)
                    refill_pool(self.settings, running, self.dataset)
                    for endpoint, rate in rates.items():
                        result = measure_fixed_rate(
                            self.settings, running, round_number, endpoint, rate, self.dataset
                        )
                        self.measurements.append(result)
                        log(
                            f"  {rate:6.0f}/s {endpoint:<14} p50 {result.p50_ms:7.1f} ms  "
                            f"p99 {result.p99_ms:7.1f} ms  errors {result.errors}"
                        )
                self.loads.append(load_one())

    def delay_scenario(self) -> None:
        settings = self.settings
        port = free_port()
        upstream = settings.postgres.split("@", 1)[-1].split("/", 1)[0]
        command = [
            PYTHON, str(BENCH / "delay_proxy.py"), "--listen", f"127.0.0.1:{port}",
            "--upstream", upstream if ":" in upstream else f"{upstream}:5432",
            "--delay-ms", f"{settings.delay_ms:g}",
        ]  # fmt: skip
        log(f"[delay] {shlex.join(command)}")
        proxy = subprocess.Popen(
            pinned(settings.client_cpus, command),
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            assert proxy.stdout is not None
            ready = proxy.stdout.readline()
            if not ready.startswith("READY"):
                raise RuntimeError(f"delay proxy did not start: {ready!r}")
            direct_url = self.dataset.url
            proxied = direct_url.replace(upstream, f"127.0.0.1:{port}", 1)
            self.delay = {
                "command": shown(pinned(settings.client_cpus, command), self.workdir),
                "delay_ms_each_way": settings.delay_ms,
                "rtt_direct_ms": round_trip_ms(direct_url),
                "rtt_proxied_ms": round_trip_ms(proxied),
                "round_trips": {},
                "concurrency": settings.delay_concurrency,
            }
            log(
                f"  SELECT 1 round trip: direct {self.delay['rtt_direct_ms']:.3f} ms, "
                f"through the proxy {self.delay['rtt_proxied_ms']:.3f} ms"
            )
            servers = [name for name in ("service", "flask") if name in settings.servers]
            for name in servers:
                self.delay["round_trips"][name] = self.count_round_trips(name, proxied, proxy)
            for round_number in range(1, settings.delay_rounds + 1):
                order = servers if round_number % 2 else servers[::-1]
                for name in order:
                    self.server_round(
                        "delay", name, round_number, [settings.delay_concurrency], proxied
                    )
        finally:
            proxy.send_signal(signal.SIGTERM)
            try:
                proxy.wait(10)
            except subprocess.TimeoutExpired:
                proxy.kill()
                proxy.wait()

    def count_round_trips(
        self, name: str, proxied_url: str, proxy: subprocess.Popen[str]
    ) -> dict[str, float]:
        """Client-to-PostgreSQL writes per request (~ round trips), one request at a time."""
        per_endpoint: dict[str, float] = {}
        warm, count = 10, 30
        sequence = iter(range(1_000_000))
        with self.serve(name, proxied_url) as running:

            def one(endpoint: str) -> None:
                index = next(sequence)
                if endpoint == "get_record":
                    ids = self.dataset.sample_ids
                    method, path, body = "GET", f"/records/{ids[index % len(ids)]}", None
                elif endpoint == "list_records":
                    names = self.dataset.sample_names
                    country = quote(names[index % len(names)], safe="")
                    path = f"/records?country={country}&limit=50&order=date"
                    method, body = "GET", None
                else:
                    date = dt.date(2200, 1, 1) + dt.timedelta(index)
                    method, path = "POST", "/records"
                    body = {"country": f"Bench rt {name}", "date": date.isoformat(), "cases": 1}
                status, _, _ = request("127.0.0.1", running.port, method, path, body)
                if status not in (200, 201):
                    self.problems.append(f"delay/{name}: {method} {path} gave {status}")

            for endpoint in ENDPOINTS:
                for _ in range(warm):  # statements prepared, the country created
                    one(endpoint)
                before = proxy_counters(proxy)
                for _ in range(count):
                    one(endpoint)
                after = proxy_counters(proxy)
                writes = after["to_server_chunks"] - before["to_server_chunks"]
                per_endpoint[endpoint] = writes / count
        log(f"  {name}: PostgreSQL round trips per request {per_endpoint}")
        return per_endpoint


def proxy_counters(proxy: subprocess.Popen[str]) -> dict[str, int]:
    assert proxy.stdout is not None
    proxy.send_signal(signal.SIGUSR1)
    counters: dict[str, int] = json.loads(proxy.stdout.readline())
    return counters


def round_trip_ms(url: str, count: int = 200) -> float:
    with psycopg.connect(url, autocommit=True) as connection:
        timings = []
        for _ in range(count):
            started = time.perf_counter()
            connection.execute("SELECT 1").fetchone()
            timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000


# -- the report -----------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def load_one() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def mib(values: Sequence[int]) -> str:
    return ", ".join(f"{value / MIB:.1f}" for value in values) or "?"


def service_revision() -> str:
    """The commit the service was measured at, and whether its working tree differs."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "service", "migrations", "hypercorn.toml"],
        cwd=REPO,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"{head or '?'}{' + uncommitted changes' if dirty else ''}"


def versions() -> dict[str, str]:
    found = {"service": service_revision(), "Python": platform.python_version()}
    for package in (
        "quart", "hypercorn", "sqlalchemy", "asyncpg", "pydantic", "quart-schema", "orjson",
        "uvloop", "flask", "flask-sqlalchemy", "psycopg", "gunicorn", "fastapi", "starlette",
        "uvicorn", "httptools", "locust", "matplotlib",
    ):  # fmt: skip
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[package] = importlib.metadata.version(package)
    return found


def machine(settings: Settings) -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.*)", cpuinfo)
    meminfo = Path("/proc/meminfo").read_text()
    total = re.search(r"MemTotal:\s*(\d+)", meminfo)
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    with psycopg.connect(settings.postgres, autocommit=True) as connection:
        row = connection.execute("SHOW server_version").fetchone()
        pg_version = str(row[0]) if row else "?"
        limit = connection.execute("SHOW max_connections").fetchone()
    return {
        "cores": str(os.cpu_count()),
        "cpu": model.group(1).strip() if model else "?",
        "memory": f"{int(total.group(1)) / 1024 / 1024:.1f} GiB" if total else "?",
        "kernel": platform.release(),
        "wrk": (wrk.stdout or wrk.stderr).strip().splitlines()[0],
        "postgresql": pg_version,
        "pg_max_connections": str(limit[0]) if limit else "?",
    }


def median_of(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class Cell:
    rps: float
    rps_min: float
    rps_max: float
    p50: float
    p99: float
    errors: int
    rounds: int
    server_us: float  # server CPU per request
    opened: float  # PostgreSQL connections opened per run (median)
    pg_us: float  # PostgreSQL backends' CPU per request
    busy: float  # server CPU time / wall time: near 1 (per worker) when CPU-bound


def fixed_rates(measurements: Sequence[Measurement], settings: Settings) -> dict[str, float]:
    """Per read endpoint, the open-loop rate: a share of the req/s that the slowest server
    (the raw floor aside) reached closed-loop at c=64, so that every server can keep up."""
    concurrency = min(settings.concurrency, key=lambda c: abs(c - FIXED_RATE_CONNECTIONS))
    grid = cells(measurements, "main")
    rates = {}
    for endpoint in FIXED_RATE_ENDPOINTS:
        reached = [
            cell.rps
            for (cell_endpoint, conc, server), cell in grid.items()
            if cell_endpoint == endpoint and conc == concurrency and server != "raw"
        ]
        if reached:
            rates[endpoint] = max(10.0, round(min(reached) * settings.fixed_rate_share, -1))
    return rates


def cells(measurements: Sequence[Measurement], scenario: str) -> dict[tuple[str, int, str], Cell]:
    grouped: dict[tuple[str, int, str], list[Measurement]] = {}
    for m in measurements:
        if m.scenario == scenario:
            grouped.setdefault((m.endpoint, m.concurrency, m.server), []).append(m)
    return {
        key: Cell(
            rps=median_of([m.rps for m in group]),
            rps_min=min(m.rps for m in group),
            rps_max=max(m.rps for m in group),
            p50=median_of([m.p50_ms for m in group]),
            p99=median_of([m.p99_ms for m in group]),
            errors=sum(m.errors for m in group),
            rounds=len(group),
            server_us=median_of([m.server_us_per_request for m in group]),
            pg_us=median_of([m.pg_us_per_request for m in group]),
            busy=median_of([m.server_cpu_s / m.seconds for m in group if m.seconds]),
            opened=median_of([m.pg_connections_opened for m in group]),
        )
        for key, group in grouped.items()
    }


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def table(
    grid: dict[tuple[str, int, str], Cell],
    servers: Sequence[str],
    endpoint: str,
    concurrency: Sequence[int],
) -> list[str]:
    lines = [
        "| c | server | req/s | req/s min-max | p50 ms | p99 ms | errors | server CPU µs/req "
        "| PG CPU µs/req | server busy | new PG conns | service/this req/s | service/this p99 |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for conc in concurrency:
        service = grid.get((endpoint, conc, "service"))
        for name in servers:
            cell = grid.get((endpoint, conc, name))
            if cell is None:
                continue
            rel_rps = ratio(service.rps, cell.rps) if service else "-"
            rel_p99 = ratio(service.p99, cell.p99) if service else "-"
            if name == "service":
                rel_rps = rel_p99 = "1"
            lines.append(
                f"| {conc} | {name} | {cell.rps:,.0f} | {cell.rps_min:,.0f}-{cell.rps_max:,.0f}"
                f" | {cell.p50:.1f} | {cell.p99:.1f} | {cell.errors} | {cell.server_us:,.0f}"
                f" | {cell.pg_us:,.0f} | {cell.busy:.0%} | {cell.opened:g}"
                f" | {rel_rps} | {rel_p99} |"
            )
    return lines


def fixed_rate_table(
    measurements: Sequence[Measurement], servers: Sequence[str], endpoint: str
) -> list[str]:
    runs: dict[str, list[Measurement]] = {}
    for m in measurements:
        if m.scenario == "fixed-rate" and m.endpoint == endpoint:
            runs.setdefault(m.server, []).append(m)
    service = runs.get("service")
    service_p99 = median_of([m.p99_ms for m in service]) if service else 0.0
    lines = [
        "| server | rate asked | req/s served | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms "
        "| p99/p50 | errors | server CPU µs/req | generator lag p99 ms | service/this p99 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in servers:
        group = runs.get(name)
        if not group:
            continue
        p50 = median_of([m.p50_ms for m in group])
        p99 = median_of([m.p99_ms for m in group])
        lines.append(
            f"| {name} | {group[0].target_rate:,.0f} | {median_of([m.rps for m in group]):,.0f}"
            f" | {p50:.1f} | {median_of([m.p90_ms for m in group]):.1f} | {p99:.1f}"
            f" | {median_of([m.p999_ms for m in group]):.1f}"
            f" | {median_of([m.max_ms for m in group]):.1f}"
            f" | {ratio(p99, p50)} | {sum(m.errors for m in group)}"
            f" | {median_of([m.server_us_per_request for m in group]):,.0f}"
            f" | {median_of([m.lag_p99_ms for m in group]):.1f}"
            f" | {'1' if name == 'service' else ratio(service_p99, p99)} |"
        )
    return lines


def write_report(
    harness: Harness,
    settings: Settings,
    info: dict[str, Any],
    started: float,
) -> None:
    loads = harness.loads
    grid = cells(harness.measurements, "main")
    servers = settings.servers
    out: list[str] = [
        "# Benchmark results",
        "",
        f"Produced by `{info['command']}` on {info['date']} in {(time.time() - started) / 60:.0f}"
        " minutes. The median of the rounds is reported; errors are summed over the rounds "
        "(non-2xx responses + socket errors + wrk timeouts). Ratios are service / peer: above 1 "
        "the service serves more requests per second (req/s) or has the longer tail (p99).",
        "",
        "*Server CPU µs/req* is the CPU time (user + system, from /proc) of the server's "
        "processes divided by the requests served, *PG CPU µs/req* the same for the PostgreSQL "
        "backends serving it; *server busy* is server CPU time over wall time (about 100 % per "
        "worker when CPU-bound; less when it waits for the database or the machine took its "
        "core). On a shared machine CPU per request is the steadier figure: when another job "
        "takes the core, req/s falls but CPU per request barely moves. *New PG conns* counts "
        "the PostgreSQL connections the server opened during the run (median): a full pool "
        "opens none, unless the server discards connections.",
        "",
        "**Machine load during the run** (the machine is shared; read the figures with that in "
        f"mind): 1-minute load average min {min(loads):.2f}, median {median_of(loads):.2f}, "
        f"max {max(loads):.2f} (sampled after every server round; {info['machine']['cores']} "
        "cores).",
        "",
        "Servers:",
        "",
    ]
    out += [f"- `{name}`: {SERVERS[name].label}" for name in servers]
    out += [""]
    for endpoint in ENDPOINTS:
        out += [f"## {ENDPOINT_TITLES[endpoint]}", ""]
        out += table(grid, servers, endpoint, settings.concurrency)
        out += [""]
    fixed = [m for m in harness.measurements if m.scenario == "fixed-rate"]
    if fixed:
        out += [
            "## Latency at a fixed rate (open loop)",
            "",
            "wrk's latencies above are closed-loop: a connection waits for its answer before "
            "it sends again, so a server that stalls is sent fewer requests meanwhile and its "
            "tail looks shorter than clients would find it. Here `bench/fixed_rate.py` sends "
            f"requests at a fixed rate over {FIXED_RATE_CONNECTIONS} keep-alive connections "
            "whatever the answers, and counts each request's latency from when it was due "
            "(as wrk2 and `oha --latency-correction` do), so a stall counts against every "
            "request due during it. The rate is the same for every server: "
            f"{settings.fixed_rate_share:.0%} of the lowest req/s reached at c=64 above, the "
            "raw floor aside, so that each server can keep up. After wrk's warm-up, a burst of "
            "400 requests that ends with every answer in lets each server open whatever "
            "database connections it lacks, so the runs measure steady state. "
            "*Generator lag p99* is how "
            "late the generator itself got to a request (its timers wake to the millisecond); "
            "it is part of the latencies. The generator used "
            f"{median_of([m.client_us for m in fixed]):,.0f} µs of CPU per request (median), "
            f"on the client core. {settings.fixed_rate_duration:g} s per run, "
            f"{settings.rounds} rounds, medians.",
            "",
        ]
        for endpoint in FIXED_RATE_ENDPOINTS:
            out += [f"### {ENDPOINT_TITLES[endpoint]}", ""]
            out += fixed_rate_table(harness.measurements, servers, endpoint)
            out += [""]
    out += ["## Memory", ""]
    rss_ready: dict[str, list[float]] = {}
    rss_after: dict[str, list[float]] = {}
    for entry in harness.rounds:
        if entry.scenario == "main":
            rss_ready.setdefault(entry.server, []).extend(v / MIB for v in entry.rss_ready)
            rss_after.setdefault(entry.server, []).extend(v / MIB for v in entry.rss_after)
    out += [
        "Worker RSS (MiB, median over rounds): when ready (before any request) and after the "
        "round's warm-up and measurements.",
        "",
        "| server | RSS ready | RSS after round |",
        "|---|---:|---:|",
    ]
    for name in servers:
        if name in rss_ready:
            out.append(
                f"| {name} | {median_of(rss_ready[name]):.1f} | {median_of(rss_after[name]):.1f} |"
            )
    out.append("")
    if harness.memory:
        memory = harness.memory
        out += [
            f"The service's worker, fresh, before and after {memory['requests']:,} requests "
            f"(a third per endpoint, c={memory['concurrency']}, {memory['errors']} errors): "
            f"RSS **{mib(memory['before'])} MiB before, {mib(memory['after'])} MiB after** "
            f"(peak {mib(memory['peak'])} MiB).",
            "",
        ]
    if harness.delay:
        delay = harness.delay
        dgrid = cells(harness.measurements, "delay")
        conc = delay["concurrency"]
        out += [
            f"## PostgreSQL {2 * delay['delay_ms_each_way']:g} ms away (c={conc})",
            "",
            f"Every connection to PostgreSQL goes through `bench/delay_proxy.py`, which delays "
            f"each chunk {delay['delay_ms_each_way']:g} ms each way (this kernel has no netem "
            f"qdisc). Measured `SELECT 1` round trip: {delay['rtt_direct_ms']:.3f} ms direct, "
            f"**{delay['rtt_proxied_ms']:.2f} ms through the proxy**. The proxy runs on the "
            "client core, beside wrk, and costs CPU there.",
            "",
            "PostgreSQL round trips per request (client-to-server writes counted by the proxy, "
            "one request at a time):",
            "",
            "| server | " + " | ".join(ENDPOINT_TITLES[e] for e in ENDPOINTS) + " |",
            "|---|" + "---:|" * len(ENDPOINTS),
        ]
        for name, trips in delay["round_trips"].items():
            out.append(f"| {name} | " + " | ".join(f"{trips[e]:.1f}" for e in ENDPOINTS) + " |")
        out += [""]
        for endpoint in ENDPOINTS:
            out += [f"### {ENDPOINT_TITLES[endpoint]}", ""]
            out += table(
                dgrid, [s for s in ("service", "flask") if s in servers], endpoint, [conc]
            )
            out += [""]
    if harness.problems:
        out += ["## Problems", ""] + [f"- {problem}" for problem in harness.problems] + [""]
    out += [
        "## Settings",
        "",
        f"- workers per server: {settings.workers}; database pool per worker: "
        f"{settings.pool_size} (no overflow; the service: DB_POOL_SIZE={settings.pool_size}, "
        f"DB_MAX_OVERFLOW=0); gunicorn gthread threads: {settings.threads}",
        f"- wrk: {settings.wrk_threads} threads, connections = concurrency "
        f"({', '.join(map(str, settings.concurrency))}), {settings.duration:g} s per run, "
        f"--timeout {settings.wrk_timeout}; warm-up {settings.warmup:g} s per endpoint at "
        f"c={min(64, max(settings.concurrency))} after every start; {settings.rounds} rounds, "
        "servers in rotating order",
        "- latency: wrk's under closed-loop load in the main and delay tables; open-loop "
        "(bench/fixed_rate.py, latency from each request's due time) in \"Latency at a fixed "
        'rate"',
        f"- pinning: servers `taskset -c {settings.server_cpus}`, wrk and the delay proxy "
        f"`taskset -c {settings.client_cpus}`; PostgreSQL not pinned (shared)"
        if settings.server_cpus
        else "- pinning: none",
        "- logging: no access logs; the service at LOG_LEVEL=WARNING (its per-request log line "
        "is INFO), hypercorn.toml's settings otherwise (uvloop workers), backlog 2048 "
        "everywhere",
        f"- data: {harness.dataset.records:,} records in {harness.dataset.countries} countries "
        "(+ what the POST runs add); " + "; ".join(harness.dataset.load_notes),
        "",
        "Command lines (the port varies; `$WORKDIR` is the run's scratch directory):",
        "",
    ]
    out += [f"- {name}: `{command}`" for name, command in harness.commands.items()]
    top = max(settings.concurrency)
    for endpoint in ENDPOINTS:
        example = wrk_command(settings, "http://127.0.0.1:PORT", endpoint, top,
                              settings.duration, harness.dataset, "TAG")  # fmt: skip
        command = shown(pinned(settings.client_cpus, example), harness.workdir)
        out.append(f"- wrk, {endpoint}: `{command}`")
    for endpoint, rate in harness.fixed_rates.items():
        example = fixed_rate_command(
            settings, "http://127.0.0.1:PORT", endpoint, rate, harness.dataset
        )
        command = shown(pinned(settings.client_cpus, example), harness.workdir)
        out.append(f"- open loop, {endpoint}: `{command}`")
    out += [
        "",
        "Environment of every server: " + ", ".join(
            f"`{key}={value.replace(str(BENCH.parent), '.')}`"
            for key, value in server_env(settings, "URL").items()
            if key in {"DATABASE_URL", "API_TOKENS", "DB_POOL_SIZE", "DB_MAX_OVERFLOW",
                       "DB_POOL_TIMEOUT", "LOG_LEVEL", "PYTHONPATH"}
        ) + " (the token is random per run).",
        "",
        "`hypercorn.toml` of the Hypercorn servers (the repository's, without its access log):",
        "",
        "```toml",
        harness.hypercorn_toml.strip(),
        "```",
        "",
    ]  # fmt: skip
    out += ["## Versions and machine", "", "| | |", "|---|---|"]
    out += [f"| {key} | {value} |" for key, value in info["versions"].items()]
    out += [f"| {key} | {value} |" for key, value in info["machine"].items()]
    out += [""]
    (settings.output / "RESULTS.md").write_text("\n".join(out))
    (settings.output / "results.json").write_text(
        json.dumps(
            {
                "info": info,
                "settings": {k: str(v) for k, v in asdict(settings).items() if k != "output"},
                "measurements": [asdict(m) for m in harness.measurements],
                "rounds": [asdict(r) for r in harness.rounds],
                "memory": harness.memory,
                "delay": harness.delay,
                "fixed_rates": harness.fixed_rates,
                "problems": harness.problems,
            },
            indent=1,
        )
    )


def info_line(settings: Settings) -> str:
    return f"wrk {settings.duration:g} s runs, pool {settings.pool_size}"


def write_chart(harness: Harness, settings: Settings) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = cells(harness.measurements, "main")
    servers = settings.servers
    metrics = (
        ("rps", "requests/s"),
        ("p99", "p99 latency (ms)"),
        ("server_us", "server CPU per request (µs)"),
    )
    figure, axes = plt.subplots(
        len(metrics), len(ENDPOINTS), figsize=(6 * len(ENDPOINTS), 4 * len(metrics))
    )
    width = 0.8 / len(servers)
    positions = range(len(settings.concurrency))
    for column, endpoint in enumerate(ENDPOINTS):
        for row, (metric, title) in enumerate(metrics):
            ax = axes[row][column]
            for index, name in enumerate(servers):
                values = [
                    getattr(grid[(endpoint, conc, name)], metric)
                    if (endpoint, conc, name) in grid
                    else 0
                    for conc in settings.concurrency
                ]
                ax.bar([p + index * width for p in positions], values, width, label=name)
            ax.set_xticks([p + width * (len(servers) - 1) / 2 for p in positions])
            ax.set_xticklabels([f"c={conc}" for conc in settings.concurrency])
            ax.set_title(f"{ENDPOINT_TITLES[endpoint]}: {title}", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.suptitle(
        f"median of {settings.rounds} rounds, {settings.workers} worker(s) per server, "
        f"{info_line(settings)} (bench/RESULTS.md)"
    )
    figure.tight_layout()
    figure.savefig(settings.output / "results.png", dpi=100)
    plt.close(figure)


# -- main -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    for tool, package in (("wrk", "wrk"), ("taskset", "util-linux")):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing (Debian package: {package})")
    started = time.time()
    info: dict[str, Any] = {
        "command": shlex.join(["python", "bench/run.py", *(argv or sys.argv[1:])]),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "versions": versions(),
        "machine": machine(settings),
        "loadavg_start": loadavg(),
    }
    log(f"load average at start: {info['loadavg_start']}")
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    hypercorn_config(workdir)
    dataset: Dataset | None = None
    try:
        dataset = create_dataset(settings, workdir)
        harness = Harness(settings, dataset, workdir)
        harness.main_rounds()
        for skip, scenario in (
            (settings.skip_memory, harness.memory_run),
            (settings.skip_fixed_rate, harness.fixed_rate_scenario),
            (settings.skip_delay, harness.delay_scenario),
        ):
            if skip:
                continue
            try:
                scenario()
            except (RuntimeError, OSError, subprocess.SubprocessError, psycopg.Error) as error:
                harness.problems.append(f"{scenario.__name__} failed: {error!r}")
                log(f"  {scenario.__name__} FAILED: {error!r}")
        info["loadavg_end"] = loadavg()
        write_report(harness, settings, info, started)
        write_chart(harness, settings)
        log(f"wrote {settings.output / 'RESULTS.md'} and {settings.output / 'results.png'}")
        errors = sum(m.errors for m in harness.measurements)
        if harness.problems or errors:
            log(f"{errors} request errors, {len(harness.problems)} problems: see RESULTS.md")
            return 1
        return 0
    finally:
        if dataset is not None and not settings.keep_database:
            drop_database(settings, dataset.database)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
