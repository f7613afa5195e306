"""Logging: one line per request, slow statements, JSON or text; never a secret.

Statement parameters never reach the logs (the engine hides them, SQL echo included), and
request headers are never logged, so bearer tokens cannot leak.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import orjson
from quart import Quart, Response, g, request
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from service.control_characters import escape_control_characters, escape_json_line_breaks
from service.settings import Settings

request_logger = logging.getLogger("service.request")
slow_query_logger = logging.getLogger("service.slow_query")

# Statements run by the current request, counted by the engine listener below.
_statements: ContextVar[list[int] | None] = ContextVar("statements", default=None)
_STANDARD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def _rfc3339(created: float) -> str:
    """``2003-04-12T08:30:00.123Z``: UTC with milliseconds, as the API writes its times."""
    moment = dt.datetime.fromtimestamp(created, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class JSONFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(
            (key, value)
            for key, value in record.__dict__.items()
            if key not in _STANDARD_ATTRIBUTES
        )
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return escape_json_line_breaks(orjson.dumps(entry, default=str).decode())


class TextFormatter(logging.Formatter):
    """``LEVEL logger: message key=value ...`` for people reading a terminal.

    The message and the fields are escaped (service/control_characters.py): a client's
    input in them cannot start a line of its own. JSON lines need no such care.
    """

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(
            f"{key}={escape_control_characters(str(value))}"
            for key, value in record.__dict__.items()
            if key not in _STANDARD_ATTRIBUTES
        )
        message = escape_control_characters(record.getMessage())
        line = f"{record.levelname} {record.name}: {message}"
        line = f"{line} {fields}" if fields else line
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


def configure_logging(settings: Settings) -> None:
    """Send logs to stderr in the configured format, unless the host already configured them."""
    root = logging.getLogger()
    root.setLevel(settings.LOG_LEVEL)
    # aiosqlite's debug lines print every statement's parameters: keep them out at any level.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if settings.LOG_FORMAT == "json" else TextFormatter())
    root.addHandler(handler)


class StatementWatch:
    """Times every statement of the engines it is attached to.

    It counts them (in total for the metrics, and per request for the request log) and logs
    those slower than SLOW_QUERY_MS. It listens to the dialect's ``do_execute`` events and
    runs the statement itself. A connection event (``before_cursor_execute``) would do the
    same, but any connection event puts every connection of the engine on SQLAlchemy's
    event path for checkouts, begins, commits and rollbacks too; on PostgreSQL that path
    cost about 13 % of the CPU instructions of a GET (bench/RESULTS.md).
    """

    def __init__(self, settings: Settings) -> None:
        self.threshold = settings.SLOW_QUERY_MS / 1000
        self.total = 0

    def attach(self, engine: AsyncEngine) -> None:
        dialect = engine.sync_engine.dialect
        runners: dict[str, Callable[..., None]] = {
            "do_execute": dialect.do_execute,
            "do_executemany": dialect.do_executemany,
            "do_execute_no_params": dialect.do_execute_no_params,
        }
        for name, run in runners.items():
            event.listen(engine.sync_engine, name, self._timed(run))

    def _timed(self, run: Callable[..., None]) -> Callable[..., bool]:
        def execute(cursor: Any, statement: str, *arguments: Any) -> bool:
            started = time.perf_counter()
            try:
                run(cursor, statement, *arguments)
            finally:
                self._finished(statement, started)
            return True  # executed: SQLAlchemy must not execute it again

        return execute

    def _finished(self, statement: str, started: float) -> None:
        elapsed = time.perf_counter() - started
        self.total += 1
        box = _statements.get()
        if box is not None:
            box[0] += 1
        if self.threshold and elapsed >= self.threshold:
            slow_query_logger.warning(
                "slow statement",
                extra={"duration_ms": round(elapsed * 1000, 1), "statement": statement},
            )


async def _start_request_log() -> None:
    g.log_started = time.perf_counter()
    g.log_statements = [0]
    _statements.set(g.log_statements)


async def _log_request(response: Response) -> Response:
    started = g.get("log_started")
    if started is not None and request_logger.isEnabledFor(logging.INFO):
        rule = request.url_rule
        request_logger.info(
            "%s %s %s",
            request.method,
            request.path,
            response.status_code,
            extra={
                "request_id": g.get("request_id"),
                "method": request.method,
                "route": rule.rule if rule is not None else None,
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "queries": g.log_statements[0],
            },
        )
    return response


def init_app(app: Quart) -> None:
    app.before_request(_start_request_log)
    app.after_request(_log_request)
