"""What service/compat/ relies on in other libraries is still there, with the same shape.

Each failure names the compat module to revisit: its docstring says what it uses and why.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import multiprocessing
import multiprocessing.util
import pkgutil
import threading
import tomllib
from collections.abc import Callable
from importlib.metadata import version
from types import ModuleType
from typing import Any, cast

import asyncpg
import hypercorn.asyncio.run
import hypercorn.trio.run
import hypercorn.utils
import pytest
import quart.asgi
import quart.wrappers
import quart_schema.conversion
import sqlalchemy
import sqlalchemy.util.concurrency
from hypercorn.typing import HTTPScope
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version
from pydantic import BaseModel
from quart import Quart
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.util import queue as sqla_queue
from werkzeug.datastructures import Headers

import service.compat
from service.app import create_app
from service.asgi import ServiceApp
from service.compat import aiosqlite as compat_aiosqlite
from service.compat import asyncpg as compat_asyncpg
from service.compat import hypercorn as compat_hypercorn
from service.compat import quart as compat_quart
from service.compat import quart_schema as compat_quart_schema
from service.compat import sqlalchemy as compat_sqlalchemy
from service.db import Database
from service.http import ServiceRequest
from service.settings import load_settings
from tests.conftest import settings_for
from tests.databases import REPO_ROOT, Databases, fresh_database

COMPAT_MODULES = (
    compat_aiosqlite,
    compat_hypercorn,
    compat_asyncpg,
    compat_quart,
    compat_quart_schema,
    compat_sqlalchemy,
)


def _where(module: ModuleType) -> str:
    return f"service/compat/{module.__name__.rsplit('.', 1)[1]}.py"


def _parameters(function: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(function).parameters)


def _check(module: ModuleType, holds: bool, what: str) -> None:
    assert holds, f"{what}: revisit {_where(module)} (its docstring says what it relies on)"


@pytest.mark.parametrize("module", COMPAT_MODULES, ids=lambda module: _where(module))
def test_the_installed_version_is_one_the_workaround_was_checked_against(
    module: ModuleType,
) -> None:
    installed = version(module.DISTRIBUTION)
    _check(
        module,
        installed in SpecifierSet(module.SUPPORTED),
        f"{module.DISTRIBUTION} {installed} is outside {module.SUPPORTED}",
    )


def _requirement(distribution: str) -> Requirement:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    for line in pyproject["project"]["dependencies"]:
        requirement = Requirement(line)
        if canonicalize_name(requirement.name) == canonicalize_name(distribution):
            return requirement
    raise AssertionError(f"pyproject.toml does not require {distribution}")


def _bounds(specifiers: SpecifierSet) -> tuple[Version, Version]:
    lower = [Version(s.version) for s in specifiers if s.operator == ">="]
    upper = [Version(s.version) for s in specifiers if s.operator == "<"]
    assert len(lower) == len(upper) == 1, f"not a '>=a,<b' range: {specifiers}"
    return lower[0], upper[0]


@pytest.mark.parametrize("module", COMPAT_MODULES, ids=lambda module: _where(module))
def test_the_pins_allow_only_versions_the_workaround_was_checked_against(
    module: ModuleType,
) -> None:
    pinned = _requirement(module.DISTRIBUTION).specifier
    low, high = _bounds(pinned)
    checked_low, checked_high = _bounds(SpecifierSet(module.SUPPORTED))
    _check(
        module,
        checked_low <= low and high <= checked_high,
        f"pyproject.toml allows {module.DISTRIBUTION}{pinned}, beyond {module.SUPPORTED}",
    )


# -- SQLAlchemy ------------------------------------------------------------------------------


def test_sqlalchemy_pool_queue_interface_is_unchanged() -> None:
    expected = {
        "__init__": ["self", "maxsize", "use_lifo"],
        "empty": ["self"],
        "full": ["self"],
        "qsize": ["self"],
        "put_nowait": ["self", "item"],
        "put": ["self", "item", "block", "timeout"],
        "get_nowait": ["self"],
        "get": ["self", "block", "timeout"],
    }
    for name, parameters in expected.items():
        method = getattr(sqla_queue.QueueCommon, name, None)
        _check(
            compat_sqlalchemy,
            method is not None and _parameters(method) == parameters,
            f"sqlalchemy.util.queue.QueueCommon.{name} is not ({', '.join(parameters)})",
        )
    for name in ("Empty", "Full"):
        _check(
            compat_sqlalchemy,
            isinstance(getattr(sqla_queue, name, None), type),
            f"sqlalchemy.util.queue.{name} is gone",
        )
    await_ = getattr(sqlalchemy.util.concurrency, "await_", None)
    _check(
        compat_sqlalchemy,
        await_ is not None and _parameters(await_) == ["awaitable"],
        "sqlalchemy.util.concurrency.await_(awaitable) is gone or changed",
    )


def _no_connection() -> Any:
    raise AssertionError("the pool is never asked for a connection here")


def test_sqlalchemy_pool_is_built_on_its_queue_class() -> None:
    _check(
        compat_sqlalchemy,
        "_queue_class" in vars(AsyncAdaptedQueuePool),
        "AsyncAdaptedQueuePool._queue_class is gone",
    )
    pool = compat_sqlalchemy.FairQueuePool(_no_connection, pool_size=1)
    _check(
        compat_sqlalchemy,
        isinstance(pool._pool, compat_sqlalchemy.FairQueue),
        "QueuePool no longer builds its queue from _queue_class",
    )


def test_sqlalchemy_names_a_pool_logger_from_its_class_namespace() -> None:
    pool = compat_sqlalchemy.FairQueuePool(_no_connection, pool_size=1)
    _check(
        compat_sqlalchemy,
        isinstance(pool.logger, logging.Logger)
        and pool.logger.name == "sqlalchemy.pool.impl.FairQueuePool",
        "sqlalchemy.log no longer reads _sqla_logger_namespace",
    )


async def test_sqlalchemy_session_transaction_and_scoped_registry_answer(
    database_url: str,
) -> None:
    async with Database(load_settings(settings_for(database_url))) as db:
        async with db.session_scope(writes=False) as session:
            _check(
                compat_sqlalchemy,
                dict(compat_sqlalchemy.scoped_sessions(db.scoped))
                == {asyncio.current_task(): session},
                "scoped_session.registry.registry no longer maps scopes to sessions",
            )
            session.sync_session.begin()  # a transaction, before any connection
            _check(
                compat_sqlalchemy,
                not compat_sqlalchemy.transaction_has_connection(session),
                "a session transaction reports a connection before its first statement",
            )
            await session.execute(select(1))
            _check(
                compat_sqlalchemy,
                compat_sqlalchemy.transaction_has_connection(session),
                "SessionTransaction._connections no longer lists the checked-out connection",
            )
            _check(
                compat_sqlalchemy,
                compat_sqlalchemy.holds_connection_to(session.sync_session, db.engine.sync_engine),
                "SessionTransaction._connections is no longer keyed on each engine",
            )


def test_sqlalchemy_selects_say_whether_they_lock_rows() -> None:
    table = sqlalchemy.table("t", sqlalchemy.column("a"))
    plain, locking = select(table), select(table).with_for_update()
    _check(
        compat_sqlalchemy,
        compat_sqlalchemy.reads_only(plain) and compat_sqlalchemy.reads_only(plain.union(plain)),
        "a plain SELECT is no longer recognised (is_select, _for_update_arg)",
    )
    _check(
        compat_sqlalchemy,
        not compat_sqlalchemy.reads_only(locking),
        "Select._for_update_arg no longer records FOR UPDATE",
    )
    _check(
        compat_sqlalchemy,
        not compat_sqlalchemy.reads_only(sqlalchemy.insert(table).values(a=1)),
        "an INSERT is taken for a plain SELECT",
    )


# -- aiosqlite -------------------------------------------------------------------------------


def test_aiosqlite_connection_constructor_is_unchanged() -> None:
    import aiosqlite

    _check(
        compat_aiosqlite,
        _parameters(aiosqlite.Connection.__init__)[:3] == ["self", "connector", "iter_chunk_size"],
        "aiosqlite.Connection(connector, iter_chunk_size) changed",
    )
    _check(
        compat_aiosqlite,
        _parameters(aiosqlite.Connection.stop) == ["self"],
        "aiosqlite.Connection.stop() changed",
    )


async def test_aiosqlite_connection_has_its_running_flag_and_thread(tmp_path: Any) -> None:
    connection = compat_aiosqlite.connect(str(tmp_path / "contract.db"))
    _check(
        compat_aiosqlite,
        isinstance(compat_aiosqlite.worker_thread(connection), threading.Thread),
        "aiosqlite.Connection._thread is not the worker thread",
    )
    _check(compat_aiosqlite, connection._running is True, "aiosqlite.Connection._running is gone")
    await connection
    await connection.execute("SELECT 1")
    stopped = connection.stop()
    _check(compat_aiosqlite, connection._running is False, "stop() no longer clears _running")
    assert stopped is not None
    await stopped
    _check(compat_aiosqlite, connection.stop() is None, "a second stop() is sent again")
    await connection.close()  # returns at once: nothing is asked of the stopped thread
    compat_aiosqlite.worker_thread(connection).join()


# -- Quart -----------------------------------------------------------------------------------


def test_asyncpg_executemany_is_unchanged() -> None:
    _check(
        compat_asyncpg,
        _parameters(asyncpg.Connection._executemany)
        == ["self", "query", "args", "timeout", "return_rows", "record_class"],
        "asyncpg.Connection._executemany's parameters changed",
    )


@pytest.mark.postgresql_only
async def test_asyncpg_connection_has_its_transport(databases: Databases) -> None:
    async with fresh_database(databases) as url:
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        connection = await asyncpg.connect(
            dsn, connection_class=compat_asyncpg.CancellableConnection
        )
        try:
            socket = connection._transport.get_extra_info("socket")
            _check(compat_asyncpg, socket is not None, "asyncpg.Connection._transport is gone")
        finally:
            await connection.close()


def test_quart_asgi_private_names_are_unchanged() -> None:
    connection = quart.asgi.ASGIHTTPConnection
    expected: dict[str, tuple[Any, list[str]]] = {
        "ASGIHTTPConnection._create_request_from_scope": (
            getattr(connection, "_create_request_from_scope", None),
            ["self", "send"],
        ),
        "ASGIHTTPConnection._send_response": (
            getattr(connection, "_send_response", None),
            ["self", "send", "response"],
        ),
        "ASGIHTTPConnection.handle_messages": (
            getattr(connection, "handle_messages", None),
            ["self", "request", "receive"],
        ),
        "ASGIHTTPConnection.handle_request": (
            getattr(connection, "handle_request", None),
            ["self", "request", "send"],
        ),
        "_handle_exception": (getattr(quart.asgi, "_handle_exception", None), ["app", "error"]),
    }
    for name, (function, parameters) in expected.items():
        _check(
            compat_quart,
            function is not None and _parameters(function) == parameters,
            f"quart.asgi.{name} is not ({', '.join(parameters)})",
        )


def _source_digest(function: Callable[..., Any]) -> str:
    """sha256 (first 16 hex digits) of a function's source, as the compat modules record it."""
    return hashlib.sha256(inspect.getsource(function).rstrip().encode()).hexdigest()[:16]


def test_quart_handle_request_is_still_the_one_copied() -> None:
    digest = _source_digest(quart.asgi.ASGIHTTPConnection.handle_request)
    _check(
        compat_quart,
        digest in compat_quart.COPIED_HANDLE_REQUEST,
        f"quart.asgi.ASGIHTTPConnection.handle_request changed upstream (sha256 {digest}): "
        "compare it with RequestTaskHTTPConnection.handle_request, then record the digest",
    )


def test_quart_get_data_is_still_the_one_copied() -> None:
    digest = _source_digest(quart.wrappers.Request.get_data)
    _check(
        compat_quart,
        digest in compat_quart.COPIED_GET_DATA,
        f"quart.wrappers.Request.get_data changed upstream (sha256 {digest}): compare it with "
        "CancellableBodyRequest.get_data, then record the digest",
    )


async def _no_push(path: str, headers: Headers) -> None:
    pass


@pytest.mark.parametrize("request_class", [compat_quart.CancellableBodyRequest, ServiceRequest])
async def test_a_cancel_that_lands_as_the_body_completes_ends_the_request(
    request_class: type[quart.wrappers.Request],
) -> None:
    """Quart's own ``Request`` returns the body here on Python 3.11 and the cancel is lost."""
    request = request_class(
        *("POST", "http", "/", b"", Headers(), "", "1.1"),
        scope=cast(HTTPScope, {}),
        body_timeout=60,  # as Quart's default BODY_TIMEOUT: wait_for then wraps the body
        send_push_promise=_no_push,
    )
    reading = asyncio.ensure_future(request.get_data())
    await asyncio.sleep(0)  # now waiting for the body
    request.body.append(b"{}")
    request.body.set_complete()
    reading.cancel()  # as a client that leaves right after its body: the same loop step
    with pytest.raises(asyncio.CancelledError):
        await reading


def test_the_service_reads_bodies_with_the_cancellable_request() -> None:
    _check(
        compat_quart,
        issubclass(ServiceApp.request_class, compat_quart.CancellableBodyRequest),
        "the app's request class waits for the body with asyncio.wait_for",
    )


# -- quart-schema ----------------------------------------------------------------------------


class _Model(BaseModel):
    value: int


async def test_quart_schema_conversion_is_bypassed_for_models_and_dicts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    app = create_app(settings_for(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}"))

    @app.get("/contract/model")
    async def model() -> _Model:
        return _Model(value=1)

    @app.get("/contract/dict")
    async def mapping() -> dict[str, int]:
        return {"value": 2}

    def slow_path(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(
            f"quart-schema converted the response: revisit {_where(compat_quart_schema)}"
        )

    monkeypatch.setattr(quart_schema.conversion, "model_dump", slow_path)
    client = app.test_client()
    for path, body in (("/contract/model", {"value": 1}), ("/contract/dict", {"value": 2})):
        response = await client.get(path)
        _check(
            compat_quart_schema,
            response.status_code == 200 and await response.get_json() == body,
            f"GET {path} went through quart-schema's conversion",
        )


def test_the_fast_path_refuses_to_go_under_quart_schema() -> None:
    with pytest.raises(RuntimeError, match="after QuartSchema"):
        compat_quart_schema.serialize_models_directly(Quart(__name__), lambda value: b"")


# -- Hypercorn -------------------------------------------------------------------------------


def test_hypercorn_workers_load_the_app_through_load_application() -> None:
    _check(
        compat_hypercorn,
        _parameters(hypercorn.utils.load_application)[:2] == ["path", "wsgi_max_body_size"],
        "hypercorn.utils.load_application(path, wsgi_max_body_size) is gone or changed",
    )
    for worker_module in (hypercorn.asyncio.run, hypercorn.trio.run):
        _check(
            compat_hypercorn,
            "load_application(" in inspect.getsource(worker_module),
            f"{worker_module.__name__} no longer loads the app with load_application",
        )
    _check(compat_hypercorn, not compat_hypercorn.in_hypercorn_worker(), "a test is a worker")


def test_a_spawned_event_is_five_named_semaphores_a_worker_can_release() -> None:
    event = multiprocessing.get_context("spawn").Event()
    try:
        semaphores = compat_hypercorn.event_semaphores(event)
    except AttributeError as error:
        _check(compat_hypercorn, False, f"multiprocessing's Event changed shape ({error})")
    names = [getattr(semaphore._semlock, "name", None) for semaphore in semaphores]
    _check(compat_hypercorn, all(names), "multiprocessing's semaphores no longer carry names")
    _check(compat_hypercorn, compat_hypercorn.release_semaphores(event), "nothing was released")
    _check(
        compat_hypercorn,
        not compat_hypercorn.release_semaphores(event),
        "a second release must report that another worker released them first",
    )
    # This process made the event, so it would unlink the names again at collection; a
    # Hypercorn worker only holds copies, and the main process that made them is ended.
    registry = getattr(multiprocessing.util, "_finalizer_registry", {})
    for finalizer in list(registry.values()):
        if getattr(finalizer, "_args", None) in {(name,) for name in names}:
            finalizer.cancel()


def test_every_compat_module_documents_its_contract() -> None:
    for module in COMPAT_MODULES:
        doc = module.__doc__ or ""
        for part in ("Written against", "relied on", "Why", "can go"):
            assert part in doc, f"{_where(module)}'s docstring does not say {part!r}"


def test_every_compat_module_is_checked_here() -> None:
    found = {info.name for info in pkgutil.iter_modules(service.compat.__path__)}
    checked = {module.__name__.rsplit(".", 1)[1] for module in COMPAT_MODULES}
    assert found == checked, f"add the new module of service/compat/ to COMPAT_MODULES: {found}"
