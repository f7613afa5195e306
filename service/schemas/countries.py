"""Country schemas: what clients send and what they get back."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import Field

from service.schemas.common import ListQuery, Name, PublicSchema, QuerySchema, Schema


class CountryCreate(Schema):
    name: Name


class CountryUpdate(Schema):
    name: Name


class CountryPublic(PublicSchema):
    id: int
    name: str
    created_at: dt.datetime
    updated_at: dt.datetime


class CountryQuery(ListQuery):
    q: Annotated[str, Field(max_length=100)] | None = None
    order: Literal["id", "-id", "name", "-name"] = "id"


class CountryDeleteQuery(QuerySchema):
    cascade: bool = False
