"""A test-only blueprint whose routes exercise the session scope in every way it can be used."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from quart import Blueprint, Quart, Response, current_app, g, request
from sqlalchemy import func, select, text

from service.db import NoSessionError, current_session, get_database
from service.models import Country
from tests.gate import StatementGate

blueprint = Blueprint("probe", __name__, url_prefix="/probe")
_names = itertools.count()


@dataclass
class ProbeState:
    """What the probe routes share with the test: handler tasks and moments to cancel at."""

    gate: StatementGate | None = None
    tasks: dict[str, asyncio.Task[Any]] = field(default_factory=dict)
    reached: dict[str, asyncio.Event] = field(default_factory=dict)
    background_done: asyncio.Event = field(default_factory=asyncio.Event)
    # /probe/hold keeps its connection until the test sets this.
    released: asyncio.Event = field(default_factory=asyncio.Event)
    spawned_error: str | None = None

    def moment(self, key: str) -> asyncio.Event:
        return self.reached.setdefault(key, asyncio.Event())


def state() -> ProbeState:
    probe: ProbeState = current_app.extensions["probe"]
    return probe


def install(app: Quart, database_url: str | None = None) -> ProbeState:
    """Register the probe routes on ``app``; returns the state the test can watch.

    With ``database_url`` (the app's own database), /probe/blocked and /probe/slow work too.
    """
    probe = ProbeState()
    if database_url is not None:
        probe.gate = StatementGate(database_url)
        probe.gate.install(get_database(app).engine)
    app.extensions["probe"] = probe
    app.register_blueprint(blueprint)
    return probe


def gate() -> StatementGate:
    installed = state().gate
    assert installed is not None, "probe.install() was not given the database URL"
    return installed


def _mark(moment: str) -> None:
    key = request.headers.get("X-Probe-Key")
    if key:
        state().tasks[key] = asyncio.current_task()  # type: ignore[assignment]
        state().moment(f"{key}:{moment}").set()


def _slow_query() -> Any:
    """A 0.2 s statement that keeps its connection without using the CPU."""
    if gate().is_sqlite:
        return text("SELECT probe_sleep(0.2)")
    return text("SELECT pg_sleep(0.2)")


@blueprint.before_request
async def _remember_first_session() -> None:
    g.first_session_id = id(current_session())


@blueprint.get("/same")
async def same() -> dict[str, Any]:
    seen = [g.first_session_id, id(current_session())]
    await current_session().execute(select(1))
    seen.append(id(current_session()))
    return {"ids": seen}


@blueprint.get("/hold")
async def hold() -> dict[str, Any]:
    """Keep a connection checked out until the test sets ``released``."""
    session = current_session()
    await session.execute(select(1))
    _mark("holding")
    await state().released.wait()
    return {"id": id(session), "same": session is current_session()}


@blueprint.get("/blocked")
async def blocked() -> dict[str, str]:
    """Run a statement that blocks until the test opens the gate."""
    _mark("query")
    await current_session().execute(gate().statement())
    return {"status": "done"}


@blueprint.get("/read")
async def read() -> dict[str, int]:
    _mark("query")
    count = await current_session().scalar(select(func.count()).select_from(Country))
    return {"countries": count or 0}


@blueprint.get("/slow")
async def slow() -> dict[str, str]:
    _mark("query")
    await current_session().execute(_slow_query())
    return {"status": "done"}


@blueprint.post("/write")
async def write() -> tuple[dict[str, int], int]:
    """Read, then write, then commit: the shape of every real write."""
    session = current_session()
    before = await session.scalar(select(func.count()).select_from(Country))
    session.add(Country(name=request.headers.get("X-Probe-Key") or f"probe-{next(_names)}"))
    await session.flush()
    _mark("commit")
    await session.commit()
    return {"before": before or 0}, 201


@blueprint.get("/boom")
async def boom() -> dict[str, str]:
    await current_session().execute(select(1))
    raise RuntimeError("a handler bug")


@blueprint.get("/stream")
async def stream() -> Response:
    db = get_database()

    async def body() -> AsyncIterator[bytes]:
        # The body is sent after teardown, possibly in another task: it needs its own scope.
        for _ in range(3):
            async with db.session_scope(writes=False) as session:
                count = await session.scalar(select(func.count()).select_from(Country))
            yield f"{count}\n".encode()

    return Response(body(), content_type="text/plain")


@blueprint.post("/background")
async def background() -> tuple[dict[str, str], int]:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    db = get_database()
    probe = state()

    async def job() -> None:
        async with db.session_scope(commit=True) as session:
            session.add(Country(name=f"background-{next(_names)}"))
        probe.background_done.set()

    app.add_background_task(job)
    return {"status": "queued"}, 202


@blueprint.get("/spawn")
async def spawn() -> dict[str, Any]:
    db = get_database()

    async def with_scope() -> int:
        async with db.session_scope(writes=False) as session:
            return await session.scalar(select(func.count()).select_from(Country)) or 0

    async def without_scope() -> None:
        current_session()

    counted, forgot = await asyncio.gather(
        asyncio.create_task(with_scope()),
        asyncio.create_task(without_scope()),
        return_exceptions=True,
    )
    return {"counted": counted, "forgot": type(forgot).__name__}


__all__ = ["NoSessionError", "ProbeState", "install"]
