"""The app class: one task per request, a client that leaves, the response timeout, the
remembered coroutine checks and blueprints."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from quart import Blueprint, Quart, Response, g, request

from service.app import create_app
from service.compat.quart import LOST_CANCEL
from tests import asgi
from tests.conftest import settings_for
from tests.waiting import HANG_GUARD_SECONDS


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Quart]:
    # No route here touches the database; the file is never created.
    yield create_app(settings_for(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}"))


async def _leave_once_started(
    app: Quart, path: str, started: asyncio.Event
) -> asyncio.Task[asgi.Exchange]:
    """GET ``path`` and leave once ``started`` is set; the call's task, ended."""
    gone = asyncio.Event()
    call = asyncio.create_task(asgi.call(app, "GET", path, disconnect=gone))
    await started.wait()
    gone.set()
    await asyncio.wait([call], timeout=HANG_GUARD_SECONDS)  # (wait_for would cancel the call)
    return call


async def test_a_request_is_handled_and_answered_in_the_task_that_called_the_app(
    app: Quart,
) -> None:
    seen: dict[str, object] = {}

    @app.get("/where")
    async def where() -> str:
        seen["handler"] = asyncio.current_task()
        seen["other tasks"] = asyncio.all_tasks() - before
        return "here"

    before = asyncio.all_tasks()
    call = asyncio.create_task(asgi.call(app, "GET", "/where"))
    before.add(call)
    exchange = await call
    assert exchange.status == 200 and bytes(exchange.body) == b"here"
    assert seen["handler"] is call
    # Only the task that reads the body and notices a client leaving runs beside it.
    assert len(seen["other tasks"]) == 1  # type: ignore[arg-type]


async def test_the_response_is_sent_from_the_requests_task(app: Quart) -> None:
    senders = []

    @app.get("/sent")
    async def sent() -> str:
        return "sent"

    async def send(message: dict[str, object]) -> None:
        senders.append(asyncio.current_task())

    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, object]:
        if not messages:
            await asyncio.Event().wait()  # the client stays
        return messages.pop()

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/sent", "raw_path": b"/sent", "query_string": b"",
        "root_path": "", "headers": [(b"host", b"test")], "client": ("127.0.0.1", 1),
        "server": ("test", 80), "extensions": {},
    }  # fmt: skip
    call = asyncio.create_task(app(scope, receive, send))  # type: ignore[arg-type]
    await call
    assert senders and all(sender is call for sender in senders)


async def test_a_client_that_leaves_cancels_the_handler_and_the_call_ends_quietly(
    app: Quart,
) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    @app.get("/wait")
    async def wait() -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    call = await _leave_once_started(app, "/wait", started)
    exchange = call.result()
    assert cancelled.is_set()
    assert exchange.status is None
    # The cancel the connection sent itself is taken back: nothing is left pending on the task.
    assert call.cancelling() == 0


async def test_a_cancel_from_the_server_is_not_swallowed(app: Quart) -> None:
    started = asyncio.Event()

    @app.get("/wait")
    async def wait() -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    call = asyncio.create_task(asgi.call(app, "GET", "/wait"))
    await started.wait()
    call.cancel()
    await asyncio.wait([call], timeout=HANG_GUARD_SECONDS)
    assert call.cancelled()


async def test_a_client_that_leaves_right_after_its_body_cancels_the_request(app: Quart) -> None:
    # The body completes and the client leaves in one step of the reader: the cancel lands
    # as the request's wait for the body ends (Python 3.11's wait_for would return the body).
    waiting, read = asyncio.Event(), asyncio.Event()

    @app.post("/body")
    async def body() -> str:
        waiting.set()
        await request.get_data()
        read.set()
        return "read"

    sent, gone = asyncio.Event(), asyncio.Event()
    gone.set()
    call = asyncio.create_task(
        asgi.call(app, "POST", "/body", b"{}", body_sent=sent, disconnect=gone)
    )
    await waiting.wait()
    sent.set()
    await asyncio.wait([call], timeout=HANG_GUARD_SECONDS)
    assert call.result().status is None
    assert not read.is_set()
    assert call.cancelling() == 0


async def test_a_request_that_swallows_the_cancel_is_logged_and_the_cancel_taken_back(
    app: Quart, caplog: pytest.LogCaptureFixture
) -> None:
    started = asyncio.Event()

    @app.get("/stubborn")
    async def stubborn() -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass  # what a swallowed cancel looks like from outside
        return "late"

    call = await _leave_once_started(app, "/stubborn", started)
    assert call.result().status == 200
    assert call.cancelling() == 0
    assert LOST_CANCEL in caplog.text


async def test_a_client_that_leaves_while_its_response_is_sent_is_not_a_lost_cancel(
    app: Quart, caplog: pytest.LogCaptureFixture
) -> None:
    started = asyncio.Event()

    @app.get("/answering")
    async def answering() -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield b"first"
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                pass  # the cancel ends up swallowed while the answer is going out
            yield b"last"

        return Response(body())

    call = await _leave_once_started(app, "/answering", started)
    assert call.result().status == 200
    assert call.cancelling() == 0
    assert LOST_CANCEL not in caplog.text


async def test_a_response_slower_to_send_than_response_timeout_is_cut(app: Quart) -> None:
    app.config["RESPONSE_TIMEOUT"] = 0.05

    @app.get("/slow-body")
    async def slow_body() -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first"
            await asyncio.Event().wait()  # never set: only the response timeout ends this
            yield b"never"

        return Response(chunks())

    async with asyncio.timeout(HANG_GUARD_SECONDS):
        exchange = await asgi.call(app, "GET", "/slow-body")
    assert exchange.status == 200
    assert bytes(exchange.body) == b"first"


def test_the_coroutine_check_of_a_callable_is_made_once(app: Quart) -> None:
    def hook() -> None:
        pass

    # A sync callable is wrapped: the same wrapper comes back, so the check was not redone.
    assert app.ensure_async(hook) is app.ensure_async(hook)
    # Bound methods are made anew on each attribute access and still hit.
    interface = app.session_interface
    assert app.ensure_async(interface.open_session) is app.ensure_async(interface.open_session)


async def test_an_unhashable_callable_is_still_made_async(app: Quart) -> None:
    class Hook:
        __hash__ = None  # type: ignore[assignment]

        def __call__(self) -> str:
            return "called"

    assert await app.ensure_async(Hook())() == "called"


def test_callables_made_per_request_are_not_kept_forever(app: Quart) -> None:
    for _ in range(1000):
        app.ensure_async(lambda: None)  # as after_this_request does for every request

    def late() -> None:
        pass

    # Once the memory is full, a new callable is checked each time, not remembered.
    assert app.ensure_async(late) is not app.ensure_async(late)


async def test_blueprint_hooks_see_the_routed_blueprint(app: Quart) -> None:
    """Quart's hooks read request.blueprints, which is computed once: it must be after
    routing, or blueprint hooks would never run."""
    inner = Blueprint("inner", __name__)

    @inner.before_request
    async def mark() -> None:
        g.marked = True

    @inner.get("/inner")
    async def in_blueprint() -> str:
        return "yes" if g.get("marked") else "no"

    @app.get("/outer")
    async def outside() -> str:
        return "yes" if g.get("marked") else "no"

    app.register_blueprint(inner)
    client = app.test_client()
    assert await (await client.get("/inner")).get_data() == b"yes"
    assert await (await client.get("/outer")).get_data() == b"no"
