"""What every peer shares: settings from the environment, the cursor, the body, the JSON.

Pure Python on purpose: the raw peer imports it without pulling in SQLAlchemy.

The peers read the service's own variables: ``DATABASE_URL`` (any PostgreSQL URL),
``API_TOKENS`` (comma-separated) and ``DB_POOL_SIZE``.
"""

from __future__ import annotations

import datetime as dt
import hmac
import os
from collections.abc import Mapping
from typing import Any

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
POOL_SIZE = int(os.environ.get("DB_POOL_SIZE", "10"))
POOL_TIMEOUT = float(os.environ.get("DB_POOL_TIMEOUT", "5"))
TOKENS = tuple(token.strip() for token in os.environ.get("API_TOKENS", "").split(",") if token)
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_COUNT = 2_147_483_647


class RequestError(Exception):
    """A request the peer refuses: its status and the problem's detail."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


TITLES = {
    401: "Unauthorized",
    404: "Not Found",
    409: "Conflict",
    422: "Unprocessable Content",
}


def problem(status: int, detail: str) -> dict[str, Any]:
    """The RFC 9457 body the service sends for an error."""
    return {"type": "about:blank", "title": TITLES[status], "status": status, "detail": detail}


def url_with_driver(driver: str) -> str:
    """``DATABASE_URL`` with ``driver`` (``postgresql+DRIVER://``), for SQLAlchemy."""
    _, rest = DATABASE_URL.split("://", 1)
    return f"postgresql+{driver}://{rest}"


def plain_url() -> str:
    """``DATABASE_URL`` as libpq/asyncpg spell it (``postgresql://``)."""
    _, rest = DATABASE_URL.split("://", 1)
    return f"postgresql://{rest}"


def authorized(header: str | None) -> bool:
    """A valid ``Authorization: Bearer <token>``, compared in constant time."""
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    sent = token.strip().encode()
    return any([hmac.compare_digest(sent, known.encode()) for known in TOKENS])


def parse_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise RequestError(422, f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def make_cursor(row: Mapping[Any, Any]) -> str:
    """A simple opaque cursor: the (date, id) of the last row served."""
    return f"{row['date'].isoformat()}.{row['id']}"


def parse_cursor(raw: str) -> tuple[dt.date, int]:
    try:
        date, _, row_id = raw.partition(".")
        return dt.date.fromisoformat(date), int(row_id)
    except ValueError:
        raise RequestError(422, "the cursor is invalid") from None


def _count(body: Mapping[str, Any], name: str, default: int | None) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise RequestError(422, f"{name} must be an integer from 0 to {MAX_COUNT}")
    return value


def parse_create(body: Any) -> dict[str, Any]:
    """The fields of ``POST /records`` (by country name) as statement parameters."""
    if not isinstance(body, dict):
        raise RequestError(422, "the body must be a JSON object")
    name = body.get("country")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 100:
        raise RequestError(422, "country must be a name of 1 to 100 characters")
    try:
        date = dt.date.fromisoformat(body.get("date") or "")
    except (TypeError, ValueError):
        raise RequestError(422, "date must be YYYY-MM-DD") from None
    return {
        "name": name.strip(),
        "date": date,
        "cases": _count(body, "cases", None),
        "deaths": _count(body, "deaths", 0),
        "recoveries": _count(body, "recoveries", 0),
    }


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def timestamp(value: dt.datetime) -> str:
    """RFC 3339 in UTC ending in ``Z``, as the service writes it."""
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def public(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A record row as the service's JSON object, with only JSON-native values."""
    return {
        "id": row["id"],
        "country_id": row["country_id"],
        "country": row["country"],
        "date": row["date"].isoformat(),
        "cases": row["cases"],
        "deaths": row["deaths"],
        "recoveries": row["recoveries"],
        "source_ids": sorted(row["source_ids"]),
        "version": row["version"],
        "created_at": timestamp(row["created_at"]),
        "updated_at": timestamp(row["updated_at"]),
    }
