"""asyncpg: a multi-row statement that a cancelled caller cannot strand.

Written against asyncpg 0.32.0 (also true of 0.30 and 0.31).

Private names used: ``asyncpg.Connection._executemany``, the one path under
``executemany()`` and ``fetchmany()`` (SQLAlchemy's ``cursor.executemany`` for an INSERT of
many rows without RETURNING, such as the service's record-source links and new countries);
``asyncpg.Connection._transport``, the connection's socket transport.

Why: ``Protocol.bind_execute_many`` sends its Bind/Execute messages under flow control and
awaits the transport's ``writing_allowed`` event inside ``try: ... finally: return await
waiter``. A cancellation that lands in that wait is swallowed by the ``return`` in
``finally``, and the call then waits for a reply the server never sends: the server has not
seen the final Sync, so it waits for more input (``ClientRead``, idle in transaction) and
ignores cancel requests while it reads. The task never ends, its pooled connection is never
returned, and SQLAlchemy is never told. The closest upstream reports, still open, are
https://github.com/MagicStack/asyncpg/issues/873 and
https://github.com/MagicStack/asyncpg/issues/1265.

Here the statement runs in a task of its own that the caller awaits through ``shield``: the
caller's cancellation always reaches the caller, and a statement still under way is ended
by resetting the connection: a plain close would first flush the megabytes still queued for
a server that is not reading (blocked on a lock, say), and the server would see the end only
after them. Reset, the server notices at its next client check
(``client_connection_check_interval``, set by ``service.db``), rolls back and ends the
backend. The caller's ``CancelledError`` then makes SQLAlchemy discard the connection, as
for any statement cancelled midway.

When it can go: once ``bind_execute_many`` lets a cancellation propagate (and sends Sync or
closes the connection itself), drop ``connection_class`` from the engine's connect
arguments; ``tests/test_db.py::test_a_request_cancelled_inside_executemany_frees_its_connection``
must still pass without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Any

import asyncpg

# asyncpg's own close waits for the server's goodbye for as long as the command timeout; a
# frozen server would then hold a pool's disposal for that long per connection.
CLOSE_TIMEOUT_SECONDS = 2.0
# SO_LINGER on, for 0 seconds: close() resets the connection.
_LINGER_ZERO = struct.pack("ii", 1, 0)


class CancellableConnection(asyncpg.Connection):  # type: ignore[misc]
    """asyncpg's connection, whose multi-row statements end when their caller is cancelled."""

    async def _executemany(self, *args: Any, **kwargs: Any) -> Any:
        running = asyncio.ensure_future(super()._executemany(*args, **kwargs))
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
