"""Quart workarounds: an HTTP connection that serves each request in the server's own task,
and a request whose body wait a cancellation always ends.

Written against Quart 0.22.0; the names and the copied ``handle_request`` were checked in
0.20.0 and 0.21.0 too (``SUPPORTED``: ``>=0.20,<0.23``), and so was the copied ``get_data``.

Private names relied on, all in ``quart.asgi``:

- ``ASGIHTTPConnection._create_request_from_scope(send)``: builds the request from the scope;
- ``ASGIHTTPConnection._send_response(send, response)``: sends a response over ASGI;
- ``_handle_exception(app, error)``: the traceback page when debugging or testing, else
  re-raises;
- ``ASGIHTTPConnection.handle_request``: copied below (its error handling and response timeout,
  with ``asyncio.timeout`` in place of ``asyncio.wait_for``).

And the public ``Request.get_data``, copied below with ``asyncio.timeout`` in place of
``asyncio.wait_for`` (``COPIED_GET_DATA``).

Why the connection: Quart starts two tasks per request (one handles it, one reads the body
and notices a client that leaves, waited on with ``asyncio.wait``) and, before Python 3.12, a
third inside ``asyncio.wait_for`` to time the response; Hypercorn has already started one.
Serving the request in the server's task saved 97,000 instructions (5.2 %) per GET
(``docs/architecture.md``, "One task per request"), and keeps exactly one task, hence one
session, per request. No upstream issue. It can go if Quart handles the request in the
calling task itself.

Why the request: before Python 3.12, ``asyncio.wait_for`` returns the result and drops a
cancellation that lands while the awaited thing has just finished
(https://github.com/python/cpython/issues/86296; 3.12 rebuilt ``wait_for`` on
``asyncio.timeout``). Quart awaits the body that way, and a client that leaves right after
sending a large body is noticed exactly then: its whole body is in, the disconnect comes next.
The cancel the connection sends is then lost, and the request it was meant to end runs to
the end (a bulk write of 200,000 links, committed, for 7-14 s on a busy 2-core machine)
after its client left. It can go when the service requires Python 3.12 or Quart awaits the
body without ``wait_for``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable
from quart.asgi import ASGIHTTPConnection, _handle_exception
from quart.wrappers import Request, Response
from werkzeug.exceptions import RequestTimeout

DISTRIBUTION = "Quart"
SUPPORTED = ">=0.20,<0.23"
# sha256 (first 16 hex digits) of the source of the upstream method copied below, in every
# version checked: 0.20.0, then 0.21.0 and 0.22.0 (the same text).
COPIED_HANDLE_REQUEST = frozenset({"af77d2c1a552a672", "81d9b16068bd2b3d"})
# The same for ``Request.get_data``: 0.20.0 (``except asyncio.TimeoutError``), then 0.21.0 and
# 0.22.0 (``except TimeoutError``, the same class since Python 3.11).
COPIED_GET_DATA = frozenset({"db553e17ed97b423", "462bd7f9d60beca6"})
# Logged when a request whose client left ran to its end: something swallowed the cancel.
LOST_CANCEL = "a request ran to its end after its client left: the cancel sent to it was lost"

logger = logging.getLogger(__name__)


class CancellableBodyRequest(Request):
    """Quart's request, whose wait for the body ends when the request task is cancelled."""

    async def get_data(  # type: ignore[override]
        self, cache: bool = True, as_text: bool = False, parse_form_data: bool = False
    ) -> str | bytes:
        """The body (``str`` if ``as_text``), as in Quart."""
        if parse_form_data:
            await self._load_form_data()
        try:
            async with asyncio.timeout(self.body_timeout):
                raw_data: bytes = await self.body
        except TimeoutError as error:
            raise RequestTimeout() from error
        if not cache:
            self.body.clear()
        return raw_data.decode() if as_text else raw_data


class RequestTaskHTTPConnection(ASGIHTTPConnection):
    """Quart's HTTP connection, serving the request in the task the server started for it.

    The body reader is the only other task: it cancels the request task if the client leaves
    while the request is still being handled (after :meth:`grace_after_disconnect` seconds),
    and the cancel it sent is taken back (``Task.uncancel``) so that the call ends quietly, as
    in Quart; a cancel from the server still propagates. A request that ends normally after
    that cancel was sent has had it swallowed on the way (``LOST_CANCEL`` is logged, when the
    client had left before the response began).
    """

    # Set as the response begins to be sent.
    responding = False

    def grace_after_disconnect(self, request_task: asyncio.Task[Any]) -> float:
        """Seconds the request may go on after its client left (none here; see subclasses)."""
        return 0.0

    async def __call__(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        request = self._create_request_from_scope(send)
        handler = asyncio.current_task()
        assert handler is not None
        client_left = False
        handled = False
        # Whether the client left before the response began: a request that runs on then is
        # doing work nobody will read. Leaving while it is sent (the usual way a client that
        # has read its answer closes) loses nothing.
        left_before_responding = False

        async def read_until_the_client_leaves() -> None:
            nonlocal client_left, left_before_responding
            await self.handle_messages(request, receive)
            grace = 0.0 if handled else self.grace_after_disconnect(handler)
            if grace > 0:
                # The request cancels this reader as soon as it is done.
                await asyncio.sleep(grace)
            # The request task sets `handled` as soon as handle_request returns or raises,
            # with no await in between: a cancel sent while it is False lands inside it.
            if not handled:
                client_left = True
                left_before_responding = not self.responding
                handler.cancel()

        reader = asyncio.ensure_future(read_until_the_client_leaves())
        try:
            await self.handle_request(request, send)
        except asyncio.CancelledError:
            # Quart ends quietly when the client left; any other cancel goes on up.
            if not client_left or handler.uncancel() > 0:
                raise
        else:
            if client_left:
                handler.uncancel()  # the cancel that never arrived
                if left_before_responding:
                    logger.warning("%s (%s %s)", LOST_CANCEL, request.method, request.path)
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
        self.responding = True
        try:
            async with asyncio.timeout(timeout):
                await self._send_response(send, response)
        except TimeoutError:
            pass
