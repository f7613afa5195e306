"""Rows as plain dicts: what a record's schema is validated from, and what list pages serve."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Row

from service.pagination import AnySelect


@functools.lru_cache(maxsize=1024)
def column_names(statement: AnySelect) -> tuple[str, ...]:
    """The names of the columns ``statement`` selects, in order (its rows' keys)."""
    return tuple(statement.selected_columns.keys())


def as_dict(statement: AnySelect, row: Row[Any]) -> dict[str, Any]:
    """A row of ``statement`` as a dict, to validate a response schema from.

    pydantic reads a Row field by field through SQLAlchemy's attribute lookup: validating a
    record from its Row takes about three times as long as from a dict (9 µs against 3 µs).
    """
    return dict(zip(column_names(statement), row, strict=True))


def as_dicts(statement: AnySelect, rows: Iterable[Row[Any]]) -> list[dict[str, Any]]:
    """Rows of ``statement`` as dicts (see :func:`as_dict`)."""
    names = column_names(statement)
    return [dict(zip(names, row, strict=True)) for row in rows]
