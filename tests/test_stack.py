"""scripts/stack.sh: the whole topology on this machine, used end to end, then taken down.

A throwaway PostgreSQL cluster, PgBouncer in transaction mode, two API processes and nginx,
all on free ports under a state directory of the test's own; and the cluster with streaming
standbys the API reads from.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.live import REPO_ROOT, free_port, needs_commands
from tests.pgcluster import find_pg_bin
from tests.replication import wait_for

STACK = REPO_ROOT / "scripts" / "stack.sh"
TOKEN = "stack-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
pytestmark = [pytest.mark.e2e, needs_commands("nginx", "pgbouncer")]


def _free_ports(count: int) -> int:
    """A free port whose ``count - 1`` successors are free too (API processes, standbys)."""
    for _ in range(100):
        port = free_port()
        if port + count - 1 <= 65535 and all(_bindable(port + i) for i in range(1, count)):
            return port
    raise RuntimeError(f"no {count} consecutive free ports")


def _bindable(port: int) -> bool:
    if _listening(port):
        return False
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _processes_mentioning(text: str) -> list[str]:
    """Live processes whose command line or environment contains ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if text.encode() in cmdline or text.encode() in environ:
            command = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{proc.name}: {command}")
    return found


@pytest.fixture
def state_dir() -> Iterator[Path]:
    # Not under pytest's tmp_path: as root, the stack runs PostgreSQL as `postgres`, which
    # must be able to reach the directory.
    path = Path(tempfile.mkdtemp(prefix="sars-stack-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_stack_serves_through_nginx_and_pgbouncer_and_down_leaves_nothing(
    state_dir: Path,
) -> None:
    api_port = _free_ports(2)
    ports = {
        "STACK_PG_PORT": free_port(),
        "STACK_PGBOUNCER_PORT": free_port(),
        "STACK_LB_PORT": free_port(),
        "STACK_API_PORT": api_port,
    }
    env = {key: value for key, value in os.environ.items() if key != "STACK_DATABASE_URL"}
    env |= {key: str(port) for key, port in ports.items()}
    # INFO: each API process logs its requests (service.request), which shows where they went.
    env |= {"STACK_DIR": str(state_dir), "API_TOKENS": TOKEN, "LOG_LEVEL": "INFO"}

    def stack(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(STACK), *args], env=env, capture_output=True, text=True, timeout=180
        )

    all_ports = [*ports.values(), api_port + 1]
    try:
        up = stack("up", "--workers", "2", "--pgbouncer", "--lb")
        assert up.returncode == 0, up.stdout + up.stderr

        status = stack("status")
        assert status.returncode == 0, status.stdout + status.stderr
        pgbouncer = f"@127.0.0.1:{ports['STACK_PGBOUNCER_PORT']}/"
        api_lines = [line for line in status.stdout.splitlines() if "api-" in line[:8]]
        assert len(api_lines) == 2
        assert all("running" in line and pgbouncer in line for line in api_lines), status.stdout

        _use_the_api(f"http://127.0.0.1:{ports['STACK_LB_PORT']}")
        _follow_links_and_slashes(f"http://127.0.0.1:{ports['STACK_LB_PORT']}")
        for api in ("api-1", "api-2"):  # nginx spread the requests over both processes
            log = (state_dir / "api" / f"{api}.log").read_text()
            assert "service.request: POST /countries 201" in log, f"{api} served no write"
    finally:
        down = stack("down")
    assert down.returncode == 0, down.stdout + down.stderr

    assert [port for port in all_ports if _listening(port)] == []
    assert _processes_mentioning(str(state_dir)) == []
    assert not (state_dir / "postgres" / "data").exists()


def _use_the_api(url: str) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        health = client.get("/health")
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        ready = client.get("/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ready", "database": "ok", "migrations": "head"}

        created = client.post("/countries", json={"name": "Atlantis"}, headers=AUTH)
        assert created.status_code == 201, created.text
        fetched = client.get(created.headers["Location"])
        assert fetched.status_code == 200
        assert fetched.json()["name"] == "Atlantis"

    # Many writes and reads at once: API connections take turns on PgBouncer's server
    # connections, where prepared statements named per client connection would collide.
    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(_write_and_read, [url] * 96))
    assert outcomes == ["ok"] * 96, [outcome for outcome in outcomes if outcome != "ok"][:5]


def _follow_links_and_slashes(url: str) -> None:
    """Behind nginx (which passes Host without the port) a client walks a list by its Link
    headers, and a doubled slash is served, not redirected to an address from Host."""
    with httpx.Client(base_url=url, timeout=30) as client:
        expected = [country["id"] for country in _walk_by_next_cursor(client)]
        walked: list[int] = []
        response = client.get("/countries", params={"limit": 7})
        while True:
            assert response.status_code == 200, response.text
            walked += [country["id"] for country in response.json()["items"]]
            if "next" not in response.links:
                break
            link = response.links["next"]["url"]
            assert link.startswith("/countries?"), link
            response = client.get(response.url.join(link))
        assert walked == expected and len(walked) > 7

        country_id = expected[0]
        doubled = client.get(f"/countries//{country_id}", headers={"Host": "attacker.example"})
        assert doubled.status_code == 200 and "location" not in doubled.headers
        assert doubled.json()["id"] == country_id


def _walk_by_next_cursor(client: httpx.Client) -> list[dict[str, object]]:
    items: list[dict[str, object]] = []
    params: dict[str, str | int] = {"limit": 500}
    while True:
        page = client.get("/countries", params=params).json()
        items += page["items"]
        if page["next_cursor"] is None:
            return items
        params["cursor"] = page["next_cursor"]


def _write_and_read(url: str) -> str:
    name = f"Country {uuid.uuid4().hex[:12]}"
    with httpx.Client(base_url=url, timeout=30, headers=AUTH) as client:
        country = client.post("/countries", json={"name": name})
        if country.status_code != 201:
            return f"POST /countries {country.status_code} {country.text}"
        record = client.post(
            "/records",
            json={"country": name, "date": "2003-04-12", "cases": 3, "deaths": 1},
        )
        if record.status_code != 201:
            return f"POST /records {record.status_code} {record.text}"
        listed = client.get("/records", params={"country": name})
        if listed.status_code != 200 or [item["cases"] for item in listed.json()["items"]] != [3]:
            return f"GET /records {listed.status_code} {listed.text}"
        summary = client.get(f"/countries/{country.json()['id']}/summary")
        if summary.status_code != 200 or summary.json()["deaths"] != 1:
            return f"GET summary {summary.status_code} {summary.text}"
    return "ok"


def test_stack_with_replicas_streams_to_standbys_the_api_reads_from(state_dir: Path) -> None:
    pg_port, api_port = _free_ports(3), free_port()
    standby_ports = [pg_port + 1, pg_port + 2]
    env = {key: value for key, value in os.environ.items() if key != "STACK_DATABASE_URL"}
    env |= {"STACK_PG_PORT": str(pg_port), "STACK_API_PORT": str(api_port)}
    env |= {"STACK_DIR": str(state_dir), "API_TOKENS": TOKEN}

    def stack(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(STACK), *args], env=env, capture_output=True, text=True, timeout=180
        )

    try:
        up = stack("up", "--replicas", "2")
        assert up.returncode == 0, up.stdout + up.stderr
        status = stack("status")
        assert status.returncode == 0, status.stdout + status.stderr
        for i, port in enumerate(standby_ports, 1):
            assert re.search(rf"standby-{i} +running .*127\.0\.0\.1:{port}", status.stdout)

        api_pid = int((state_dir / "pids" / "api-1.pid").read_text())
        environ = Path(f"/proc/{api_pid}/environ").read_bytes().split(b"\0")
        replica_urls = ",".join(
            f"postgresql+asyncpg://postgres@127.0.0.1:{port}/sars" for port in standby_ports
        )
        assert f"DATABASE_REPLICA_URLS={replica_urls}".encode() in environ

        with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=30) as client:
            created = client.post("/countries", json={"name": "Streamed"}, headers=AUTH)
            assert created.status_code == 201, created.text
            for port in standby_ports:
                wait_for(
                    functools.partial(_has_country, port, "Streamed"),
                    f"the standby on port {port} has the new country",
                )
            ready = client.get("/ready")
            assert ready.status_code == 200, ready.text
            names = [replica["name"] for replica in ready.json()["replicas"]]
            assert names == [f"127.0.0.1:{port}" for port in standby_ports]
    finally:
        down = stack("down")
    assert down.returncode == 0, down.stdout + down.stderr

    assert [port for port in [pg_port, *standby_ports, api_port] if _listening(port)] == []
    assert _processes_mentioning(str(state_dir)) == []
    assert list((state_dir / "postgres").glob("standby-*/")) == []


def _has_country(port: int, name: str) -> bool:
    pg_bin = find_pg_bin()
    assert pg_bin is not None
    psql = [str(pg_bin / "psql"), "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(port)]
    sql = "SELECT name FROM countries"
    result = subprocess.run(
        [*psql, "-U", "postgres", "-d", "sars", "-c", sql], capture_output=True, text=True
    )
    return name in result.stdout.splitlines()


def test_status_and_down_without_a_stack(state_dir: Path) -> None:
    env = {**os.environ, "STACK_DIR": str(state_dir / "none")}
    run = [str(STACK)]
    status = subprocess.run([*run, "status"], env=env, capture_output=True, text=True)
    assert status.returncode != 0
    assert "no stack" in status.stdout
    down = subprocess.run([*run, "down"], env=env, capture_output=True, text=True)
    assert down.returncode == 0, down.stderr


def test_unknown_options_are_refused() -> None:
    bad = subprocess.run([str(STACK), "up", "--wrokers", "2"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert re.search(r"stack\.sh up", bad.stderr)
