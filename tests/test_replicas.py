"""Reads from streaming hot standbys, end to end: the service under Hypercorn against a real
primary and real standbys (tests/replication.py), lag made on purpose by pausing replay.

Which node served a read shows twice: in the data (a standby whose replay is paused still has
the old value) and in the delta of ``db_reads_total`` by target of one API process.
"""

from __future__ import annotations

import re
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from tests.conftest import AUTH, TOKEN
from tests.databases import in_a_thread
from tests.live import live_server
from tests.pgcluster import Cluster, needs_postgres_binaries
from tests.replication import WAIT_GUARD_SECONDS, Replication, wait_for

pytestmark = [pytest.mark.e2e, needs_postgres_binaries()]

TOKEN_HEADER = "Consistency-Token"
# How long a promoted standby may take to be written to through the service.
WRITES_RESUME_WITHIN = 30.0
READS_TOTAL = re.compile(r'^db_reads_total\{target="([^"]+)"\} (\S+)$', re.MULTILINE)


@pytest.fixture
def database(replicas: Replication) -> Iterator[str]:
    """A migrated database of the test's own on the primary, replayed by every standby."""
    name = f"replicas_{uuid.uuid4().hex[:12]}"
    in_a_thread(lambda: replicas.create_database(name))
    yield name
    replicas.drop_database(name)


@contextmanager
def serving(
    replication: Replication,
    database: str,
    log: Path,
    standbys: list[Cluster],
    *,
    database_url: str | None = None,
    max_lag_bytes: int = 16 * 1024 * 1024,
    **settings: str,
) -> Iterator[httpx.Client]:
    """The service reading from ``standbys``; a client of it (authorised for writes).

    Health checks ten times a second; no replica left out for the age of its last replayed
    transaction: a paused replay makes a replica lag in bytes alone.
    """
    replica_urls = ",".join(standby.url_for(database) for standby in standbys)
    with (
        live_server(
            database_url or replication.primary_url(database),
            log,
            API_TOKENS=TOKEN,
            DATABASE_REPLICA_URLS=replica_urls,
            REPLICA_CHECK_INTERVAL="0.1",
            REPLICA_MAX_LAG_BYTES=str(max_lag_bytes),
            REPLICA_MAX_LAG_SECONDS="3600",
            **cast(dict[str, Any], settings),  # only settings: no keyword of live_server's own
        ) as server,
        httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client,
    ):
        yield client


def reads(api: httpx.Client) -> Counter[str]:
    """``db_reads_total`` of the API process, by target."""
    metrics = api.get("/metrics")
    assert metrics.status_code == 200
    return Counter(
        {target: int(float(value)) for target, value in READS_TOTAL.findall(metrics.text)}
    )


def read_with_target(
    api: httpx.Client, path: str, headers: dict[str, str] | None = None
) -> tuple[httpx.Response, Counter[str]]:
    """GET ``path``, and where the API process read it (the db_reads_total delta)."""
    before = reads(api)
    response = api.get(path, headers=headers)
    return response, reads(api) - before


def readiness(api: httpx.Client) -> dict[str, Any]:
    ready = api.get("/ready")
    assert ready.status_code == 200, ready.text
    body: dict[str, Any] = ready.json()
    return body


def replica_entry(api: httpx.Client, standby: Cluster) -> dict[str, Any]:
    for entry in readiness(api).get("replicas", []):
        if entry["name"] == standby.address:
            found: dict[str, Any] = entry
            return found
    raise AssertionError(f"/ready does not list {standby.address}")


def wait_in_step(api: httpx.Client, standby: Cluster) -> None:
    """Until the API process's last health check saw the standby healthy with no lag."""
    wait_for(
        lambda: (entry := replica_entry(api, standby))["healthy"] and entry["lag_bytes"] == 0,
        f"the API sees {standby.address} healthy and caught up",
    )


def wait_degraded(api: httpx.Client, *standbys: Cluster) -> None:
    names = sorted(standby.address for standby in standbys)
    wait_for(
        lambda: sorted(readiness(api).get("degraded", [])) == names,
        f"/ready names {names} as degraded",
    )


def create_country(api: httpx.Client, name: str) -> str:
    created = api.post("/countries", json={"name": name})
    assert created.status_code == 201, created.text
    assert created.headers.get(TOKEN_HEADER)
    return created.headers["Location"]


def rename(api: httpx.Client, path: str, name: str) -> str:
    """Rename the country at ``path``; the write's consistency token."""
    renamed = api.patch(path, json={"name": name})
    assert renamed.status_code == 200, renamed.text
    token = renamed.headers.get(TOKEN_HEADER)
    assert token, f"no {TOKEN_HEADER} on a write: {dict(renamed.headers)}"
    return str(token)


@contextmanager
def lagging(replication: Replication, standby: Cluster) -> Iterator[None]:
    replication.pause_replay(standby)
    try:
        yield
    finally:
        replication.resume_replay(standby)


def test_a_read_without_a_token_comes_from_a_replica(
    replicas: Replication, database: str, tmp_path: Path
) -> None:
    standby = replicas.standbys[0]
    with serving(replicas, database, tmp_path / "api.log", [standby]) as api:
        path = create_country(api, "Before")
        replicas.wait_caught_up(standby)
        wait_in_step(api, standby)

        with lagging(replicas, standby):
            rename(api, path, "After")
            seen, target = read_with_target(api, path)
            assert seen.status_code == 200, seen.text
            assert seen.json()["name"] == "Before"  # the standby has not replayed the rename
            assert target == Counter({standby.address: 1})


def test_a_token_reads_its_write_at_once_through_another_process(
    replicas: Replication, database: str, tmp_path: Path
) -> None:
    standby = replicas.standbys[0]
    with (
        serving(replicas, database, tmp_path / "writer.log", [standby]) as writer,
        serving(replicas, database, tmp_path / "reader.log", [standby]) as reader,
    ):
        path = create_country(writer, "Before")
        replicas.wait_caught_up(standby)
        wait_in_step(reader, standby)

        with lagging(replicas, standby):
            token = rename(writer, path, "After")
            seen, target = read_with_target(reader, path, {TOKEN_HEADER: token})
            assert (seen.status_code, seen.json()["name"]) == (200, "After")
            assert target == Counter({"primary": 1})

            stale, target = read_with_target(reader, path)
            assert (stale.json()["name"], target) == ("Before", Counter({standby.address: 1}))

        replicas.wait_caught_up(standby)
        # The reader's checks see the replay next (a check that ran before the write could
        # still show it caught up with an older primary position): until then its token
        # reads go to the primary; never to a replica without the write.
        targets: list[Counter[str]] = []

        def read_from_the_replica() -> bool:
            seen, target = read_with_target(reader, path, {TOKEN_HEADER: token})
            assert (seen.status_code, seen.json()["name"]) == (200, "After")
            targets.append(target)
            return target == Counter({standby.address: 1})

        wait_for(read_from_the_replica, "a token read served by the caught-up replica")
        assert all(t in (Counter({"primary": 1}), Counter({standby.address: 1})) for t in targets)


def test_a_bad_token_reads_from_the_primary_and_is_never_an_error(
    replicas: Replication, database: str, tmp_path: Path
) -> None:
    standby = replicas.standbys[0]
    with serving(replicas, database, tmp_path / "api.log", [standby]) as api:
        path = create_country(api, "Before")
        other_cluster_token = _token_of_another_cluster(tmp_path)
        replicas.wait_caught_up(standby)
        wait_in_step(api, standby)

        with lagging(replicas, standby):
            token = rename(api, path, "After")
            middle = len(token) // 2
            forged = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
            bad_tokens = {
                "forged": forged,
                "truncated": token[: len(token) // 2],
                "garbled": "%%not a token at all%%",
                "empty": "",
                "long": "x" * 2000,
                "other cluster": other_cluster_token,
            }
            for what, bad in bad_tokens.items():
                seen, target = read_with_target(api, path, {TOKEN_HEADER: bad})
                assert seen.status_code == 200, f"{what}: {seen.status_code} {seen.text}"
                assert seen.json()["name"] == "After", what
                assert target == Counter({"primary": 1}), what


def _token_of_another_cluster(tmp_path: Path) -> str:
    """A consistency token from the service over another primary and standby."""
    with Replication(1) as other:
        in_a_thread(lambda: other.create_database("elsewhere"))
        with serving(other, "elsewhere", tmp_path / "other.log", other.standbys) as api:
            return rename(api, create_country(api, "Elsewhere"), "Still elsewhere")


def test_a_replica_over_the_lag_limit_takes_no_reads(
    replicas: Replication, database: str, tmp_path: Path
) -> None:
    standby = replicas.standbys[0]
    log = tmp_path / "api.log"
    with serving(replicas, database, log, [standby], max_lag_bytes=65536) as api:
        path = create_country(api, "Before")
        replicas.wait_caught_up(standby)
        wait_in_step(api, standby)

        with lagging(replicas, standby):
            rename(api, path, "After")
            # Megabytes of WAL the paused standby receives but does not apply.
            replicas.primary.query(
                "CREATE TABLE wal_filler AS SELECT generate_series(1, 100000) AS n", database
            )
            wait_degraded(api, standby)
            entry = replica_entry(api, standby)
            assert not entry["healthy"] and entry["lag_bytes"] > 65536, entry

            seen, target = read_with_target(api, path)
            assert (seen.status_code, seen.json()["name"]) == (200, "After")
            assert target == Counter({"primary": 1})

        replicas.wait_caught_up(standby)
        wait_degraded(api)
        wait_in_step(api, standby)


class ReadLoad:
    """Client threads each GETting one path in a loop until stopped, counting outcomes."""

    def __init__(self, url: str, path: str, clients: int = 4) -> None:
        self.url, self.path = url, path
        self.lock = threading.Lock()
        self.in_flight = 0
        self.completed = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client) for _ in range(clients)]

    def __enter__(self) -> ReadLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _client(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                with self.lock:
                    self.in_flight += 1
                try:
                    response = client.get(self.path)
                    failure = None if response.status_code == 200 else response.text[:200]
                except httpx.HTTPError as error:
                    failure = repr(error)
                with self.lock:
                    self.in_flight -= 1
                    self.completed += 1
                    if failure is not None:
                        self.failures.append(failure)

    def wait_for_more(self, count: int) -> None:
        target = self.completed + count
        wait_for(lambda: self.completed >= target, f"{count} more reads complete")


def _targets_during(api: httpx.Client, load: ReadLoad, count: int = 20) -> Counter[str]:
    """Where the load's next ``count`` reads went (after those already in flight ended)."""
    load.wait_for_more(8)
    before = reads(api)
    load.wait_for_more(count)
    return reads(api) - before


def test_a_replica_stopped_under_load_fails_no_read_and_comes_back(
    replicas: Replication, database: str, tmp_path: Path
) -> None:
    standby = replicas.standbys[0]
    with serving(replicas, database, tmp_path / "api.log", [standby]) as api:
        path = create_country(api, "Steady")
        replicas.wait_caught_up(standby)
        wait_in_step(api, standby)

        with ReadLoad(str(api.base_url), path) as load:
            assert _targets_during(api, load)[standby.address] >= 10
            with load.lock:
                in_flight_at_stop = load.in_flight
            replicas.stop_standby(standby)
            wait_degraded(api, standby)
            moved = _targets_during(api, load)
            assert moved[standby.address] == 0 and moved["primary"] >= 10, moved

            replicas.start_standby(standby)
            wait_degraded(api)
            back = _targets_during(api, load)
            assert back[standby.address] >= 10, back
        # A read the replica fails is retried once on the primary: none should fail at all.
        assert len(load.failures) <= in_flight_at_stop, (
            f"{len(load.failures)} failed, {in_flight_at_stop} in flight: {load.failures[:3]}"
        )


def test_reads_waiting_on_a_frozen_replica_move_to_the_primary(
    replicas: Replication, database: str, tmp_path: Path
) -> None:
    """A replica that stops answering (SIGSTOP: connections are accepted, nothing answers)
    holds its reads only until a check goes unanswered, not for the command timeout."""
    standby = replicas.standbys[0]
    # Far above the hang guard: a read the service left waiting would fail the test.
    patience = str(10 * WAIT_GUARD_SECONDS)
    with serving(
        replicas, database, tmp_path / "api.log", [standby], DB_COMMAND_TIMEOUT=patience
    ) as api:
        path = create_country(api, "Frozen")
        replicas.wait_caught_up(standby)
        wait_in_step(api, standby)
        with ReadLoad(str(api.base_url), path) as load:
            assert _targets_during(api, load)[standby.address] >= 10
            standby.send_signal(signal.SIGSTOP)
            try:
                wait_degraded(api, standby)
                moved = _targets_during(api, load)  # the frozen replica's reads ended too
                assert moved[standby.address] == 0 and moved["primary"] >= 10, moved
            finally:
                standby.send_signal(signal.SIGCONT)
            wait_degraded(api)
        assert load.failures == []
    assert "Traceback" not in (tmp_path / "api.log").read_text()


def test_with_every_replica_down_reads_come_from_the_primary(
    replicas: Replication, database: str, tmp_path: Path
) -> None:
    with serving(replicas, database, tmp_path / "api.log", replicas.standbys) as api:
        path = create_country(api, "Alone")
        for standby in replicas.standbys:
            replicas.stop_standby(standby)
        wait_degraded(api, *replicas.standbys)
        ready = api.get("/ready")
        assert ready.status_code == 200
        assert all(not entry["healthy"] for entry in ready.json()["replicas"])

        seen, target = read_with_target(api, path)
        assert (seen.status_code, seen.json()["name"]) == (200, "Alone")
        assert target == Counter({"primary": 1})


class WriteLoad:
    """One thread creating countries until stopped: the names acknowledged (201) and when."""

    def __init__(self, api_url: str) -> None:
        self.url = api_url
        self.acknowledged: dict[str, float] = {}  # name: when its 201 arrived
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write)

    def __enter__(self) -> WriteLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _write(self) -> None:
        with httpx.Client(base_url=self.url, headers=AUTH, timeout=30) as client:
            while not self._stop.is_set():
                name = f"Country {uuid.uuid4().hex[:12]}"
                try:
                    response = client.post("/countries", json={"name": name})
                except httpx.HTTPError:
                    continue
                if response.status_code == 201:
                    with self.lock:
                        self.acknowledged[name] = time.monotonic()

    def acknowledged_after(self, moment: float) -> list[float]:
        with self.lock:
            return sorted(at for at in self.acknowledged.values() if at > moment)


def test_after_failover_writes_resume_and_no_acknowledged_write_is_lost(tmp_path: Path) -> None:
    with Replication(1, synchronous=True) as replication:
        standby = replication.standbys[0]
        in_a_thread(lambda: replication.create_database("failover"))
        with serving(
            replication,
            "failover",
            tmp_path / "api.log",
            [standby],
            database_url=replication.multi_host_url("failover"),
        ) as api:
            path = create_country(api, "Before the failover")
            old_token = rename(api, path, "Renamed before the failover")

            with WriteLoad(str(api.base_url)) as load:
                wait_for(lambda: len(load.acknowledged_after(0)) >= 20, "20 writes")
                replication.kill_primary()
                replication.promote(standby)
                promoted_at = time.monotonic()
                wait_for(
                    lambda: len(load.acknowledged_after(promoted_at)) >= 20,
                    "20 writes acknowledged after the failover",
                )
            resumed_after = load.acknowledged_after(promoted_at)[0] - promoted_at
            assert resumed_after < WRITES_RESUME_WITHIN

            seen, target = read_with_target(api, path, {TOKEN_HEADER: old_token})
            assert (seen.status_code, seen.json()["name"]) == (200, "Renamed before the failover")
            assert target == Counter({"primary": 1})

        stored = set(standby.query("SELECT name FROM countries", "failover").splitlines())
        assert set(load.acknowledged) - stored == set()
        assert "Renamed before the failover" in stored
