"""Country schemas: what clients send and what they get back."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import RootModel

from service.schemas.common import (
    CursorList,
    ListQuery,
    Name,
    NumberedList,
    PublicSchema,
    QuerySchema,
    QueryText,
    Schema,
)


class CountryCreate(Schema):
    name: Name


class CountryUpdate(Schema):
    name: Name


class CountryPublic(PublicSchema):
    id: int
    name: str
    created_at: dt.datetime
    updated_at: dt.datetime


class CountryList(RootModel[CursorList[CountryPublic] | NumberedList[CountryPublic]]):
    """A page of countries: by cursor (default) or by number."""


class CountryQuery(ListQuery):
    q: QueryText | None = None
    order: Literal["id", "-id", "name", "-name"] = "id"


class CountryDeleteQuery(QuerySchema):
    cascade: bool = False
