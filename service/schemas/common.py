"""Types and list envelopes shared by every resource."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from service.models import MAX_COUNT
from service.pagination import DEFAULT_LIMIT, MAX_LIMIT

T = TypeVar("T")

MAX_ID = 2_147_483_647
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_date(value: Any) -> Any:
    if isinstance(value, str) and not _ISO_DATE.fullmatch(value):
        raise ValueError("dates are YYYY-MM-DD")
    if not isinstance(value, str | dt.date):
        raise ValueError("dates are strings in YYYY-MM-DD form")
    return value


def _whole_number(value: Any) -> Any:
    """JSON numbers with no fraction (5 or 5.0); never strings or booleans."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a whole number")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be a whole number")
        return int(value)
    return value


IsoDate = Annotated[dt.date, BeforeValidator(_iso_date)]
# Bounds before the validator: pydantic then writes them as JSON Schema keywords (minimum,
# maximum); after it, they leaked into the OpenAPI document as pydantic's own ge/le.
Id = Annotated[int, Field(ge=1, le=MAX_ID), BeforeValidator(_whole_number)]
QueryId = Annotated[int, Field(ge=1, le=MAX_ID)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT), BeforeValidator(_whole_number)]
QueryCount = Annotated[int, Field(ge=0, le=MAX_COUNT)]
# Control characters (NUL above all, which PostgreSQL cannot store) are never valid text here.
NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f]*$"
Name = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=100, pattern=NO_CONTROL_CHARACTERS
    ),
]
QueryText = Annotated[str, StringConstraints(max_length=100, pattern=NO_CONTROL_CHARACTERS)]


class Schema(BaseModel):
    """Base for request bodies: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class PublicSchema(BaseModel):
    """Base for responses, built from ORM rows or mappings."""

    model_config = ConfigDict(from_attributes=True)


class QuerySchema(BaseModel):
    """Base for query strings: unknown parameters are ignored, as HTTP clients expect."""

    model_config = ConfigDict(extra="ignore")


class ListQuery(QuerySchema):
    """Pagination parameters every list accepts: a cursor walk (default) or numbered pages."""

    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT
    cursor: Annotated[str, Field(max_length=1024)] | None = None
    page: Annotated[int, Field(ge=1, le=MAX_ID)] | None = None
    per_page: Annotated[int, Field(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT


class CursorList(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


class NumberedList(BaseModel, Generic[T]):
    items: list[T]
    page: int
    per_page: int
    total: int
    pages: int


class Problem(BaseModel):
    """The body of every error (RFC 9457)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[dict[str, str]] | None = None
