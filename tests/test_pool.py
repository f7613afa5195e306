"""The connection pool serves waiting tasks first come, first served, and loses nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncEngine

from service.compat.sqlalchemy import FairQueuePool
from service.db import create_engine
from service.settings import load_settings
from tests.conftest import settings_for
from tests.waiting import HANG_GUARD_SECONDS, until


@asynccontextmanager
async def _one_connection_engine(
    database_url: str, pool_timeout: float
) -> AsyncIterator[AsyncEngine]:
    settings = load_settings(
        settings_for(database_url, DB_POOL_SIZE=1, DB_MAX_OVERFLOW=0, DB_POOL_TIMEOUT=pool_timeout)
    )
    engine = create_engine(settings)
    assert isinstance(engine.pool, FairQueuePool)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine whose pool holds one connection; a wait for it times out only if it hangs."""
    async with _one_connection_engine(database_url, HANG_GUARD_SECONDS) as engine:
        yield engine


def _waiting(engine: AsyncEngine, count: int) -> Callable[[], bool]:
    pool = engine.pool
    assert isinstance(pool, FairQueuePool)
    return lambda: pool.waiting() == count


def _checked_in(engine: AsyncEngine) -> int:
    return engine.pool.checkedin()  # type: ignore[attr-defined,no-any-return]


async def test_a_returned_connection_goes_to_the_task_waiting_longest(
    engine: AsyncEngine,
) -> None:
    order: list[str] = []

    async def use_a_connection(name: str) -> None:
        async with engine.connect():
            order.append(name)

    first = await engine.connect()
    waiting = asyncio.create_task(use_a_connection("waiting"))
    await until(_waiting(engine, 1), "the task waits for the pool")
    await first.close()
    # Asks in the very step the connection comes back, before the waiting task has run:
    # asyncio.Queue would hand it to this newcomer and send the waiting task to the back.
    await use_a_connection("newcomer")
    await waiting
    assert order == ["waiting", "newcomer"]
    assert _checked_in(engine) == 1


async def test_a_wait_longer_than_the_pool_timeout_fails_and_leaves_no_trace(
    database_url: str,
) -> None:
    async with _one_connection_engine(database_url, 0.05) as engine:
        async with engine.connect():  # held throughout: the wait can only time out
            with pytest.raises(exc.TimeoutError):
                await engine.connect()
        assert _checked_in(engine) == 1
        async with engine.connect():  # the timed-out waiter holds nothing
            pass


async def test_a_connection_handed_to_a_cancelled_waiter_goes_to_the_next(
    engine: AsyncEngine,
) -> None:
    async def hold_a_connection() -> None:
        async with engine.connect():
            await asyncio.Future()  # until cancelled

    first = await engine.connect()
    cancelled = asyncio.create_task(hold_a_connection())
    await until(_waiting(engine, 1), "the first task waits for the pool")
    second = asyncio.ensure_future(engine.connect())
    await until(_waiting(engine, 2), "the second task waits behind it")
    await first.close()  # handed to the first waiter, which is cancelled before it runs
    cancelled.cancel()
    connection = await second
    await connection.close()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert _checked_in(engine) == 1
