"""asyncpg: multi-row statements that a cancelled caller cannot strand, and whose round trips
each stay within the command timeout.

Written against asyncpg 0.32.0 (checked for ``SUPPORTED``: ``>=0.30,<0.33``; the
``_executemany`` and ``bind_execute_many`` of 0.30 and 0.31 read the same).

Private names relied on: ``asyncpg.Connection._executemany(query, args, timeout, return_rows,
record_class)``, the one path under ``executemany()`` and ``fetchmany()`` (SQLAlchemy's
``cursor.executemany``, for an INSERT of many rows without RETURNING: the links of a bulk
write or a PUT, a bulk write's new countries); ``asyncpg.Connection._transport``, the
connection's socket transport.

Why: ``Protocol.bind_execute_many`` sends its Bind/Execute messages under flow control and
awaits the transport's ``writing_allowed`` event inside ``try: ... finally: return await
waiter``. A cancellation that lands in that wait is swallowed by the ``return`` in
``finally``, and the call then waits for a reply the server never sends: the server has not
seen the final Sync, so it waits for more input (``ClientRead``, in an open transaction) and
ignores cancel requests while it reads. The task never ends, its pooled connection is never
returned, and SQLAlchemy is never told. The closest upstream reports, still open, are
https://github.com/MagicStack/asyncpg/issues/873 and
https://github.com/MagicStack/asyncpg/issues/1265.

Here each call runs in a task of its own that the caller awaits through ``shield``: the
caller's cancellation always reaches the caller, and a statement still under way is ended
by resetting the connection. A plain close would first flush the megabytes still queued for
a server that is not reading (blocked on a lock, say), and the server would see the end
only after them; reset, the server notices at its next client check
(``client_connection_check_interval``, set by ``service.db``), rolls back and ends the
backend.

Inside a transaction, rows go in calls of at most ``EXECUTEMANY_CHUNK_ROWS``: asyncpg's
``command_timeout`` bounds a call as a whole, and a call's duration grows with its rows
(200,000 link rows took 10-12 s on a busy 2-core machine), so one large write would
otherwise need a timeout far above what a server that stops answering should cost. Outside
a transaction asyncpg makes the call atomic on its own, so it is left whole.

When it can go: the cancel safety once ``bind_execute_many`` lets a cancellation propagate
(and sends Sync or closes the connection itself): then
``tests/test_db_bounds.py::test_a_statement_cancelled_inside_executemany_frees_its_connection``
passes without this class. The chunks stay as long as the command timeout covers a whole
call.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Sequence
from typing import Any

import asyncpg

DISTRIBUTION = "asyncpg"
SUPPORTED = ">=0.30,<0.33"

# Rows per call of a multi-row statement inside a transaction (about 1 MB of messages).
EXECUTEMANY_CHUNK_ROWS = 20_000
# asyncpg's own close waits for the server's goodbye for as long as the command timeout; a
# frozen server would then hold a pool's disposal for that long per connection.
CLOSE_TIMEOUT_SECONDS = 2.0
# SO_LINGER on, for 0 seconds: close() resets the connection.
_LINGER_ZERO = struct.pack("ii", 1, 0)


class CancellableConnection(asyncpg.Connection):  # type: ignore[misc]
    """asyncpg's connection, whose multi-row statements end when their caller is cancelled."""

    async def _executemany(
        self,
        query: str,
        args: Any,
        timeout: float | None,  # noqa: ASYNC109 - asyncpg's signature
        return_rows: bool = False,
        record_class: Any = None,
    ) -> Any:
        chunk = EXECUTEMANY_CHUNK_ROWS
        if not (self.is_in_transaction() and isinstance(args, Sequence) and len(args) > chunk):
            return await self._executemany_cancellable(
                query, args, timeout, return_rows, record_class
            )
        rows: list[Any] = []
        result = None
        for start in range(0, len(args), chunk):
            result = await self._executemany_cancellable(
                query, args[start : start + chunk], timeout, return_rows, record_class
            )
            if return_rows:
                rows.extend(result)
        return rows if return_rows else result

    async def _executemany_cancellable(self, *args: Any) -> Any:
        running = asyncio.ensure_future(super()._executemany(*args))
        try:
            return await asyncio.shield(running)
        except asyncio.CancelledError:
            if not running.done():
                # Its protocol state cannot be recovered mid-pipeline: end the connection.
                self.reset()
                running.cancel()
                running.add_done_callback(_retrieve_outcome)
            raise

    def reset(self) -> None:
        """Terminate the connection with a TCP reset: queued data is dropped, not sent."""
        sock = self._transport.get_extra_info("socket") if self._transport else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
        self.terminate()

    async def close(self, *, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Close gracefully, waiting for the server at most ``CLOSE_TIMEOUT_SECONDS``."""
        await super().close(timeout=CLOSE_TIMEOUT_SECONDS if timeout is None else timeout)


def _retrieve_outcome(running: asyncio.Future[Any]) -> None:
    # The terminated statement ends with ConnectionDoesNotExistError (or is cancelled);
    # retrieve it so that asyncio does not report an exception that was never retrieved.
    if not running.cancelled():
        running.exception()
