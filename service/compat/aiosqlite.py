"""aiosqlite workarounds: a connection whose close cannot hang, and threads joined at dispose.

Written against aiosqlite 0.22.1 (checked for ``SUPPORTED``: ``>=0.22.1,<0.23``; 0.22.0
calls ``stop()`` ``_stop_running()``, 0.21 makes the connection a ``Thread`` itself).

Private names relied on:

- ``Connection.__init__(connector, iter_chunk_size)``: the constructor ``aiosqlite.connect``
  calls, so that the service can open its own subclass;
- ``Connection._running``: False once ``stop()`` has been asked for;
- ``Connection._thread``: the worker thread that runs the connection's statements;
- ``Connection.stop()``'s behaviour: it queues a close request and a stop for the thread.

Why:

- ``StopOnceConnection``: SQLAlchemy closes a discarded connection in a task of its own and,
  when its caller is cancelled meanwhile, stops the connection's thread at once. ``close()``
  then asks the stopped thread to stop again and waits for an answer that never comes: the
  task hangs, and so does the event loop's shutdown. Related upstream:
  https://github.com/omnilib/aiosqlite/pull/370 (stop semantics) and
  https://github.com/sqlalchemy/sqlalchemy/issues/13039. It can go when ``close()`` after
  ``stop()`` returns at once.
- ``join_stopped_threads``: a stopped connection's thread finishes the statement it was
  running and then posts its result to the event loop; if the loop has closed meanwhile, the
  thread dies on "Event loop is closed". Nothing public waits for the thread
  (https://github.com/omnilib/aiosqlite/issues/387 asks for a ``join()``). It can go when
  aiosqlite has one.
- The thread is a daemon, as it was before 0.22 and as SQLAlchemy expects
  (https://github.com/sqlalchemy/sqlalchemy/issues/13039): a forgotten connection must not
  keep the process from exiting.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import weakref
from typing import Any

import aiosqlite

DISTRIBUTION = "aiosqlite"
SUPPORTED = ">=0.22.1,<0.23"


class StopOnceConnection(aiosqlite.Connection):
    """aiosqlite's connection, whose ``close()`` cannot wait forever: a second stop request
    has nothing to do, so it is not sent."""

    def stop(self) -> asyncio.Future[Any] | None:
        if not self._running:
            return None
        return super().stop()


# Every connection opened, while it lives: see join_stopped_threads().
_connections: weakref.WeakSet[StopOnceConnection] = weakref.WeakSet()


def connect(database: str, *, iter_chunk_size: int = 64, **kwargs: Any) -> StopOnceConnection:
    """What ``aiosqlite.connect`` does, with a :class:`StopOnceConnection` on a daemon thread.

    Await the result to open it; ``kwargs`` go to ``sqlite3.connect``.
    """
    connection = StopOnceConnection(lambda: sqlite3.connect(database, **kwargs), iter_chunk_size)
    connection._thread.daemon = True
    _connections.add(connection)
    return connection


def worker_thread(connection: aiosqlite.Connection) -> threading.Thread:
    """The thread that runs ``connection``'s statements."""
    return connection._thread


async def join_stopped_threads(grace: float) -> None:
    """Wait up to ``grace`` seconds in all for the threads of stopped connections to end,
    then let the results they posted last run on the loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    for connection in list(_connections):
        thread = worker_thread(connection)
        if connection._running or not thread.is_alive():
            continue
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        await asyncio.to_thread(thread.join, remaining)
    await asyncio.sleep(0)  # the threads' last results, posted just before they ended
