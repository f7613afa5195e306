"""Quart workaround: an HTTP connection that serves each request in the server's own task.

Written against Quart 0.22.0; the names and the copied method were checked in 0.20.0 and 0.21.0
too (``SUPPORTED``: ``>=0.20,<0.23``).

Private names relied on, all in ``quart.asgi``:

- ``ASGIHTTPConnection._create_request_from_scope(send)``: builds the request from the scope;
- ``ASGIHTTPConnection._send_response(send, response)``: sends a response over ASGI;
- ``_handle_exception(app, error)``: the traceback page when debugging or testing, else
  re-raises;
- ``ASGIHTTPConnection.handle_request``: copied below (its error handling and response timeout,
  with ``asyncio.timeout`` in place of ``asyncio.wait_for``).

Why: Quart starts two tasks per request (one handles it, one reads the body and notices a
client that leaves, waited on with ``asyncio.wait``) and, before Python 3.12, a third inside
``asyncio.wait_for`` to time the response; Hypercorn has already started one. Serving the
request in the server's task saved 97,000 instructions (5.2 %) per GET
(``docs/architecture.md``, "One task per request"), and keeps exactly one task, hence one
session, per request. No upstream issue. It can go if Quart handles the request in the
calling task itself.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable
from quart.asgi import ASGIHTTPConnection, _handle_exception
from quart.wrappers import Request, Response

DISTRIBUTION = "Quart"
SUPPORTED = ">=0.20,<0.23"
# sha256 (first 16 hex digits) of the source of the upstream method copied below, in every
# version checked: 0.20.0, then 0.21.0 and 0.22.0 (the same text).
COPIED_HANDLE_REQUEST = frozenset({"af77d2c1a552a672", "81d9b16068bd2b3d"})


class RequestTaskHTTPConnection(ASGIHTTPConnection):
    """Quart's HTTP connection, serving the request in the task the server started for it.

    The body reader is the only other task: it cancels the request task if the client leaves
    while the request is still being handled (after :meth:`grace_after_disconnect` seconds),
    and the cancel it sent is taken back (``Task.uncancel``) so that the call ends quietly, as
    in Quart; a cancel from the server still propagates.
    """

    def grace_after_disconnect(self, request_task: asyncio.Task[Any]) -> float:
        """Seconds the request may go on after its client left (none here; see subclasses)."""
        return 0.0

    async def __call__(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        request = self._create_request_from_scope(send)
        handler = asyncio.current_task()
        assert handler is not None
        client_left = False
        handled = False

        async def read_until_the_client_leaves() -> None:
            nonlocal client_left
            await self.handle_messages(request, receive)
            grace = 0.0 if handled else self.grace_after_disconnect(handler)
            if grace > 0:
                # The request cancels this reader as soon as it is done.
                await asyncio.sleep(grace)
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
