"""The app class: Quart, minus per-request work whose answer never changes.

Measured with ``bench/ladder.py`` (CPU instructions per GET /records/{id}, in process),
the connection and app classes below, with the request class's blueprints worked out once
(``service.http.ServiceRequest``), take 8.7 % off what the service costs per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from quart import Quart
from quart.ctx import RequestContext
from quart.typing import ResponseReturnValue

from service.compat.quart import RequestTaskHTTPConnection
from service.db import EXTENSION_KEY, Database
from service.http import ServiceRequest

# Enough for every hook, view and error handler of the app; callables made per request
# (after_this_request) are not kept once it is full.
_ENSURED_ASYNC = 512
# How long a request that holds a database connection may go on after its client left.
DISCONNECT_GRACE_SECONDS = 1.0


class ServiceHTTPConnection(RequestTaskHTTPConnection):
    """One task per request (``service.compat.quart``), and a grace for database work.

    A request that holds a database connection when its client leaves gets
    ``DISCONNECT_GRACE_SECONDS`` to finish first: cancelled in the middle of a statement,
    its connection would be closed and reopened by a later request (SQLAlchemy cannot tell
    what state a cancelled statement left it in), tens of milliseconds each.
    """

    def grace_after_disconnect(self, request_task: asyncio.Task[Any]) -> float:
        database: Database | None = self.app.extensions.get(EXTENSION_KEY)
        if database is None or not database.holds_connection(request_task):
            return 0.0
        return DISCONNECT_GRACE_SECONDS


class ServiceApp(Quart):
    """Quart with the service's request class and HTTP connection, and whether each hook
    is a coroutine function checked once per hook, not once per request."""

    asgi_http_class = ServiceHTTPConnection
    request_class = ServiceRequest

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ensured_async: dict[Callable[..., Any], Callable[..., Awaitable[Any]]] = {}

    async def dispatch_request(
        self, request_context: RequestContext | None = None
    ) -> ResponseReturnValue:
        """The view's answer; a read that failed on a read replica is served again, once,
        from the primary (nothing has been sent to the client yet)."""
        try:
            return await super().dispatch_request(request_context)
        except Exception as error:
            database: Database | None = self.extensions.get(EXTENSION_KEY)
            if database is None or not await database.reopen_on_primary(error):
                raise
        return await super().dispatch_request(request_context)

    def ensure_async(self, func: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        """Quart asks, for every hook of every request, whether it is a coroutine function
        (inspect's check unwraps methods and partials each time); the answer is kept."""
        try:
            return self._ensured_async[func]
        except KeyError:
            made = super().ensure_async(func)
            if len(self._ensured_async) < _ENSURED_ASYNC:
                self._ensured_async[func] = made
            return made
        except TypeError:  # an unhashable callable
            return super().ensure_async(func)
