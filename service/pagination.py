"""Keyset (cursor) pagination and page/total pagination for every list.

A cursor is the sort key of the last row served plus the order it belongs to, signed with
HMAC so that a tampered cursor, or one from another order, is refused (422) instead of
silently skipping rows. Whoever knows the secret can sign any payload, so a cursor whose
signature holds is still validated against its order's types and bounds before any value
reaches a statement: every cursor string is a page or a 422.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import orjson
from pydantic import AfterValidator, Field, StrictInt, StrictStr, TypeAdapter, ValidationError
from quart import current_app, request
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Select,
    and_,
    bindparam,
    func,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from service.errors import FieldError, validation_error
from service.settings import Settings
from service.signing import sign, unsign

# Any SELECT, whatever its columns (Select is generic over the column types).
AnySelect = Select[*tuple[Any, ...]]
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# A mapped attribute, or a table column (reads that want rows, not objects, use those).
SortColumn = InstrumentedAttribute[Any] | ColumnElement[Any]
# The longest order name a cursor may carry (the real ones are a few characters).
MAX_ORDER_LENGTH = 64
# Text sort values of columns without a declared length.
MAX_CURSOR_TEXT = 1024


@dataclass(frozen=True)
class SortKey:
    """An order a list supports: ``name`` or ``-name``, always broken by id."""

    column: SortColumn
    id_column: SortColumn
    descending: bool

    def order_by(self) -> list[ColumnElement[Any]]:
        if self.descending:
            return [self.column.desc(), self.id_column.desc()]
        return [self.column.asc(), self.id_column.asc()]

    @functools.cached_property
    def cursor_position(self) -> TypeAdapter[tuple[Any, int]]:
        """Validates a cursor's (value, id) for this order: the column's type and range."""
        value, identifier = _value_type(self.column), _value_type(self.id_column)
        return TypeAdapter(tuple[value, identifier])  # type: ignore[valid-type]

    def after(self, value: ColumnElement[Any], row_id: ColumnElement[int]) -> ColumnElement[bool]:
        """Rows strictly after (value, row_id) in this order."""
        if self.column is self.id_column:
            return self.id_column < row_id if self.descending else self.id_column > row_id
        if self.descending:
            return or_(self.column < value, and_(self.column == value, self.id_column < row_id))
        return or_(self.column > value, and_(self.column == value, self.id_column > row_id))


def _storable_text(value: str) -> str:
    # PostgreSQL refuses NUL in text, and a lone surrogate cannot be encoded to send it.
    if "\x00" in value:
        raise ValueError("text with a NUL character")
    value.encode()
    return value


def _value_type(column: SortColumn) -> Any:
    """The pydantic type of a value of ``column``, bounded to what the column can hold."""
    python_type = column.type.python_type
    if python_type is int:
        bits = 64 if isinstance(column.type, BigInteger) else 32
        return Annotated[StrictInt, Field(ge=-(2 ** (bits - 1)), le=2 ** (bits - 1) - 1)]
    if python_type is str:
        length = getattr(column.type, "length", None) or MAX_CURSOR_TEXT
        return Annotated[StrictStr, Field(max_length=length), AfterValidator(_storable_text)]
    if python_type is dt.date:
        return dt.date
    raise TypeError(f"no cursor type for a sort column of {python_type.__name__}")


# Any signed payload decodes to this first: the order it names, then its own types.
_CursorEnvelope = TypeAdapter(
    tuple[Annotated[StrictStr, Field(max_length=MAX_ORDER_LENGTH)], Any, Any]
)


def sort_keys(id_column: SortColumn, **columns: SortColumn) -> dict[str, SortKey]:
    """The ``order`` values a list accepts: each column ascending and (with ``-``) descending."""
    keys = {"id": id_column, **columns}
    orders: dict[str, SortKey] = {}
    for name, column in keys.items():
        orders[name] = SortKey(column, id_column, descending=False)
        orders[f"-{name}"] = SortKey(column, id_column, descending=True)
    return orders


def _secret() -> bytes:
    settings: Settings = current_app.config["SETTINGS"]
    return settings.CURSOR_SECRET.encode()


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date) else value


def encode_cursor(order: str, value: Any, row_id: int) -> str:
    return sign(_secret(), orjson.dumps([order, _jsonable(value), row_id]))


def decode_cursor(cursor: str, key: SortKey, order: str) -> tuple[Any, int]:
    """The (value, id) a cursor resumes after; 422 when it was altered, is for another
    order, or carries values its order's columns cannot hold."""
    invalid = validation_error([FieldError("cursor", "the cursor is invalid or was altered")])
    payload = unsign(_secret(), cursor)
    if payload is None:
        raise invalid
    try:
        cursor_order, value, row_id = _CursorEnvelope.validate_json(payload)
    except ValidationError:
        raise invalid from None
    if cursor_order != order:
        raise validation_error(
            [FieldError("cursor", f"the cursor belongs to order {cursor_order!r}, not {order!r}")]
        )
    try:
        return key.cursor_position.validate_python((value, row_id))
    except ValidationError:
        raise invalid from None


@dataclass(frozen=True)
class Listing:
    """What a list selects: a statement built once per shape of query (which filters are
    given), and this request's values for its parameters.

    Building a statement and computing its cache key cost more than running it; a statement
    object that is reused has its cache key memoized, so lists reuse them.
    """

    statement: AnySelect
    params: dict[str, Any]


@functools.lru_cache(maxsize=1024)
def _page_statement(base: AnySelect, key: SortKey, after_cursor: bool) -> AnySelect:
    statement = base
    if after_cursor:
        value = bindparam("cursor_value", type_=key.column.type)
        statement = statement.where(key.after(value, bindparam("cursor_id", type_=Integer)))
    return statement.order_by(*key.order_by()).limit(bindparam("page_limit", type_=Integer))


@functools.lru_cache(maxsize=1024)
def _numbered_statement(base: AnySelect, key: SortKey) -> AnySelect:
    return (
        base.order_by(*key.order_by())
        .offset(bindparam("page_offset", type_=BigInteger))
        .limit(bindparam("page_limit", type_=Integer))
    )


@functools.lru_cache(maxsize=1024)
def _count_statement(base: AnySelect) -> AnySelect:
    return select(func.count()).select_from(base.subquery())


@dataclass
class CursorPage:
    items: Sequence[Any]
    next_cursor: str | None


async def cursor_page(
    session: AsyncSession,
    listing: Listing,
    key: SortKey,
    order: str,
    limit: int,
    cursor: str | None,
) -> CursorPage:
    """One page of rows (with ``id`` and the sort column) after ``cursor``, in ``key`` order."""
    params = {**listing.params, "page_limit": limit + 1}
    if cursor:
        value, row_id = decode_cursor(cursor, key, order)
        params.update(cursor_value=value, cursor_id=row_id)
    statement = _page_statement(listing.statement, key, bool(cursor))
    rows = (await session.execute(statement, params)).all()
    if len(rows) <= limit:
        return CursorPage(rows, None)
    last = rows[limit - 1]
    sort_value = last._mapping[key.column]
    return CursorPage(rows[:limit], encode_cursor(order, sort_value, last.id))


@dataclass
class NumberedPage:
    items: Sequence[Any]
    total: int


async def numbered_page(
    session: AsyncSession, listing: Listing, key: SortKey, page: int, per_page: int
) -> NumberedPage:
    """Page ``page`` (from 1) with the total row count."""
    total = await session.scalar(_count_statement(listing.statement), listing.params) or 0
    params = {**listing.params, "page_offset": (page - 1) * per_page, "page_limit": per_page}
    rows = await session.execute(_numbered_statement(listing.statement, key), params)
    return NumberedPage(rows.all(), total)


def next_link(cursor: str) -> str:
    """A ``Link`` header value for the next page: this request's path and query, with the
    new cursor.

    The reference is relative (RFC 8288, section 3): the client resolves it against the URL
    it used. An absolute one would be built from the ``Host`` header, which a client chooses
    and which a proxy may rewrite (nginx passes it without the port).
    """
    params = [(k, v) for k, v in request.args.items(multi=True) if k != "cursor"]
    params.append(("cursor", cursor))
    path = quote(request.script_root + request.path)
    return f'<{path}?{urlencode(params)}>; rel="next"'
