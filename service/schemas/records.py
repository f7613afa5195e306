"""Record schemas: what clients send and what they get back."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import Field, RootModel, field_validator, model_validator

from service.schemas.common import (
    Count,
    CursorList,
    Id,
    IsoDate,
    ListQuery,
    Name,
    NumberedList,
    PublicSchema,
    QueryCount,
    QueryId,
    QuerySchema,
    QueryText,
    Schema,
)

MAX_BULK_ITEMS = 10_000
MAX_SOURCES_PER_RECORD = 100

SourceIds = Annotated[list[Id], Field(max_length=MAX_SOURCES_PER_RECORD)]
RecordOrder = Literal["id", "-id", "date", "-date", "cases", "-cases"]


class RecordCreate(Schema):
    """A new record (or, for PUT, every writable field): its country by name or by id."""

    country: Name | None = None
    country_id: Id | None = None
    date: IsoDate
    cases: Count
    deaths: Count = 0
    recoveries: Count = 0
    source_ids: SourceIds = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_country(self) -> RecordCreate:
        if (self.country is None) == (self.country_id is None):
            raise ValueError("give exactly one of 'country' (a name) or 'country_id'")
        return self


class RecordPatch(Schema):
    """Some writable fields of a record; the others keep their values."""

    country: Name | None = None
    country_id: Id | None = None
    date: IsoDate | None = None
    cases: Count | None = None
    deaths: Count | None = None
    recoveries: Count | None = None
    source_ids: SourceIds | None = None

    @model_validator(mode="after")
    def _at_most_one_country(self) -> RecordPatch:
        nulls = sorted(name for name in self.model_fields_set if getattr(self, name) is None)
        if nulls:
            raise ValueError(f"{', '.join(nulls)} cannot be null; leave a field out to keep it")
        if self.country is not None and self.country_id is not None:
            raise ValueError("give at most one of 'country' (a name) or 'country_id'")
        return self


class RecordPublic(PublicSchema):
    id: int
    country_id: int
    country: str
    date: dt.date
    cases: int
    deaths: int
    recoveries: int
    source_ids: list[int]
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime

    @field_validator("source_ids")
    @classmethod
    def _ascending(cls, value: list[int]) -> list[int]:
        return sorted(value)


class RecordList(RootModel[CursorList[RecordPublic] | NumberedList[RecordPublic]]):
    """A page of records: by cursor (default) or by number."""


class RecordFilters(QuerySchema):
    """Filters shared by every list of records."""

    country: QueryText | None = None
    country_id: QueryId | None = None
    date_from: IsoDate | None = None
    date_to: IsoDate | None = None
    min_cases: QueryCount | None = None

    @model_validator(mode="after")
    def _ordered_range(self) -> RecordFilters:
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValueError("date_from is after date_to")
        return self


class RecordQuery(RecordFilters, ListQuery):
    order: RecordOrder = "id"


class BulkWrite(Schema):
    records: Annotated[list[RecordCreate], Field(min_length=1, max_length=MAX_BULK_ITEMS)]
    on_conflict: Literal["error", "skip", "update"] = "error"


class BulkResult(PublicSchema):
    created: int
    updated: int
    skipped: int
