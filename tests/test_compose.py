"""docker-compose.yml: it refuses to start without the secrets that have no safe default, and,
run for real, it is built, started, scaled, loaded, drained, given read replicas and torn down.

A Docker engine of the test's own (state in a temporary folder, no iptables, no default
bridge), base images from deploy/standin/build.sh (no registry is reachable), the API image
built from a wheelhouse with no network. The stack is reached only through the load
balancer's port on 127.0.0.1. README's "Run the stack" gives the same commands.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.live import REPO_ROOT, free_port, needs_commands

pytestmark = [pytest.mark.e2e, pytest.mark.compose]

SARS_DATA = REPO_ROOT.parent / "shared" / "data"
TOKEN = "compose-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PGBOUNCER = ("-f", "docker-compose.yml", "-f", "docker-compose.pgbouncer.yml")
REPLICAS = ("--profile", "replicas")
WHO_RECORDS = 2537


def _compose_command() -> list[str] | None:
    """`docker compose` (v2) when the plugin is there, else `docker-compose` (1.29)."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def _why_no_engine() -> str | None:
    if os.geteuid() != 0:
        return "starting a Docker engine needs root"
    for command in ("dockerd", "docker", "debootstrap"):
        if shutil.which(command) is None:
            return f"{command} is not installed (scripts/system-packages.sh)"
    if _compose_command() is None:
        return "neither `docker compose` nor docker-compose is installed"
    return None


def _run(
    command: list[str], env: dict[str, str], timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


@dataclass
class Engine:
    """A dockerd of the test's own; ``env`` points docker clients at it."""

    folder: Path
    process: subprocess.Popen[bytes]
    env: dict[str, str]

    def docker(self, *args: str, timeout: float = 120) -> str:
        return _run(["docker", *args], self.env, timeout).stdout

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        # dockerd unmounts its layers when it stops; whatever is left is its own.
        subprocess.run(["umount", "-R", str(self.folder)], capture_output=True)
        shutil.rmtree(self.folder, ignore_errors=True)


def _start_engine() -> Engine:
    # A short path: the socket's path must fit in 108 bytes.
    folder = Path(tempfile.mkdtemp(prefix="sarsdk", dir="/tmp"))
    socket_path = folder / "docker.sock"
    with (folder / "dockerd.log").open("wb") as log:
        process = subprocess.Popen(
            [
                "dockerd",
                "--data-root", str(folder / "data"),
                "--exec-root", str(folder / "exec"),
                "--host", f"unix://{socket_path}",
                "--pidfile", str(folder / "dockerd.pid"),
                "--storage-driver", "overlay2",
                "--iptables=false",
                "--bridge=none",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    env = {
        **os.environ,
        "DOCKER_HOST": f"unix://{socket_path}",
        "DOCKER_BUILDKIT": "0",
        "COMPOSE_DOCKER_CLI_BUILD": "0",
    }
    engine = Engine(folder, process, env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if _run(["docker", "version"], env, check=False).returncode == 0:
            return engine
        time.sleep(0.5)
    log_tail = (folder / "dockerd.log").read_text(errors="replace").splitlines()[-5:]
    engine.stop()
    pytest.skip(f"dockerd did not start: {' / '.join(log_tail)}")


@dataclass
class Stack:
    """The compose project under test, one name of its own, reached on ``url``."""

    engine: Engine
    compose_command: list[str]
    project: str
    url: str
    env: dict[str, str]
    settings: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    def compose(
        self,
        *args: str,
        files: tuple[str, ...] = (),
        timeout: float = 900,
        env: dict[str, str] | None = None,
    ) -> str:
        """Runs compose; ``env`` adds variables for the file's interpolation."""
        command = [*self.compose_command, "-p", self.project, *files, *args]
        return _run(command, {**self.env, **(env or {})}, timeout).stdout

    def containers(self, service: str, running: bool = True) -> list[str]:
        filters = [
            "--filter", f"label=com.docker.compose.project={self.project}",
            "--filter", f"label=com.docker.compose.service={service}",
        ]  # fmt: skip
        listed = self.engine.docker("ps", *([] if running else ["-a"]), "-q", *filters)
        return listed.split()

    def healthy(self, service: str) -> tuple[list[str], list[str]]:
        """The running containers of ``service``, and those of them whose healthcheck passes."""
        ids = self.containers(service)
        healthy = [
            cid
            for cid in ids
            if self.engine.docker("inspect", "-f", "{{.State.Health.Status}}", cid).strip()
            == "healthy"
        ]
        return ids, healthy

    def wait_healthy(self, service: str, containers: int) -> list[str]:
        """Until `containers` containers of ``service`` run and are healthy; their ids."""
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            ids, healthy = self.healthy(service)
            if len(ids) == containers == len(healthy):
                return ids
            time.sleep(1)
        raise AssertionError(f"{containers} {service} containers not healthy\n{self.logs()}")

    def wait_ready(self, containers: int) -> None:
        """Until `containers` api containers are healthy and /ready answers through the lb."""
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            ids, healthy = self.healthy("api")
            if len(ids) == containers == len(healthy):
                try:
                    if httpx.get(f"{self.url}/ready", timeout=5).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
            time.sleep(1)
        raise AssertionError(f"{containers} api containers not ready\n{self.logs()}")

    def logs(self, container: str | None = None) -> str:
        if container is None:
            return self.compose("logs", "--no-color", "--tail", "50")
        result = _run(["docker", "logs", container], self.engine.env)
        return result.stdout + result.stderr

    def leftovers(self) -> list[str]:
        label = f"label=com.docker.compose.project={self.project}"
        return (
            self.engine.docker("ps", "-aq", "--filter", label).split()
            + self.engine.docker("network", "ls", "-q", "--filter", label).split()
            + self.engine.docker("volume", "ls", "-q", "--filter", label).split()
        )


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    reason = _why_no_engine()
    if reason is not None:
        pytest.skip(reason)
    compose_command = _compose_command()
    assert compose_command is not None
    started = time.monotonic()
    engine = _start_engine()
    stack: Stack | None = None
    try:
        timings = {"engine": time.monotonic() - started}
        _run(["deploy/standin/build.sh"], engine.env, timeout=1800)
        timings["stand-ins"] = time.monotonic() - started - sum(timings.values())
        _run(["scripts/wheelhouse.sh"], engine.env, timeout=600)
        timings["wheelhouse"] = time.monotonic() - started - sum(timings.values())
        port = free_port()
        # README: `cp deploy/compose.env.example .env`, then set the secrets. A file of the
        # test's own (--env-file), so that a developer's .env plays no part.
        env_file = engine.folder / "compose.env"
        settings = {
            "POSTGRES_PASSWORD": uuid.uuid4().hex,
            "API_TOKENS": TOKEN,
            "CURSOR_SECRET": uuid.uuid4().hex,
            "LB_PORT": str(port),
            "DATA_DIR": str(SARS_DATA),
            "WHEELHOUSE": "wheelhouse",
        }
        example = (REPO_ROOT / "deploy" / "compose.env.example").read_text().splitlines()
        kept = [line for line in example if line.lstrip("#").split("=")[0] not in settings]
        env_file.write_text(
            "\n".join([*kept, *(f"{name}={value}" for name, value in settings.items())]) + "\n"
        )
        stack = Stack(
            engine, [*compose_command, "--env-file", str(env_file)],
            f"sarstest{uuid.uuid4().hex[:8]}", f"http://127.0.0.1:{port}", engine.env, settings,
            timings,
        )  # fmt: skip
        stack.compose("up", "-d", "--build")
        stack.wait_ready(1)
        timings["up --build"] = time.monotonic() - started - sum(timings.values())
        yield stack
    finally:
        try:
            if stack is not None:
                stack.compose(*REPLICAS, "down", "-v", files=PGBOUNCER)
                left = stack.leftovers()
                assert not left, f"down -v left {left}"
        finally:
            engine.stop()
        assert not engine.folder.exists()
        print(f"compose stack timings (s): {stack.timings if stack else None}")


def _get(stack: Stack, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(f"{stack.url}{path}", timeout=30, **kwargs)


def test_ready_through_the_load_balancer(stack: Stack) -> None:
    response = _get(stack, "/ready")
    assert response.status_code == 200, response.text


def test_the_loader_loads_the_who_file(stack: Stack) -> None:
    if not (SARS_DATA / "sars_2003.csv").exists():
        pytest.skip(f"the SARS data set is not at {SARS_DATA} (it lives in ../shared)")
    output = stack.compose("--profile", "load", "run", "--rm", "loader")
    found = re.search(
        r"read ([\d,]+) / created ([\d,]+) / updated ([\d,]+) / skipped ([\d,]+) / "
        r"rejected ([\d,]+)",
        output,
    )
    assert found, output
    read, created, updated, skipped, rejected = (int(n.replace(",", "")) for n in found.groups())
    assert (read, updated, rejected) == (WHO_RECORDS + 1, 0, 0), output
    assert created + skipped == WHO_RECORDS + 1
    page = _get(stack, "/records", params={"date_to": "2003-07-11", "page": 1, "per_page": 1})
    assert page.json()["total"] == WHO_RECORDS


def _requests_per_container(stack: Stack, request_ids: list[str]) -> Counter[str]:
    """How many of the request ids each api container logged (each must be logged once)."""
    seen: Counter[str] = Counter()
    per_container: Counter[str] = Counter()
    for container in stack.containers("api"):
        logs = stack.logs(container)
        for request_id in request_ids:
            lines = logs.count(request_id)
            seen[request_id] += lines
            per_container[container] += lines
    assert set(seen.values()) == {1}, "every request is logged once, by one container"
    return per_container


def test_requests_reach_every_scaled_container(stack: Stack) -> None:
    stack.compose("up", "-d", "--scale", "api=3")
    stack.wait_ready(3)
    request_ids = [f"spread-{uuid.uuid4().hex}" for _ in range(60)]
    # nginx caches the DNS answer 5 s: keep asking until the answer includes all three.
    deadline = time.monotonic() + 30
    while True:
        for request_id in request_ids:
            response = _get(stack, "/countries", headers={"X-Request-ID": request_id})
            assert response.status_code == 200
        per_container = _requests_per_container(stack, request_ids)
        if len(per_container) == 3 and min(per_container.values()) > 0:
            break
        assert time.monotonic() < deadline, per_container
        request_ids = [f"spread-{uuid.uuid4().hex}" for _ in range(60)]


def _write_and_read_back(stack: Stack) -> None:
    country = f"Compose {uuid.uuid4().hex[:12]}"
    created = httpx.post(
        f"{stack.url}/records",
        json={"country": country, "date": "2003-12-01", "cases": 3},
        headers=AUTH,
        timeout=30,
    )
    assert created.status_code == 201, created.text
    record = created.json()
    read = _get(stack, f"/records/{record['id']}")
    assert read.status_code == 200
    assert read.json() == record
    refused = httpx.post(
        f"{stack.url}/records", json={"country": country, "date": "2003-12-02"}, timeout=30
    )
    assert refused.status_code == 401


def test_a_write_with_a_token_reads_back(stack: Stack) -> None:
    _write_and_read_back(stack)


@dataclass
class Outcome:
    statuses: Counter[int | str] = field(default_factory=Counter)
    batches: dict[str, int | str] = field(default_factory=dict)


def _client(stack: Stack, writes: bool, stop: threading.Event, outcome: Outcome) -> None:
    """Requests through the lb until ``stop``; a writer sends batches of 20 new records."""
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        while not stop.is_set():
            try:
                if writes:
                    country = f"Drain {uuid.uuid4().hex[:12]}"
                    batch = [
                        {"country": country, "date": f"2003-11-{day:02d}", "cases": day}
                        for day in range(1, 21)
                    ]
                    response = client.post("/records/bulk", json={"records": batch}, headers=AUTH)
                    outcome.batches[country] = response.status_code
                else:
                    response = client.get("/records", params={"limit": 20})
                outcome.statuses[response.status_code] += 1
            except httpx.TransportError as error:
                outcome.statuses[type(error).__name__] += 1
                if writes:
                    outcome.batches[country] = type(error).__name__


def test_a_stopped_api_container_drains_and_the_lb_moves_on(stack: Stack) -> None:
    stack.compose("up", "-d", "--scale", "api=3")
    stack.wait_ready(3)
    victim = stack.containers("api")[0]
    stop = threading.Event()
    outcomes = [Outcome() for _ in range(3)]
    clients = [
        threading.Thread(target=_client, args=(stack, index == 0, stop, outcomes[index]))
        for index in range(3)
    ]
    for thread in clients:
        thread.start()
    try:

        def done() -> int:
            return sum(sum(outcome.statuses.values()) for outcome in outcomes)

        while done() < 100:
            time.sleep(0.05)
        stopped = time.monotonic()
        stack.engine.docker("stop", victim, timeout=60)
        stop_seconds = time.monotonic() - stopped
        before = done()
        # Long enough for nginx to forget the stopped container's address (valid=5s).
        while done() < before + 300 or time.monotonic() - stopped < stop_seconds + 8:
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in clients:
            thread.join()
    exit_code = stack.engine.docker("inspect", "-f", "{{.State.ExitCode}}", victim).strip()
    assert exit_code == "0", stack.logs(victim)
    reads = outcomes[1].statuses + outcomes[2].statuses
    writes = outcomes[0].statuses
    lb_errors = [
        line for line in stack.logs(stack.containers("lb")[0]).splitlines() if "[error]" in line
    ]
    print(f"drain: reads {dict(reads)}, writes {dict(writes)}, docker stop {stop_seconds:.2f} s")
    assert set(reads) == {200} and set(writes) == {200}, (reads, writes, lb_errors)
    # Nothing half-written: each batch is there in full (it was answered 200) or not at all.
    for country, status in outcomes[0].batches.items():
        page = _get(stack, "/records", params={"country": country, "page": 1, "per_page": 1})
        assert page.json()["total"] == (20 if status == 200 else 0), (country, status)
    stack.compose("up", "-d", "--scale", "api=3")


def test_the_pgbouncer_overlay_serves_reads_and_writes(stack: Stack) -> None:
    stack.compose("up", "-d", files=PGBOUNCER)
    stack.wait_ready(1)
    (api,) = stack.containers("api")
    environment = stack.engine.docker("inspect", "-f", "{{json .Config.Env}}", api)
    assert "@pgbouncer:6432/" in environment, environment
    assert "DB_TRANSACTION_POOLER=true" in environment, environment
    assert stack.containers("pgbouncer")
    _write_and_read_back(stack)
    assert _get(stack, "/records", params={"limit": 50}).status_code == 200
    assert _get(stack, "/stats").status_code == 200


def _replica_urls(stack: Stack, addresses: list[str]) -> str:
    """DATABASE_REPLICA_URLS for replicas at these host:port addresses (the file's defaults)."""
    password = stack.settings["POSTGRES_PASSWORD"]
    return ",".join(
        f"postgresql+asyncpg://sars:{password}@{address}/sars" for address in addresses
    )


def _psql(stack: Stack, container: str, sql: str) -> str:
    """One statement run by the database's superuser in a PostgreSQL container, unaligned."""
    return stack.engine.docker(
        "exec", container, "psql", "-U", "sars", "-d", "sars", "-X", "-Atc", sql
    ).strip()


def _in_recovery(stack: Stack, replica: str) -> bool:
    """Whether the replica's server answers, as a standby (not yet answering: False)."""
    sql = "SELECT pg_is_in_recovery()"
    command = ["docker", "exec", replica, "psql", "-U", "sars", "-d", "sars", "-X", "-Atc", sql]
    return _run(command, stack.engine.env, 60, check=False).stdout.strip() == "t"


def _hostname(stack: Stack, container: str) -> str:
    return stack.engine.docker("inspect", "-f", "{{.Config.Hostname}}", container).strip()


def _container_name(stack: Stack, container: str) -> str:
    return stack.engine.docker("inspect", "-f", "{{.Name}}", container).strip().lstrip("/")


def _wait_until(
    condition: Callable[[], bool], describe: Callable[[], str], timeout: float = 120
) -> None:
    """Polls ``condition``; past ``timeout``, fails with what ``describe`` says then."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, describe()
        time.sleep(0.5)


def _assert_streaming_standbys(stack: Stack, replicas: list[str]) -> None:
    """Each replica is in recovery, and the primary streams WAL to each (by its hostname)."""
    _wait_until(
        lambda: all(_in_recovery(stack, replica) for replica in replicas),
        lambda: f"not every replica is a standby\n{stack.logs()}",
    )
    (db,) = stack.containers("db")
    expected = sorted(f"{_hostname(stack, replica)}|streaming" for replica in replicas)

    def streaming() -> list[str]:
        rows = _psql(stack, db, "SELECT application_name, state FROM pg_stat_replication")
        return sorted(rows.splitlines())

    _wait_until(lambda: streaming() == expected, lambda: f"pg_stat_replication: {streaming()}")


def _write_a_record(stack: Stack) -> httpx.Response:
    created = httpx.post(
        f"{stack.url}/records",
        json={"country": f"Replica {uuid.uuid4().hex[:12]}", "date": "2003-12-03", "cases": 5},
        headers=AUTH,
        timeout=30,
    )
    assert created.status_code == 201, created.text
    return created


def _wait_for_record_on(stack: Stack, replica: str, record_id: int) -> None:
    sql = f"SELECT count(*) FROM records WHERE id = {int(record_id)}"
    _wait_until(
        lambda: _psql(stack, replica, sql) == "1", lambda: f"record {record_id} not on {replica}"
    )


def _assert_read_your_write(stack: Stack, created: httpx.Response) -> None:
    token = created.headers.get("Consistency-Token")
    assert token, dict(created.headers)
    record = created.json()
    read = _get(stack, f"/records/{record['id']}", headers={"Consistency-Token": token})
    assert read.status_code == 200 and read.json() == record, read.text


def _wait_replicas_healthy_in_ready(stack: Stack, names: list[str]) -> None:
    def body() -> dict[str, Any]:
        response = _get(stack, "/ready")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def all_healthy() -> bool:
        replicas = body().get("replicas", [])
        return sorted(replica["name"] for replica in replicas) == sorted(names) and all(
            replica["healthy"] for replica in replicas
        )

    _wait_until(all_healthy, lambda: f"/ready: {body()}")
    assert body()["degraded"] == []


def _reads_from(stack: Stack, target: str) -> float:
    """db_reads_total of one target in /metrics (one API process behind the lb)."""
    metrics = _get(stack, "/metrics").text
    pattern = rf'^db_reads_total\{{[^}}]*target="{re.escape(target)}"[^}}]*\}} (\S+)$'
    return sum(float(found) for found in re.findall(pattern, metrics, re.MULTILINE))


def test_a_streaming_replica_serves_the_api_reads(stack: Stack) -> None:
    """README's single replica: the profile on, `replica:5432` in DATABASE_REPLICA_URLS."""
    env = {"DATABASE_REPLICA_URLS": _replica_urls(stack, ["replica:5432"])}
    started = time.monotonic()
    stack.compose(*REPLICAS, "up", "-d", "--scale", "api=1", "--scale", "replica=1", env=env)
    stack.wait_ready(1)
    (replica,) = stack.wait_healthy("replica", 1)
    stack.timings["one replica up"] = time.monotonic() - started
    _assert_streaming_standbys(stack, [replica])
    created = _write_a_record(stack)
    _wait_for_record_on(stack, replica, created.json()["id"])
    # The core's side of the interface: /ready, Consistency-Token, db_reads_total.
    _wait_replicas_healthy_in_ready(stack, ["replica:5432"])
    _assert_read_your_write(stack, created)
    before = _reads_from(stack, "replica:5432")
    for _ in range(5):
        assert _get(stack, "/records", params={"limit": 5}).status_code == 200
    assert _reads_from(stack, "replica:5432") >= before + 5


def test_scaled_replicas_each_copy_the_primary_and_serve_behind_pgbouncer(stack: Stack) -> None:
    """`--scale replica=2` with the PgBouncer overlay: the API reaches each replica by name."""
    started = time.monotonic()
    stack.compose(*REPLICAS, "up", "-d", "--scale", "replica=2", "replica", files=PGBOUNCER)
    replicas = stack.wait_healthy("replica", 2)
    names = sorted(f"{_container_name(stack, replica)}:5432" for replica in replicas)
    urls = _replica_urls(stack, names)
    stack.compose(
        *REPLICAS, "up", "-d", "--scale", "api=1", "--scale", "replica=2",
        files=PGBOUNCER, env={"DATABASE_REPLICA_URLS": urls},
    )  # fmt: skip
    stack.wait_ready(1)
    stack.timings["two replicas up"] = time.monotonic() - started
    (api,) = stack.containers("api")
    environment = stack.engine.docker("inspect", "-f", "{{json .Config.Env}}", api)
    assert "@pgbouncer:6432/" in environment and f"DATABASE_REPLICA_URLS={urls}" in environment
    _assert_streaming_standbys(stack, replicas)
    created = _write_a_record(stack)
    for replica in replicas:
        _wait_for_record_on(stack, replica, created.json()["id"])
    # A restarted replica runs its copy again, which catches up: no second pg_basebackup.
    restarted = replicas[0]
    stack.engine.docker("restart", restarted, timeout=120)
    stack.wait_healthy("replica", 2)
    assert stack.logs(restarted).count("copying the primary") == 1, stack.logs(restarted)
    _assert_streaming_standbys(stack, replicas)
    _wait_for_record_on(stack, restarted, _write_a_record(stack).json()["id"])
    # The core's side of the interface.
    _wait_replicas_healthy_in_ready(stack, names)
    _assert_read_your_write(stack, _write_a_record(stack))


def _compose_config(*options: str, **environment: str) -> subprocess.CompletedProcess[str]:
    """`docker-compose [options] config -q`, with CURSOR_SECRET only if given."""
    env = {k: v for k, v in os.environ.items() if k != "CURSOR_SECRET"}
    return subprocess.run(
        ["docker-compose", *options, "config", "-q"],
        cwd=REPO_ROOT,
        env={**env, **environment},
        capture_output=True,
        text=True,
        timeout=60,
    )


@needs_commands("docker-compose")
def test_the_stack_refuses_to_start_without_a_cursor_secret() -> None:
    for missing in ({}, {"CURSOR_SECRET": ""}):
        refused = _compose_config(**missing)
        assert refused.returncode != 0
        assert "CURSOR_SECRET" in refused.stderr
    assert _compose_config(CURSOR_SECRET="a-secret-of-our-own").returncode == 0


@needs_commands("docker-compose")
def test_the_example_env_file_must_be_completed() -> None:
    example = str(REPO_ROOT / "deploy" / "compose.env.example")
    done = subprocess.run(
        ["docker-compose", "--env-file", example, "config", "-q"],
        cwd=REPO_ROOT,
        env={k: v for k, v in os.environ.items() if k != "CURSOR_SECRET"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "CURSOR_SECRET" in done.stderr


@needs_commands("docker-compose")
def test_the_replicas_profile_is_valid_alone_and_with_the_pgbouncer_overlay() -> None:
    for files in ((), PGBOUNCER):
        checked = _compose_config(*files, *REPLICAS, CURSOR_SECRET="a-secret-of-our-own")
        assert checked.returncode == 0, checked.stderr
