"""Read replicas: which hot standbys may serve a read right now, and the consistency token.

Each worker checks the primary and every replica every ``REPLICA_CHECK_INTERVAL`` seconds.
The primary's check reads its WAL position, timeline and system identifier; a replica's reads
how far it has replayed. A replica takes reads while its last check succeeded, it is a standby
of the same cluster on the primary's timeline, and it lags by no more than
``REPLICA_MAX_LAG_BYTES`` and ``REPLICA_MAX_LAG_SECONDS``. A read that fails on a replica marks
it unhealthy until its next good check.

After a write commits, the response carries a *consistency token*: the primary's WAL position
after the commit, with the cluster's system identifier and timeline, signed with
``CURSOR_SECRET``. A read presenting it goes to a replica that, at its last check, had replayed
past that position, else to the primary. A token that is forged, older than
``READ_TOKEN_TTL``, from another cluster or from an earlier timeline (a failover since) sends
its read to the primary. Nothing is kept per client: any worker of any process that shares the
secret and the database serves the token the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
from sqlalchemy import event, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry

from service.errors import translate_database_error
from service.settings import Settings
from service.signing import sign, unsign

logger = logging.getLogger(__name__)

# Sent with every successful write response, and read from GET and HEAD requests.
TOKEN_HEADER = "Consistency-Token"
TOKEN_VERSION = 1
# How long one check of one server may take: connecting included.
CHECK_TIMEOUT_SECONDS = 2.0
# WAL positions as integers (bytes since 0/0), and the timeline from the current WAL file's
# name (its first eight hex digits): one round trip, on the primary only.
PRIMARY_POSITION = text(
    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint AS lsn, "
    "pg_walfile_name(pg_current_wal_lsn()) AS wal_file, "
    "(SELECT system_identifier FROM pg_control_system()) AS system_id"
)
REPLICA_POSITION = text(
    "SELECT pg_is_in_recovery() AS in_recovery, "
    "pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint AS replay_lsn, "
    "(SELECT system_identifier FROM pg_control_system()) AS system_id, "
    "(SELECT received_tli FROM pg_stat_wal_receiver) AS timeline"
)
# One round trip, outside a transaction; behind a transaction pooler a statement outside a
# transaction may be prepared on one server connection and run on another, so there: inside.
_AUTOCOMMIT = {"isolation_level": "AUTOCOMMIT"}
# Primary positions remembered to date a replica's lag, at one per check.
_HISTORY = 4096


class Position(NamedTuple):
    """A point in one cluster's history: where its primary's WAL was, on which timeline."""

    system_id: int
    timeline: int
    lsn: int


def primary_position(row: Any) -> Position:
    return Position(int(row.system_id), int(row.wal_file[:8], 16), int(row.lsn))


async def read_primary_position(connection: AsyncConnection) -> Position:
    return primary_position((await connection.execute(PRIMARY_POSITION)).one())


def token_key(secret: str) -> bytes:
    """The key consistency tokens are signed with."""
    return hmac.new(secret.encode(), b"consistency-token", hashlib.sha256).digest()


def replica_name(url: URL) -> str:
    """How logs, /ready and /metrics name a replica: host:port."""
    return f"{url.host or 'localhost'}:{url.port or 5432}"


@dataclass(eq=False)
class Replica:
    """One hot standby: its engine and what its last check found."""

    name: str
    engine: AsyncEngine
    # A pool of one connection for the checks: they never wait behind requests for a
    # connection, and never show in the request pool's figures.
    check_engine: AsyncEngine
    healthy: bool = False
    replay_lsn: int = -1
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    error: str | None = "not checked yet"
    reads: int = 0
    sync_engine: Engine = field(init=False)
    # The open connections of both engines, to drop them all when the server stops answering.
    _connections: set[ConnectionPoolEntry] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self.sync_engine = self.engine.sync_engine
        for engine in (self.engine, self.check_engine):
            event.listen(engine.sync_engine, "connect", self._opened)
            event.listen(engine.sync_engine, "close", self._closed)
            event.listen(engine.sync_engine, "detach", self._closed)

    def _opened(self, _dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        self._connections.add(record)

    def _closed(self, _dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        self._connections.discard(record)

    def drop_connections(self) -> None:
        """End every connection to this server at once, in use or idle: a statement waiting
        on one fails now instead of at the command timeout, and a pool's disposal does not
        wait for a server that will not say goodbye. The pool replaces them as it needs."""
        for record in list(self._connections):
            connection = record.driver_connection
            if connection is not None and not connection.is_closed():
                connection.terminate()


class ReplicaSet:
    """The replicas of one Database, their health, and which one serves a read."""

    def __init__(self, settings: Settings, make_engine: Callable[..., AsyncEngine]) -> None:
        """``make_engine(url)`` makes a request engine, ``make_engine(url, checks=True)`` the
        one-connection engine of a server's checks."""
        self.settings = settings
        self._make_engine = make_engine
        # Derived from CURSOR_SECRET: a cursor never passes for a token, nor a token for one.
        self._token_key = token_key(settings.CURSOR_SECRET)
        self._primary_checks: AsyncEngine | None = None
        self.replicas: list[Replica] = []
        self.primary: Position | None = None
        self.primary_reads = 0
        self._healthy: Sequence[Replica] = ()
        self._turn = itertools.count()
        # (primary WAL position, when a check first saw it): dates how far behind a replica is.
        self._history: deque[tuple[int, float]] = deque(maxlen=_HISTORY)
        self._checker: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._check_options = {} if settings.DB_TRANSACTION_POOLER else _AUTOCOMMIT
        # Whether a check has run (until then, no replica takes reads), and when.
        self.checked = False
        self._checked_at = 0.0

    # -- engines ------------------------------------------------------------------------------

    def create_engines(self) -> None:
        if self._primary_checks is None:
            make = self._make_engine
            self._primary_checks = make(self.settings.database_url, checks=True)
            self.replicas = [
                Replica(replica_name(url), make(url), make(url, checks=True))
                for url in self.settings.replica_urls
            ]

    async def dispose(self) -> None:
        await self.stop_checking()
        engines = [self._primary_checks] if self._primary_checks is not None else []
        for replica in self.replicas:
            engines += [replica.engine, replica.check_engine]
        self._primary_checks, self.replicas, self._healthy = None, [], ()
        self.checked = False
        for engine in engines:
            await engine.dispose()

    # -- choosing -----------------------------------------------------------------------------

    def pick(self, token: str | None) -> Replica | None:
        """The replica a read goes to, or None for the primary."""
        candidates = self._healthy
        if not candidates:
            return None
        if token is not None:
            position = self._readable_position(token)
            if position is None:
                return None
            candidates = [replica for replica in candidates if replica.replay_lsn >= position.lsn]
            if not candidates:
                return None
        return candidates[next(self._turn) % len(candidates)]

    def _readable_position(self, token: str) -> Position | None:
        """The position a token asks for, if a replica may serve it at all."""
        payload = unsign(self._token_key, token)
        if payload is None or self.primary is None:
            return None
        try:
            version, system_id, timeline, lsn, issued = orjson.loads(payload)
        except (orjson.JSONDecodeError, TypeError, ValueError):
            return None
        # Only this service can sign, but a payload is checked like any input all the same.
        if not all(type(field) is int for field in (version, system_id, timeline, lsn)):
            return None
        if type(issued) not in (int, float):
            return None
        if version != TOKEN_VERSION or time.time() - issued > self.settings.READ_TOKEN_TTL:
            return None
        if (system_id, timeline) != (self.primary.system_id, self.primary.timeline):
            return None
        return Position(system_id, timeline, lsn)

    def token(self, position: Position) -> str:
        payload = orjson.dumps([TOKEN_VERSION, *position, round(time.time(), 3)])
        return sign(self._token_key, payload)

    def read_failed(self, replica: Replica, error: BaseException) -> None:
        """A read on ``replica`` failed; when the server did not answer, it takes no more
        reads until a check finds it well."""
        if _unreachable(error):
            self._set_unhealthy(replica, f"a read failed: {type(error).__name__}")
            self.refresh()

    # -- checking -----------------------------------------------------------------------------

    def start_checking(self) -> None:
        self.create_engines()
        if self._checker is None:
            self._stop = asyncio.Event()
            self._checker = asyncio.create_task(self._check_forever(), name="replicas")

    async def stop_checking(self) -> None:
        """Stop the checks, letting one under way finish (it is bounded): cancelled, it
        would leave a connect running on its own."""
        checker, self._checker = self._checker, None
        if checker is not None:
            self._stop.set()
            await checker

    async def ensure_checked(self) -> None:
        """Check now unless checks run on their own or the last one is recent: for scripts
        and jobs that opt in to replicas outside a server."""
        age = time.monotonic() - self._checked_at
        if self._checker is None and (
            not self.checked or age > self.settings.REPLICA_CHECK_INTERVAL
        ):
            await self.check()

    async def _check_forever(self) -> None:
        while not self._stop.is_set():
            try:
                await self.check()
            except Exception:  # a bug here must not stop the checks for the process's life
                logger.exception("replica check failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.settings.REPLICA_CHECK_INTERVAL)

    async def check(self) -> None:
        """Check the primary, then every replica at once, and choose who takes reads."""
        self.create_engines()
        assert self._primary_checks is not None
        await self._check_primary(self._primary_checks)
        await asyncio.gather(*(self._check_replica(replica) for replica in self.replicas))
        self.refresh()
        self.checked, self._checked_at = True, time.monotonic()

    def refresh(self) -> None:
        """Take reads from the replicas marked healthy, and only those."""
        self._healthy = [replica for replica in self.replicas if replica.healthy]

    async def _check_primary(self, primary: AsyncEngine) -> None:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                async with primary.connect() as connection:
                    connection = await connection.execution_options(**self._check_options)
                    position = await read_primary_position(connection)
        except Exception as error:  # the last known position stays
            logger.debug("replica check: the primary did not answer (%s)", type(error).__name__)
            return
        self.primary = position
        if not self._history or self._history[-1][0] != position.lsn:
            self._history.append((position.lsn, time.monotonic()))

    async def _check_replica(self, replica: Replica) -> None:
        checking = asyncio.ensure_future(self._replica_position(replica))
        done, _ = await asyncio.wait({checking}, timeout=CHECK_TIMEOUT_SECONDS)
        if not done:
            # No answer: frozen or cut off. It takes no more reads from now, and the reads
            # waiting on it are freed to be read again on the primary (service.asgi).
            self._check_failed(replica, f"no answer in {CHECK_TIMEOUT_SECONDS:g} s")
            self.refresh()
            replica.drop_connections()
            checking.cancel()
            await asyncio.gather(checking, return_exceptions=True)
            return
        try:
            row = checking.result()
        except Exception as error:  # any failure: no reads until it recovers
            self._check_failed(replica, _describe(error))
            return
        problem = self._judge(replica, row)
        if problem is None:
            self._set_healthy(replica)
        else:
            self._set_unhealthy(replica, problem)

    async def _replica_position(self, replica: Replica) -> Any:
        async with replica.check_engine.connect() as connection:
            connection = await connection.execution_options(**self._check_options)
            return (await connection.execute(REPLICA_POSITION)).one()

    def _check_failed(self, replica: Replica, reason: str) -> None:
        """A check found nothing: the lag is unknown and the replica takes no reads."""
        replica.lag_bytes = replica.lag_seconds = None
        self._set_unhealthy(replica, f"check failed: {reason}")

    def _judge(self, replica: Replica, row: Any) -> str | None:
        """Record what a replica's check found; why it may not take reads, or None."""
        replica.lag_bytes = replica.lag_seconds = None
        if not row.in_recovery:
            return "not a standby (not in recovery)"
        replica.replay_lsn = int(row.replay_lsn) if row.replay_lsn is not None else -1
        primary = self.primary
        if primary is None:  # the primary never answered: the lag is unknown
            return None
        if int(row.system_id) != primary.system_id:
            return "a standby of another cluster"
        if row.timeline is not None and int(row.timeline) != primary.timeline:
            return f"on timeline {row.timeline}, the primary is on {primary.timeline}"
        replica.lag_bytes = max(0, primary.lsn - replica.replay_lsn)
        replica.lag_seconds = self._seconds_behind(replica.replay_lsn)
        if replica.lag_bytes > self.settings.REPLICA_MAX_LAG_BYTES:
            return f"lags by {replica.lag_bytes} bytes"
        if replica.lag_seconds > self.settings.REPLICA_MAX_LAG_SECONDS:
            return f"lags by {replica.lag_seconds:.1f} s"
        return None

    def _seconds_behind(self, replay_lsn: int) -> float:
        """Since when the primary has had WAL that the replica has not replayed: the oldest
        primary position, as checks saw it, that lies past the replica's."""
        for lsn, seen in self._history:
            if lsn > replay_lsn:
                return round(time.monotonic() - seen, 3)
        return 0.0

    def _set_healthy(self, replica: Replica) -> None:
        if not replica.healthy:
            logger.info("replica %s takes reads", replica.name)
        replica.healthy, replica.error = True, None

    def _set_unhealthy(self, replica: Replica, reason: str) -> None:
        # Said when it stops taking reads, and when the first check finds it unfit (a
        # replica misconfigured from the start would otherwise never be named in the log).
        if replica.healthy or not self.checked:
            logger.warning("replica %s takes no reads: %s", replica.name, reason)
        replica.healthy, replica.error = False, reason


def _describe(error: BaseException) -> str:
    """The error's type and, for a driver error, the server's or driver's own words."""
    original = getattr(error, "orig", None) or error
    detail = str(original).splitlines()[0] if str(original) else ""
    return f"{type(original).__name__}: {detail}" if detail else type(original).__name__


def _unreachable(error: BaseException) -> bool:
    """Whether the server, not the statement, failed: no answer, or no connection."""
    if isinstance(error, OSError | TimeoutError | InterfaceError | OperationalError):
        return True
    if isinstance(error, DBAPIError):
        sqlstate = getattr(error.orig, "sqlstate", None) or ""
        return error.connection_invalidated or sqlstate.startswith(("08", "57P"))
    return False


def read_again_on_primary(error: BaseException) -> bool:
    """Whether a read that failed on a replica with ``error`` is worth reading again on the
    primary: what would otherwise be a 503 (no connection, no answer in time, a conflict
    with the replica's recovery)."""
    if not isinstance(error, Exception):
        return False
    translated = translate_database_error(error)
    return translated is not None and translated.status == 503
