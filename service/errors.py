"""One error format, problem+json (RFC 9457), raised anywhere and rendered in one place."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import orjson
from quart import Quart, Response
from quart_schema import RequestSchemaValidationError
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm.exc import StaleDataError
from werkzeug.exceptions import HTTPException

from service.constraints import CONFLICT_DETAILS, violated_constraint

PROBLEM_JSON = "application/problem+json"

logger = logging.getLogger(__name__)


@dataclass
class FieldError:
    field: str
    message: str


@dataclass
class APIError(Exception):
    """An HTTP error with a problem+json body; raise it from anywhere."""

    status: int
    detail: str | None = None
    errors: list[FieldError] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status}: {self.detail or HTTPStatus(self.status).phrase}"


def not_found(detail: str) -> APIError:
    return APIError(404, detail)


def conflict(detail: str) -> APIError:
    return APIError(409, detail)


def validation_error(errors: list[FieldError], detail: str | None = None) -> APIError:
    return APIError(422, detail or "the request did not validate", errors)


def unavailable(detail: str) -> APIError:
    return APIError(503, detail, headers={"Retry-After": "1"})


def problem_response(error: APIError) -> Response:
    """Render an APIError as a problem+json response."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(error.status).phrase,
        "status": error.status,
    }
    if error.detail:
        body["detail"] = error.detail
    if error.errors:
        body["errors"] = [{"field": e.field, "message": e.message} for e in error.errors]
    response = Response(orjson.dumps(body), status=error.status, content_type=PROBLEM_JSON)
    response.headers.update(error.headers)
    return response


def _dotted(location: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in location) or "body"


def field_errors_from_pydantic(raw_errors: list[Any]) -> list[FieldError]:
    """Turn pydantic's error list into ``field``/``message`` pairs with dotted paths."""
    return [FieldError(_dotted(error["loc"]), error["msg"]) for error in raw_errors]


_WRONG_BODY_TYPES = frozenset({"model_type", "model_attributes_type", "dict_type"})


def _from_schema_validation(error: RequestSchemaValidationError) -> APIError:
    cause = error.validation_error
    if not (isinstance(cause, TypeError | ValueError) and hasattr(cause, "errors")):
        return validation_error([FieldError("body", str(cause))])
    raw_errors = cause.errors()
    if any(not e["loc"] and e["type"] in _WRONG_BODY_TYPES for e in raw_errors):
        return APIError(400, "the body must be a JSON object")
    return validation_error(field_errors_from_pydantic(raw_errors))


def translate_database_error(error: Exception) -> APIError | None:
    """Map database failures that are not bugs to the contract's statuses."""
    if isinstance(error, StaleDataError):
        return APIError(412, "the resource was changed by another request; re-read it and retry")
    if isinstance(error, sa_exc.IntegrityError):
        return _integrity_conflict(error)
    if lost_a_race(error):
        return unavailable(
            "the write kept colliding with concurrent writes and was given up; retry shortly"
        )
    if _is_missing_table(error):
        return unavailable(
            "the database has no schema yet: run `alembic upgrade head` "
            "(or `quart --app service.app db upgrade`)"
        )
    if isinstance(error, sa_exc.TimeoutError):
        return unavailable("the database connection pool is exhausted; retry shortly")
    timed_out = _timed_out(error)
    if timed_out is not None:
        return unavailable(timed_out)
    disconnected = isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError)
    disconnected = disconnected or _refused_by_server(error)
    if isinstance(error, sa_exc.DBAPIError) and (error.connection_invalidated or disconnected):
        return unavailable("the database is unavailable; retry shortly")
    if isinstance(error, OSError | ConnectionError):
        return unavailable("the database is unavailable; retry shortly")
    return None


# The server ended the statement: statement_timeout (or a cancel request) and lock_timeout.
_TIMED_OUT_STATES = {
    "57014": "the database statement took too long and was cancelled; retry shortly",
    "55P03": "the data this request needs is locked by another transaction; retry shortly",
}


def _timed_out(error: Exception) -> str | None:
    """Why a statement timed out (server or client side), or None when it did not."""
    if isinstance(error, TimeoutError):
        # The driver's own deadline (DB_COMMAND_TIMEOUT): the server did not answer.
        return "the database did not answer in time; retry shortly"
    sqlstate = getattr(getattr(error, "orig", None), "sqlstate", None) or ""
    return _TIMED_OUT_STATES.get(sqlstate)


# Transactions that lost a race with another one, and may succeed when run again: a
# serialization failure (40001), a deadlock (40P01), and a row this one refers to, checked
# earlier in the transaction, deleted by a concurrent one since (23503; checked again, the
# deletion is seen and answered as such).
RETRYABLE_STATES = frozenset({"40001", "40P01", "23503"})


def lost_a_race(error: BaseException) -> bool:
    """Whether ``error`` ended a transaction that may succeed when run again."""
    sqlstate = getattr(getattr(error, "orig", None), "sqlstate", None)
    return isinstance(error, sa_exc.DBAPIError) and sqlstate in RETRYABLE_STATES


def _integrity_conflict(error: sa_exc.IntegrityError) -> APIError:
    if lost_a_race(error):
        return conflict("a row this change refers to was deleted meanwhile; retry")
    detail = CONFLICT_DETAILS.get(violated_constraint(error) or "")
    return conflict(detail or "the change conflicts with stored data")


# Connection exceptions (08...), the server shutting down or starting up (57P01-57P03), and
# too many clients (53300): the database is unavailable, not the request wrong.
_UNAVAILABLE_STATES = ("08", "57P01", "57P02", "57P03", "53300")


def _refused_by_server(error: Exception) -> bool:
    sqlstate = getattr(getattr(error, "orig", None), "sqlstate", None) or ""
    return sqlstate.startswith(_UNAVAILABLE_STATES)


def _is_missing_table(error: Exception) -> bool:
    """PostgreSQL's undefined_table (42P01) or SQLite's "no such table"."""
    if not isinstance(error, sa_exc.DBAPIError):
        return False
    original = error.orig
    return getattr(original, "sqlstate", None) == "42P01" or "no such table" in str(original)


def register_error_handlers(app: Quart) -> None:
    """Render every error the app can raise as problem+json."""

    @app.errorhandler(APIError)
    async def _api_error(error: APIError) -> Response:
        return problem_response(error)

    @app.errorhandler(RequestSchemaValidationError)
    async def _schema_error(error: RequestSchemaValidationError) -> Response:
        return problem_response(_from_schema_validation(error))

    @app.errorhandler(HTTPException)
    async def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        detail = error.description if status != 500 else None
        problem = APIError(status, detail)
        if status == 405 and error.get_response().headers.get("Allow"):
            problem.headers["Allow"] = error.get_response().headers["Allow"]
        return problem_response(problem)

    @app.errorhandler(Exception)
    async def _unexpected(error: Exception) -> Response:
        problem = translate_database_error(error)
        if problem is None:
            logger.exception("unhandled error", exc_info=error)
            problem = APIError(500, "an unexpected error occurred")
        return problem_response(problem)
