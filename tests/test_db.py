"""The task-scoped session: one per request, none leaked, whatever happens to the request."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import uuid
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from quart import Quart, Response, stream_with_context
from sqlalchemy import event, func, select
from sqlalchemy.engine import make_url

import service.asgi
from service.app import create_app
from service.compat import aiosqlite as compat_aiosqlite
from service.compat.sqlalchemy import FairQueuePool
from service.db import (
    SQLITE_BEGIN,
    Database,
    NoSessionError,
    SessionInUseError,
    create_engine,
    current_session,
    get_database,
)
from service.models import Country
from service.settings import load_settings
from tests import asgi, probe
from tests.conftest import AUTH, settings_for
from tests.gate import StatementGate
from tests.waiting import HANG_GUARD_SECONDS, until


async def _settle(db: Database) -> None:
    """Wait for closes that outlived their cancelled requests."""
    await db.wait_for_closes()
    assert db.open_sessions == 0
    assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def _idle_in_transaction(database_url: str) -> int:
    url = make_url(database_url)
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        count: int = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = $1 AND state LIKE 'idle in transaction%'",
            url.database,
        )
        return count
    finally:
        await connection.close()


@pytest.fixture
async def probed(real_app: Quart, database_url: str) -> AsyncIterator[probe.ProbeState]:
    state = probe.install(real_app, database_url)
    yield state
    state.released.set()
    assert state.gate is not None
    await state.gate.open()


def _checked_out(db: Database) -> int:
    return db.engine.pool.checkedout()  # type: ignore[attr-defined,no-any-return]


async def test_every_use_in_one_request_is_the_same_session(app: Quart) -> None:
    probe.install(app)
    response = await app.test_client().get("/probe/same")
    ids = (await response.get_json())["ids"]
    assert len(ids) == 3 and len(set(ids)) == 1


async def test_concurrent_requests_never_share_a_session(
    real_app: Quart, probed: probe.ProbeState
) -> None:
    client = real_app.test_client()
    db = get_database(real_app)
    requests = [asyncio.create_task(client.get("/probe/hold")) for _ in range(20)]
    await until(lambda: _checked_out(db) == 20, "20 requests holding a connection at once")
    assert db.open_sessions == 20
    probed.released.set()
    bodies = [await response.get_json() for response in await asyncio.gather(*requests)]
    assert all(body["same"] for body in bodies)
    assert len({body["id"] for body in bodies}) == 20
    await _settle(db)


async def test_current_session_never_creates_one(app: Quart) -> None:
    async with app.app_context():
        with pytest.raises(NoSessionError, match="session_scope"):
            current_session()
    assert get_database(app).open_sessions == 0


async def test_session_scope_outside_requests(database_url: str) -> None:
    async with Database(load_settings({"DATABASE_URL": database_url})) as db:
        async with db.session_scope(commit=True) as session:
            session.add(Country(name="Committed"))
        async with db.session_scope() as session:
            session.add(Country(name="Not committed"))
            await session.flush()
        with pytest.raises(ZeroDivisionError):
            async with db.session_scope(commit=True) as session:
                session.add(Country(name="Failed"))
                await session.flush()
                _ = 1 / 0
        async with db.session_scope(writes=False) as session:
            names = (await session.scalars(select(Country.name))).all()
            with pytest.raises(SessionInUseError):
                async with db.session_scope():
                    pass
            assert session is db.session()
        assert names == ["Committed"]
        await _settle(db)


async def test_removal_is_idempotent_and_survives_repeated_cancellation(
    database_url: str,
) -> None:
    async with Database(load_settings({"DATABASE_URL": database_url})) as db:
        removing = asyncio.Event()

        async def write_then_remove() -> None:
            session = db.open_session(writes=True)
            session.add(Country(name="Rolled back"))
            await session.flush()
            removing.set()
            await db.remove_session()

        owner = asyncio.create_task(write_then_remove())
        await removing.wait()  # the owner is now awaiting the shielded close
        owner.cancel()
        await asyncio.sleep(0)
        owner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await owner
        assert db.open_sessions == 0  # gone from the registry before the close finished
        await db.remove_session()  # nothing left to remove: a no-op
        await _settle(db)
        async with db.session_scope(writes=False) as check:
            assert await check.scalar(select(func.count()).select_from(Country)) == 0


async def test_streamed_body_uses_its_own_scope(real_app: Quart, probed: probe.ProbeState) -> None:
    response = await real_app.test_client().get("/probe/stream")
    assert (await response.get_data()) == b"0\n0\n0\n"
    await _settle(get_database(real_app))


async def test_stream_with_context_runs_teardown_twice_harmlessly(real_app: Quart) -> None:
    @real_app.get("/twice")
    async def twice() -> Response:
        await current_session().execute(select(1))

        @stream_with_context
        async def body() -> AsyncIterator[bytes]:
            yield b"ok"

        return Response(body())

    response = await real_app.test_client().get("/twice")
    assert (await response.get_data()) == b"ok"
    await _settle(get_database(real_app))


async def test_background_task_uses_its_own_scope(
    real_app: Quart, probed: probe.ProbeState
) -> None:
    response = await real_app.test_client().post("/probe/background", headers=AUTH)
    assert response.status_code == 202
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        await probed.background_done.wait()
    db = get_database(real_app)
    await _settle(db)
    async with db.session_scope(writes=False) as session:
        names = (await session.scalars(select(Country.name))).all()
    assert len(names) == 1 and names[0].startswith("background-")


async def test_spawned_tasks_need_their_own_scope(
    real_app: Quart, probed: probe.ProbeState
) -> None:
    response = await real_app.test_client().get("/probe/spawn")
    assert await response.get_json() == {"counted": 0, "forgot": "NoSessionError"}
    await _settle(get_database(real_app))


@pytest.mark.sqlite_only
async def test_sqlite_concurrent_read_then_write_requests_all_succeed(
    real_app: Quart, probed: probe.ProbeState
) -> None:
    client = real_app.test_client()
    responses = await asyncio.gather(
        *(client.post("/probe/write", headers={"X-Probe-Key": f"w{i}", **AUTH}) for i in range(50))
    )
    assert Counter(r.status_code for r in responses) == {201: 50}
    db = get_database(real_app)
    async with db.session_scope(writes=False) as session:
        assert await session.scalar(select(func.count()).select_from(Country)) == 50
    await _settle(db)


@pytest.mark.sqlite_only
async def test_a_connection_discarded_by_a_cancelled_task_leaves_no_task_behind(
    database_url: str,
) -> None:
    # SQLAlchemy closes a discarded connection in a task of its own; cancelling the caller
    # at different steps of that close once left the task waiting forever (see
    # StopOnceConnection), and the event loop could not shut down.
    engine = create_engine(load_settings(settings_for(database_url)))
    closing: list[asyncio.Task[Any]] = []
    with warnings.catch_warnings():
        # aiosqlite warns about connections its thread stopped before close() ran.
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            for steps in range(20):
                connection = await engine.connect()
                await connection.execution_options(**{SQLITE_BEGIN: "DEFERRED"})
                await connection.exec_driver_sql("SELECT 1")
                discarding = asyncio.create_task(connection.invalidate())
                for _ in range(steps % 4):
                    await asyncio.sleep(0)
                discarding.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await discarding
                await connection.close()
            closing = [
                task for task in asyncio.all_tasks() if "_terminate_graceful_close" in repr(task)
            ]
            if closing:  # each ends once its thread has closed the connection
                await asyncio.wait(closing, timeout=HANG_GUARD_SECONDS)
            closing = [task for task in closing if not task.done()]
            assert closing == []
        finally:
            for task in closing:  # a failure must not also hang the test's event loop
                task.cancel()
            await engine.dispose()
            gc.collect()


@pytest.mark.sqlite_only
async def test_dispose_waits_for_the_threads_of_stopped_sqlite_connections(
    database_url: str,
) -> None:
    # A request cancelled in the middle of a query leaves the query running in the
    # connection's thread, and the pool stops that connection without waiting for it. Had the
    # event loop closed first (the end of a test, a shutdown), the thread would fail to post
    # its result to it: "Event loop is closed", in a thread nobody joins.
    db = Database(load_settings(settings_for(database_url)))
    db.engine  # noqa: B018 - an engine to dispose
    connection = await compat_aiosqlite.connect(make_url(database_url).database or "")
    gate = StatementGate(database_url)
    await connection.create_function("probe_gate", 0, gate.wait_in_thread)
    async with gate:
        query = asyncio.ensure_future(connection.execute(gate.statement().text))
        await gate.wait_until_blocked()
        query.cancel()
        connection.stop()
        disposing = asyncio.create_task(db.dispose())
        for _ in range(20):
            await asyncio.sleep(0)
        assert not disposing.done()  # it waits for the thread, which waits at the gate
        assert compat_aiosqlite.worker_thread(connection).is_alive()
    await disposing
    assert not compat_aiosqlite.worker_thread(connection).is_alive()
    with contextlib.suppress(asyncio.CancelledError):
        await query


def _watch_the_grace(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """An event set when a request whose client left is given a grace."""
    granted = asyncio.Event()
    grace_after_disconnect = service.asgi.ServiceHTTPConnection.grace_after_disconnect

    def watched(connection: service.asgi.ServiceHTTPConnection, task: asyncio.Task[Any]) -> float:
        grace = grace_after_disconnect(connection, task)
        if grace > 0:
            granted.set()
        return grace

    monkeypatch.setattr(service.asgi.ServiceHTTPConnection, "grace_after_disconnect", watched)
    return granted


async def test_a_client_that_leaves_mid_statement_costs_no_connection(
    real_app: Quart, probed: probe.ProbeState, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Cancelled in the middle of a statement, a request's connection would be closed and
    # reopened by the next request: the request finishes instead, and its connection goes
    # back to the pool. The statement ends when the test says so, well within the grace.
    monkeypatch.setattr(service.asgi, "DISCONNECT_GRACE_SECONDS", HANG_GUARD_SECONDS)
    granted = _watch_the_grace(monkeypatch)
    db = get_database(real_app)
    assert (await asgi.call(real_app, "GET", "/probe/read")).status == 200
    opened: list[object] = []
    event.listen(db.engine.sync_engine, "connect", lambda *_: opened.append(None))
    key = uuid.uuid4().hex
    gone = asyncio.Event()
    assert probed.gate is not None
    async with probed.gate as gate:
        call = asyncio.create_task(
            asgi.call(
                real_app, "GET", "/probe/blocked", headers={"X-Probe-Key": key}, disconnect=gone
            )
        )
        await gate.wait_until_blocked()
        assert db.holds_connection(probed.tasks[key])
        gone.set()
        async with asyncio.timeout(HANG_GUARD_SECONDS):
            await granted.wait()
    exchange = await call
    assert not call.cancelled() and exchange.status == 200
    assert (await asgi.call(real_app, "GET", "/probe/read")).status == 200
    await _settle(db)
    assert opened == []


async def test_a_request_still_holding_its_connection_after_the_grace_is_cancelled(
    real_app: Quart, probed: probe.ProbeState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service.asgi, "DISCONNECT_GRACE_SECONDS", 0.01)
    granted = _watch_the_grace(monkeypatch)
    db = get_database(real_app)
    gone = asyncio.Event()
    key = uuid.uuid4().hex
    # /probe/hold keeps its connection until the test releases it, which it never does.
    call = asyncio.create_task(
        asgi.call(real_app, "GET", "/probe/hold", headers={"X-Probe-Key": key}, disconnect=gone)
    )
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        await probed.moment(f"{key}:holding").wait()
    assert db.holds_connection(probed.tasks[key])
    gone.set()
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        exchange = await call
    assert granted.is_set() and not probed.released.is_set()
    assert exchange.status is None
    await _settle(db)


async def test_a_client_that_leaves_before_its_request_has_a_connection_cancels_it(
    real_app: Quart, probed: probe.ProbeState
) -> None:
    # The grace is for connections only: a request still waiting for one (or never using
    # one) is cancelled at once, as before.
    db = get_database(real_app)
    pool_size = db.settings.DB_POOL_SIZE + db.settings.DB_MAX_OVERFLOW
    holders = [
        asyncio.create_task(asgi.call(real_app, "GET", "/probe/hold")) for _ in range(pool_size)
    ]
    await until(lambda: _checked_out(db) == pool_size, "every connection held")
    pool = db.engine.pool
    assert isinstance(pool, FairQueuePool)
    gone = asyncio.Event()
    waiting = asyncio.create_task(asgi.call(real_app, "GET", "/probe/read", disconnect=gone))
    await until(lambda: pool.waiting() == 1, "the request waits for the pool")
    gone.set()
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        exchange = await waiting
    assert exchange.status is None
    assert not any(holder.done() for holder in holders)  # no connection was free meanwhile
    probed.released.set()
    assert [(await holder).status for holder in holders] == [200] * pool_size
    await _settle(db)


# -- 1,000 requests of every kind, a third of them cancelled at a random point ---------------

Scenario = Callable[[Quart, probe.ProbeState, random.Random], Awaitable[str]]


async def _plain(app: Quart, method: str, path: str) -> str:
    exchange = await asgi.call(app, method, path, headers={"X-Probe-Key": uuid.uuid4().hex})
    return f"{method} {path} {exchange.status}"


async def _cancel_at(
    app: Quart, state: probe.ProbeState, rng: random.Random, method: str, path: str, moment: str
) -> str:
    """Cancel the handler once the request reaches ``moment``; sometimes twice."""
    key = uuid.uuid4().hex
    call = asyncio.create_task(asgi.call(app, method, path, headers={"X-Probe-Key": key}))
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        await state.moment(f"{key}:{moment}").wait()
    await asyncio.sleep(rng.choice([0, 0, 0.001, 0.005]))
    handler = state.tasks.pop(key)
    handler.cancel()
    if rng.random() < 0.5:
        await asyncio.sleep(rng.choice([0, 0.001]))
        handler.cancel()  # the server cancelling again while teardown closes the session
    # The handler is the request's own task (the server's): cancelled, it ends cancelled,
    # unless it finished first.
    await asyncio.wait([call])
    if not call.cancelled():
        call.result()
    return f"cancelled {moment}"


async def _disconnect(app: Quart, rng: random.Random, path: str) -> str:
    gone = asyncio.Event()
    call = asyncio.create_task(asgi.call(app, "GET", path, disconnect=gone))
    await asyncio.sleep(rng.choice([0, 0.001, 0.01, 0.05]))
    gone.set()
    exchange = await call
    return f"disconnected {exchange.status}"


SCENARIOS: list[Scenario] = [
    lambda app, state, rng: _plain(app, "GET", "/probe/read"),
    lambda app, state, rng: _plain(app, "POST", "/probe/write"),
    lambda app, state, rng: _plain(app, "GET", "/probe/boom"),
    lambda app, state, rng: _plain(app, "GET", "/no/such/route"),
    lambda app, state, rng: _cancel_at(app, state, rng, "GET", "/probe/slow", "query"),
    lambda app, state, rng: _cancel_at(app, state, rng, "GET", "/probe/read", "query"),
    lambda app, state, rng: _cancel_at(app, state, rng, "POST", "/probe/write", "commit"),
    lambda app, state, rng: _disconnect(app, rng, "/probe/slow"),
]


async def test_no_session_or_connection_outlives_1000_mixed_requests(
    real_app: Quart, probed: probe.ProbeState, database_url: str
) -> None:
    rng = random.Random(2003)
    limit = asyncio.Semaphore(16)

    async def one(index: int) -> str:
        async with limit:
            return await SCENARIOS[index % len(SCENARIOS)](real_app, probed, rng)

    outcomes = Counter(await asyncio.gather(*(one(i) for i in range(1000))))
    assert outcomes["GET /probe/read 200"] == 125
    assert outcomes["POST /probe/write 201"] == 125
    assert outcomes["GET /probe/boom 500"] == 125
    assert outcomes["GET /no/such/route 404"] == 125
    assert sum(n for outcome, n in outcomes.items() if outcome.startswith("cancelled")) == 375
    db = get_database(real_app)
    await _settle(db)
    if make_url(database_url).get_backend_name() == "postgresql":
        assert await _idle_in_transaction(database_url) == 0
    # The service still works on the same pool afterwards.
    response = await real_app.test_client().get("/probe/read")
    assert response.status_code == 200


async def test_app_creation_touches_no_database(tmp_path: object) -> None:
    app = create_app(settings_for("postgresql+asyncpg://nobody@127.0.0.1:1/none"))
    assert get_database(app)._engine is None
