"""SQLAlchemy workarounds: a fair pool queue, and two questions its public API cannot answer.

Written against SQLAlchemy 2.1.9 (checked for ``SUPPORTED``: ``>=2.1,<2.2``).

Private names relied on:

- ``sqlalchemy.util.queue.QueueCommon``, ``Empty``, ``Full`` and
  ``sqlalchemy.util.concurrency.await_``: the interface of the pool's queue, and how a
  queue method called from the pool's synchronous code waits on the event loop;
- ``QueuePool._queue_class`` and ``QueuePool._pool``: the queue class a pool is built on, and
  the pool's instance of it;
- ``SessionTransaction._connections``: the connections a session transaction has checked out
  (keyed on each ``Connection`` and on its ``Engine``);
- ``GenerativeSelect._for_update_arg``: whether a SELECT locks its rows (``FOR UPDATE``);
- ``ScopedRegistry.registry`` (``scoped_session.registry.registry``): the dict of sessions a
  scoped session holds, keyed on its scope function's value.
- ``_sqla_logger_namespace``: the class attribute ``sqlalchemy.log`` reads to name the logger
  of a pool instance (otherwise the class's module and name).

Why:

- ``FairQueuePool``: the asyncio pool queues on ``asyncio.Queue``, which lets a newcomer take a
  returned connection ahead of the woken waiter, so under steady load some requests wait for
  hundreds of milliseconds while newer ones pass them (the same unfairness upstream for the
  threaded pool: https://github.com/sqlalchemy/sqlalchemy/issues/7679; for ``asyncio.Queue``:
  https://github.com/python/cpython/issues/83055). It can go when SQLAlchemy's pool is fair
  or takes a queue class publicly.
- ``transaction_has_connection``: whether a request holds a connection decides whether a
  client that leaves may let it finish (``service.asgi``); no public API answers without
  checking a connection out. It can go when ``SessionTransaction`` says so publicly.
- ``FairQueuePool._sqla_logger_namespace``: defined here, the pool would log "Pool disposed"
  and "Pool recreating" at INFO as ``service.compat.sqlalchemy.FairQueuePool``, among the
  service's own lines and at its level; SQLAlchemy's own pools log under ``sqlalchemy.pool``,
  which it keeps at WARNING unless asked for more. It goes with ``FairQueuePool``.
- ``holds_connection_to``: which servers a request read from, counted per target when read
  replicas are configured (``service.db``); same reason, same condition.
- ``reads_only``: a SELECT that locks rows must go to the primary (``service.db``
  ``RoutingSession``); ``Select`` has no public accessor for its ``FOR UPDATE`` clause. It can
  go when one exists.
- ``scoped_sessions``: counts sessions in flight and finds another task's session, which
  ``async_scoped_session`` only offers for the current scope. No upstream issue.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from typing import Any, TypeVar

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncSession, async_scoped_session
from sqlalchemy.orm import Session
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry
from sqlalchemy.util import queue as sqla_queue
from sqlalchemy.util.concurrency import await_

DISTRIBUTION = "SQLAlchemy"
SUPPORTED = ">=2.1,<2.2"

_T = TypeVar("_T")


class FairQueue(sqla_queue.QueueCommon[_T]):
    """The pool's queue of idle connections, served strictly first come, first served.

    A returned connection is handed straight to the oldest waiter, and nobody takes one
    while others wait.
    """

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        self.maxsize = maxsize
        self.use_lifo = use_lifo
        self._idle: deque[_T] = deque()
        self._waiters: deque[asyncio.Future[_T]] = deque()

    def empty(self) -> bool:
        return not self._idle

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self._idle)

    def qsize(self) -> int:
        return len(self._idle)

    def waiting(self) -> int:
        """How many tasks wait for a connection right now."""
        return sum(not waiter.done() for waiter in self._waiters)

    def put_nowait(self, item: _T) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(item)
                return
        if self.full():
            raise sqla_queue.Full()
        self._idle.append(item)

    def put(self, item: _T, block: bool = True, timeout: float | None = None) -> None:
        # The pool holds at most maxsize connections: a put never has to wait.
        self.put_nowait(item)

    def get_nowait(self) -> _T:
        if not self._idle:
            raise sqla_queue.Empty()
        return self._idle.pop() if self.use_lifo else self._idle.popleft()

    def get(self, block: bool = True, timeout: float | None = None) -> _T:
        # Idle connections and waiting tasks never coexist: put_nowait serves waiters first.
        if self._idle or not block:
            return self.get_nowait()
        waiter: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await_(self._wait(waiter, seconds=timeout))
        except TimeoutError as error:
            raise sqla_queue.Empty() from error

    async def _wait(self, waiter: asyncio.Future[_T], *, seconds: float | None) -> _T:
        try:
            async with asyncio.timeout(seconds):
                return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                # Handed a connection just as the wait was cancelled or timed out: pass it on.
                self.put_nowait(waiter.result())
            else:
                waiter.cancel()
            raise


class FairQueuePool(AsyncAdaptedQueuePool):
    """SQLAlchemy's asyncio queue pool on a :class:`FairQueue`."""

    _queue_class = FairQueue[ConnectionPoolEntry]
    _pool: FairQueue[ConnectionPoolEntry]
    _sqla_logger_namespace = "sqlalchemy.pool.impl.FairQueuePool"

    def waiting(self) -> int:
        """How many tasks wait for a connection right now."""
        return self._pool.waiting()


def transaction_has_connection(session: AsyncSession) -> bool:
    """Whether ``session``'s transaction has a connection checked out right now.

    A session transaction begins before its checkout, which may still wait for the pool.
    """
    transaction = session.sync_session.get_transaction()
    return transaction is not None and bool(transaction._connections)


def holds_connection_to(session: Session, engine: Engine) -> bool:
    """Whether ``session``'s transaction holds a connection of ``engine`` right now."""
    transaction = session.get_transaction()
    return transaction is not None and engine in transaction._connections


def reads_only(statement: Any) -> bool:
    """Whether ``statement`` is a SELECT (or UNION of them) that takes no row locks."""
    return bool(getattr(statement, "is_select", False)) and (
        getattr(statement, "_for_update_arg", None) is None
    )


def scoped_sessions(scoped: async_scoped_session[AsyncSession]) -> Mapping[Any, AsyncSession]:
    """Every session ``scoped`` holds, keyed on its scope (here: the owning task)."""
    sessions: Mapping[Any, AsyncSession] = scoped.registry.registry
    return sessions
