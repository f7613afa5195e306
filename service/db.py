"""All session plumbing: the engine, the sessionmaker and the task-scoped session.

One ``AsyncSession`` per request: ``before_request`` opens it in the scoped registry under
the request's task, handlers reach it through :func:`current_session`, and teardown removes
it. Code that runs in any other task (CLI commands, background jobs, streamed bodies, tasks a
handler spawns) opens its own with :meth:`Database.session_scope`. :func:`current_session`
never creates a session, so a task that forgot its scope fails loudly instead of leaking one.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import asyncpg
import orjson
from quart import Quart, Response, after_this_request, current_app, request
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DisconnectionError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_scoped_session,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session
from sqlalchemy.pool import ConnectionPoolEntry, Pool
from sqlalchemy.sql import ClauseElement
from werkzeug.wrappers.response import Response as WerkzeugResponse

from service.compat import aiosqlite as compat_aiosqlite
from service.compat.asyncpg import CancellableConnection
from service.compat.sqlalchemy import (
    FairQueuePool,
    holds_connection_to,
    reads_only,
    scoped_sessions,
    transaction_has_connection,
)
from service.logs import StatementWatch
from service.replicas import (
    TOKEN_HEADER,
    Replica,
    ReplicaSet,
    read_again_on_primary,
    read_primary_position,
)
from service.settings import Settings

EXTENSION_KEY = "db"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Requests whose session may read from a replica (when there are any).
READ_METHODS = frozenset({"GET", "HEAD"})

# Execution option read by the SQLite ``begin`` hook: writers take the write lock up front.
SQLITE_BEGIN = "sqlite_begin"
_WRITE_OPTIONS = {SQLITE_BEGIN: "IMMEDIATE"}
_READ_OPTIONS = {SQLITE_BEGIN: "DEFERRED"}
# PostgreSQL reads run outside a transaction block: no BEGIN/ROLLBACK round trips. Each
# statement still sees one consistent snapshot; a read of several statements may see a
# write that committed between them (READ COMMITTED allows that inside a transaction too).
_POSTGRES_READ_OPTIONS = {"isolation_level": "AUTOCOMMIT"}
_AUTOCOMMIT = _POSTGRES_READ_OPTIONS
SQLITE_BUSY_TIMEOUT_MS = 30_000
# How often a PostgreSQL backend checks, while it works, that the service is still connected.
CLIENT_CHECK_SECONDS = 1.0
# How long dispose() waits for the threads of stopped SQLite connections to finish their work.
SQLITE_THREAD_GRACE_SECONDS = 10.0


logger = logging.getLogger(__name__)
AnyResponse = Response | WerkzeugResponse


class NoSessionError(RuntimeError):
    """The current task has no session: it is outside a request and outside session_scope()."""


class SessionInUseError(RuntimeError):
    """session_scope() was entered in a task that already owns a session."""


def create_engine(
    settings: Settings, url: URL | None = None, *, pool_size: int | None = None
) -> AsyncEngine:
    """Create the engine of ``url`` (default: the primary's): the options both backends
    share, then each backend's own. ``pool_size`` makes a fixed pool of that size."""
    url = url or settings.database_url
    shared: dict[str, Any] = {
        "echo": settings.DB_ECHO,
        "hide_parameters": True,
        "json_deserializer": orjson.loads,
        "poolclass": FairQueuePool,
        "pool_size": pool_size or settings.DB_POOL_SIZE,
        "max_overflow": 0 if pool_size else settings.DB_MAX_OVERFLOW,
        "pool_timeout": settings.DB_POOL_TIMEOUT,
        "pool_pre_ping": settings.DB_POOL_PRE_PING,
    }
    if settings.is_sqlite:
        engine = create_async_engine(
            url, **shared, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        )
        event.listen(engine.sync_engine, "do_connect", _use_stop_once_connection)
        event.listen(engine.sync_engine, "connect", _configure_sqlite_connection)
        event.listen(engine.sync_engine, "begin", _begin_sqlite_transaction)
    else:
        engine = create_async_engine(url, **shared, connect_args=_pg_connect_args(settings))
        event.listen(engine.sync_engine, "do_connect", _use_shielded_connect)
        event.listen(engine.sync_engine, "checkout", _refuse_closed_connection)
    return engine


def _pg_connect_args(settings: Settings) -> dict[str, Any]:
    """asyncpg's connect arguments: every wait on the server is bounded."""
    return {
        # A dead server must fail the request within the pool timeout, not hang it.
        "timeout": settings.DB_POOL_TIMEOUT,
        # A server that stops answering (frozen, unreachable) fails the statement, the
        # rollback and the close after this long (0: never).
        "command_timeout": settings.DB_COMMAND_TIMEOUT or None,
        "connection_class": CancellableConnection,
        **_server_timeouts(settings),
        **_statement_options(settings),
    }


def _server_timeouts(settings: Settings) -> dict[str, Any]:
    """statement_timeout and lock_timeout for the service's sessions (0: none).

    A transaction pooler (PgBouncer) refuses startup parameters it does not know, so behind
    one they are set on the role instead (README, "PgBouncer").
    """
    if settings.DB_TRANSACTION_POOLER:
        return {}
    return {
        "server_settings": {
            "statement_timeout": _milliseconds(settings.DB_STATEMENT_TIMEOUT),
            "lock_timeout": _milliseconds(settings.DB_LOCK_TIMEOUT),
            # A backend whose connection the service closed (a cancelled statement) notices
            # it while it still runs or waits for a lock, and ends, instead of finishing
            # work nobody will read.
            "client_connection_check_interval": _milliseconds(CLIENT_CHECK_SECONDS),
        }
    }


def _milliseconds(seconds: float) -> str:
    return str(round(seconds * 1000))


def _refuse_closed_connection(
    dbapi_connection: Any, _record: ConnectionPoolEntry, _proxy: Any
) -> None:
    # A pooled connection whose server went away (pg_terminate_backend, a restart) has been
    # closed by asyncpg as soon as the loop read the EOF. Refusing it here makes the pool
    # open a fresh one: a pre-ping without the round trip, so no request fails for it.
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("the server closed this pooled connection")


def _statement_options(settings: Settings) -> dict[str, Any]:
    """asyncpg prepares every statement; behind a transaction pooler (PgBouncer) a prepared
    statement must not outlive its transaction, nor share a name with another client's on
    the same server connection ("does not exist" / "already exists")."""
    if settings.DB_TRANSACTION_POOLER:
        return {
            "prepared_statement_cache_size": 0,
            "prepared_statement_name_func": _unique_statement_name,
        }
    return {"prepared_statement_cache_size": settings.DB_STATEMENT_CACHE_SIZE}


def _unique_statement_name() -> str:
    return f"__asyncpg_{uuid.uuid4().hex}__"


def _use_shielded_connect(
    _dialect: Any, _record: ConnectionPoolEntry, _cargs: Any, cparams: dict[str, Any]
) -> None:
    cparams["async_creator_fn"] = _connect_shielded


async def _connect_shielded(*args: Any, **kwargs: Any) -> Any:
    """Open an asyncpg connection that a cancelled caller cannot leave half-made.

    A connect cancelled mid-handshake leaves asyncpg's protocol futures to fail later
    ("Future exception was never retrieved") and may leak the socket; instead the handshake
    finishes in its own task and the orphaned connection is closed.
    """
    connecting = asyncio.ensure_future(asyncpg.connect(*args, **kwargs))
    try:
        return await asyncio.shield(connecting)
    except asyncio.CancelledError:
        connecting.add_done_callback(_discard_orphaned_connection)
        raise


def _discard_orphaned_connection(connecting: asyncio.Future[Any]) -> None:
    if connecting.cancelled() or connecting.exception() is not None:
        return
    connecting.result().terminate()


def _use_stop_once_connection(
    _dialect: Any, _record: ConnectionPoolEntry, _cargs: Any, cparams: dict[str, Any]
) -> None:
    cparams["async_creator_fn"] = compat_aiosqlite.connect


def _configure_sqlite_connection(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # The driver's own transaction handling skips BEGIN before SELECT and SAVEPOINT, which
    # breaks isolation and savepoints; switch it off and emit BEGIN ourselves (see below).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()
    # SQLite's built-in lower() folds ASCII letters only, so a case-insensitive search (GET
    # /countries?q=) missed "Écosse" for "écosse" where PostgreSQL finds it: Python's folds
    # every letter, as PostgreSQL's does under a UTF-8 ctype.
    dbapi_connection.create_function("lower", 1, _lower, deterministic=True)


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _begin_sqlite_transaction(connection: Connection) -> None:
    # A deferred transaction that reads and then writes cannot wait for the write lock (SQLite
    # answers "database is locked" at once), so writers take it with BEGIN IMMEDIATE, where
    # the busy timeout makes them queue.
    mode = connection.get_execution_options().get(SQLITE_BEGIN, "IMMEDIATE")
    connection.exec_driver_sql(f"BEGIN {mode}")


class RoutingSession(Session):
    """The session class when read replicas are configured (SQLAlchemy's way to route an
    ``AsyncSession``: ``get_bind`` of its ``sync_session_class``).

    A session given a ``replica`` sends that replica its plain SELECTs, and the primary
    everything else: flushes, writes, ``FOR UPDATE``, raw SQL, ``connection()`` and whatever
    SQLAlchemy does not name the statement of (an ORM ``UNION``). Only the sessions of GET
    and HEAD requests, and scopes that ask for it, are given one.
    """

    replica: Replica | None = None
    # Whether this is a GET or HEAD request's session: its reads are counted by server.
    reads = False
    # Whether a commit succeeded: a write response then carries a consistency token.
    committed = False

    def get_bind(
        self,
        mapper: Any = None,
        *,
        clause: ClauseElement | None = None,
        **kw: Any,
    ) -> Engine | Connection:
        replica = self.replica
        if replica is not None and clause is not None and reads_only(clause):
            return replica.sync_engine
        return super().get_bind(mapper, clause=clause, **kw)


@event.listens_for(RoutingSession, "after_commit")
def _remember_commit(session: Session) -> None:
    session.committed = True  # type: ignore[attr-defined]


class Database:
    """The engine, the sessionmaker and the task-scoped registry of one app or one script."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._engine: AsyncEngine | None = None
        # Counts and times statements across engines (dispose() and a later use make a new one).
        self.statements = StatementWatch(settings)
        # Read replicas (service.replicas); without them, the plain Session and no routing.
        self.replicas: ReplicaSet | None = None
        self.sessionmaker = async_sessionmaker(expire_on_commit=False)
        if settings.DATABASE_REPLICA_URLS:
            self.replicas = ReplicaSet(settings, self._replica_engine)
            self.sessionmaker.configure(sync_session_class=RoutingSession)
        self._routing = self.replicas is not None
        self.scoped = async_scoped_session(self.sessionmaker, scopefunc=asyncio.current_task)
        # Closes that outlived a cancelled caller; kept referenced so they run to the end.
        self._closing: set[asyncio.Task[None]] = set()
        # A read outside a transaction prepares and runs its statement in two round trips
        # that a transaction pooler may send to two different server connections.
        self._autocommit_reads = not settings.is_sqlite and not settings.DB_TRANSACTION_POOLER
        self._read_options = _POSTGRES_READ_OPTIONS if self._autocommit_reads else _READ_OPTIONS

    # -- engine -----------------------------------------------------------------------------

    @property
    def engine(self) -> AsyncEngine:
        """The engine, created on first use so that import and app creation touch nothing."""
        if self._engine is None:
            self._engine = create_engine(self.settings)
            self.statements.attach(self._engine)
            self.sessionmaker.configure(bind=self._engine)
        return self._engine

    def _replica_engine(self, url: URL, *, checks: bool = False) -> AsyncEngine:
        """A replica's engine for requests, or any server's one-connection engine for the
        replica checks (whose statements are not the service's: not counted)."""
        if checks:
            return create_engine(self.settings, url, pool_size=1)
        engine = create_engine(self.settings, url)
        self.statements.attach(engine)
        return engine

    @property
    def pool(self) -> Pool | None:
        """The engine's pool; None while there is no engine (nothing is created for it)."""
        return self._engine.pool if self._engine is not None else None

    def join_transaction(self, connection: AsyncConnection) -> None:
        """Bind every session to ``connection``'s open transaction, each in a SAVEPOINT.

        For tests: whatever requests commit is released into the outer transaction, which
        the test rolls back. Reads then share that transaction instead of autocommitting.
        """
        self.engine  # noqa: B018 - create the engine before rebinding the sessionmaker
        self.sessionmaker.configure(bind=connection, join_transaction_mode="create_savepoint")
        self._read_options = _READ_OPTIONS
        self._autocommit_reads = False
        # Replicas cannot see a transaction that is never committed.
        self._routing = False

    async def wait_for_closes(self) -> None:
        """Wait for session closes that outlived the (cancelled) tasks that started them."""
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def dispose(self) -> None:
        """Let pending closes finish, then close every pooled connection."""
        await self.wait_for_closes()
        if self.replicas is not None:
            await self.replicas.dispose()
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
            self.sessionmaker.configure(bind=None)
            if self.settings.is_sqlite:
                await compat_aiosqlite.join_stopped_threads(SQLITE_THREAD_GRACE_SECONDS)

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.dispose()

    # -- the task-scoped registry -------------------------------------------------------------

    @property
    def open_sessions(self) -> int:
        """How many tasks own a session right now (requests in flight plus open scopes)."""
        return len(scoped_sessions(self.scoped))

    def holds_connection(self, task: asyncio.Task[Any]) -> bool:
        """Whether ``task``'s session has a database connection checked out right now."""
        session = scoped_sessions(self.scoped).get(task)
        return session is not None and transaction_has_connection(session)

    def open_session(self, *, writes: bool, replica: Replica | None = None) -> AsyncSession:
        """Register a new session for the current task and return it; its plain reads go to
        ``replica`` when one is given."""
        if self.scoped.registry.has():
            raise SessionInUseError(
                "this task already has a session; nested scopes need a task of their own"
            )
        self.engine  # noqa: B018 - binds the sessionmaker on first use
        options = _WRITE_OPTIONS if writes else self._read_options
        session = self.scoped(execution_options=options)
        if replica is not None:
            session.sync_session.replica = replica  # type: ignore[attr-defined]
        return session

    def session(self) -> AsyncSession:
        """The current task's session; raises NoSessionError instead of creating one."""
        if not self.scoped.registry.has():
            raise NoSessionError(
                "no session in this task: code outside the request task must use "
                "'async with db.session_scope() as session'"
            )
        return self.scoped.registry()

    async def remove_session(self) -> None:
        """Close and forget the current task's session; idempotent and cancellation-safe.

        The entry leaves the registry before anything is awaited, and the close runs in a
        task of its own behind ``shield``: a cancellation landing here (a client that went
        away twice) cannot leave a registry entry or a checked-out connection behind.
        """
        registry = self.scoped.registry
        if not registry.has():
            return
        session = registry()
        registry.clear()
        closing = asyncio.ensure_future(session.close())
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
        await asyncio.shield(closing)

    @asynccontextmanager
    async def session_scope(
        self,
        *,
        commit: bool = False,
        writes: bool = True,
        reads: Literal["primary", "replica"] = "primary",
    ) -> AsyncIterator[AsyncSession]:
        """Give the current task its own session for the block, removed at exit.

        Nothing is committed unless ``commit=True`` (then only if the block succeeds);
        whatever is left uncommitted is rolled back. Its reads go to the primary unless
        ``reads="replica"`` (then to a healthy replica, if there is one; writes still go to
        the primary).
        """
        replica = None
        if reads == "replica" and self.replicas is not None and self._routing:
            await self.replicas.ensure_checked()
            replica = self.replicas.pick(None)
        session = self.open_session(writes=writes, replica=replica)
        try:
            yield session
            if commit:
                await session.commit()
        finally:
            await self.remove_session()

    # -- the request hooks --------------------------------------------------------------------

    def init_app(self, app: Quart) -> None:
        """Open a session per request and remove it at teardown; dispose at shutdown."""
        app.extensions[EXTENSION_KEY] = self
        if self.replicas is None:
            app.before_request(self._open_request_session)
            app.teardown_request(self._remove_request_session)
        else:
            app.before_serving(self._start_replica_checks)
            app.before_request(self._open_routed_request_session)
            app.teardown_request(self._remove_routed_request_session)
        app.after_serving(self.dispose)

    async def _open_request_session(self) -> None:
        self.open_session(writes=request.method in WRITE_METHODS)

    async def _remove_request_session(self, _exc: BaseException | None) -> None:
        await self.remove_session()

    # -- the request hooks with read replicas ---------------------------------------------------

    async def _start_replica_checks(self) -> None:
        assert self.replicas is not None
        self.replicas.start_checking()

    async def _open_routed_request_session(self) -> None:
        """A GET or HEAD request reads from one replica for all its statements: the one its
        consistency token allows, if any (service.replicas). A write answers with a token."""
        method = request.method
        if method in WRITE_METHODS:
            self.open_session(writes=True)
            after_this_request(self._attach_consistency_token)
            return
        session = self.open_session(writes=False)
        if method in READ_METHODS:
            assert self.replicas is not None
            routed: RoutingSession = session.sync_session  # type: ignore[assignment]
            routed.reads = True
            if self._routing:
                routed.replica = self.replicas.pick(request.headers.get(TOKEN_HEADER))

    async def _remove_routed_request_session(self, _exc: BaseException | None) -> None:
        registry = self.scoped.registry
        if registry.has():
            routed: RoutingSession = registry().sync_session  # type: ignore[assignment]
            if routed.reads:
                self._count_read(routed)
        await self.remove_session()

    def _count_read(self, session: RoutingSession) -> None:
        """Count a read request against each server it read from."""
        assert self.replicas is not None
        replica = session.replica
        if replica is not None and holds_connection_to(session, replica.sync_engine):
            replica.reads += 1
        if holds_connection_to(session, self.engine.sync_engine):
            self.replicas.primary_reads += 1

    async def reopen_on_primary(self, error: BaseException) -> bool:
        """After ``error`` ended a read on a replica (before any response was sent): give the
        request a new session on the primary and say whether to serve it again. Once only."""
        if self.replicas is None or not self.scoped.registry.has():
            return False
        routed: RoutingSession = self.scoped.registry().sync_session  # type: ignore[assignment]
        replica = routed.replica
        if replica is None or not read_again_on_primary(error):
            return False
        self.replicas.read_failed(replica, error)
        logger.warning(
            "a read on replica %s failed (%s); reading again on the primary",
            replica.name,
            type(error).__name__,
        )
        await self._remove_routed_request_session(error)
        self.open_session(writes=False).sync_session.reads = True  # type: ignore[attr-defined]
        return True

    async def _attach_consistency_token(self, response: AnyResponse) -> AnyResponse:
        """A write that committed answers with the primary's WAL position after its commit."""
        if response.status_code >= 400 or not self.scoped.registry.has():
            return response
        session = self.scoped.registry()
        if session.sync_session.committed:  # type: ignore[attr-defined]
            token = await self._consistency_token(session)
            if token is not None:
                response.headers[TOKEN_HEADER] = token
        return response

    async def _consistency_token(self, session: AsyncSession) -> str | None:
        assert self.replicas is not None
        try:
            if self._autocommit_reads and not session.in_transaction():
                connection = await session.connection(execution_options=_AUTOCOMMIT)
            else:
                connection = await session.connection()
            position = await read_primary_position(connection)
        except (SQLAlchemyError, OSError, TimeoutError) as error:
            # The write is committed: it answers without a token, and its client's next read
            # may be served by a replica that has not replayed it yet.
            logger.warning("no consistency token for this write (%s)", type(error).__name__)
            return None
        return self.replicas.token(position)


def get_database(app: Quart | None = None) -> Database:
    """The Database of ``app`` (default: the current app)."""
    database = (app or current_app).extensions[EXTENSION_KEY]
    assert isinstance(database, Database)
    return database


def current_session() -> AsyncSession:
    """The session of the task being served: the same object for the whole request."""
    return get_database().session()
