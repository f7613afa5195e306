"""The app class: Quart, minus per-request work whose answer never changes.

Measured with ``bench/ladder.py`` (CPU instructions per GET /records/{id}, in process),
the connection and app classes below, with the request class's blueprints worked out once
(``service.http.ServiceRequest``), take 8.7 % off what the service costs per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable
from quart import Quart
from quart.asgi import ASGIHTTPConnection, _handle_exception
from quart.wrappers import Request, Response

from service.db import EXTENSION_KEY, Database
from service.http import ServiceRequest

# Enough for every hook, view and error handler of the app; callables made per request
# (after_this_request) are not kept once it is full.
_ENSURED_ASYNC = 512
# How long a request that holds a database connection may go on after its client left.
DISCONNECT_GRACE_SECONDS = 1.0


class RequestTaskHTTPConnection(ASGIHTTPConnection):
    """Quart's HTTP connection, serving the request in the task the server started for it.

    Quart starts two tasks per request (one handles it, one reads the body and notices a
    client that leaves) and, before Python 3.12, a third inside ``asyncio.wait_for`` to
    time sending the response. Here the request is handled in the server's task; the reader
    cancels that task if the client leaves while it is still handling, and the response is
    timed with ``asyncio.timeout``. One task per request either way, so one session each.

    A request that holds a database connection when its client leaves gets
    ``DISCONNECT_GRACE_SECONDS`` to finish first: cancelled in the middle of a statement,
    its connection would be closed and reopened by a later request (SQLAlchemy cannot tell
    what state a cancelled statement left it in), tens of milliseconds each.
    """

    async def __call__(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        request = self._create_request_from_scope(send)
        handler = asyncio.current_task()
        assert handler is not None
        client_left = False
        handled = False

        async def read_until_the_client_leaves() -> None:
            nonlocal client_left
            await self.handle_messages(request, receive)
            if not handled and self._holds_connection(handler):
                # The request cancels this reader as soon as it is done.
                await asyncio.sleep(DISCONNECT_GRACE_SECONDS)
            # The request task sets `handled` as soon as handle_request returns or raises,
            # with no await in between: a cancel sent while it is False lands inside it.
            if not handled:
                client_left = True
                handler.cancel()

        reader = asyncio.ensure_future(read_until_the_client_leaves())
        try:
            await self.handle_request(request, send)
        except asyncio.CancelledError:
            # Quart ends quietly when the client left; any other cancel goes on up.
            if not client_left or handler.uncancel() > 0:
                raise
        finally:
            handled = True
            reader.cancel()

    def _holds_connection(self, task: asyncio.Task[Any]) -> bool:
        database: Database | None = self.app.extensions.get(EXTENSION_KEY)
        return database is not None and database.holds_connection(task)

    async def handle_request(self, request: Request, send: ASGISendCallable) -> None:
        try:
            response = await self.app.handle_request(request)
        except Exception as error:
            # Quart's own handling: a traceback page when debugging or testing, else re-raised.
            response = await _handle_exception(self.app, error)
        timeout = self.app.config["RESPONSE_TIMEOUT"]
        if isinstance(response, Response) and response.timeout is not Ellipsis:
            timeout = response.timeout
        try:
            async with asyncio.timeout(timeout):
                await self._send_response(send, response)
        except TimeoutError:
            pass


class ServiceApp(Quart):
    """Quart with the service's request class and HTTP connection, and whether each hook
    is a coroutine function checked once per hook, not once per request."""

    asgi_http_class = RequestTaskHTTPConnection
    request_class = ServiceRequest

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ensured_async: dict[Callable[..., Any], Callable[..., Awaitable[Any]]] = {}

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
