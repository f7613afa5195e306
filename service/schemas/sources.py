"""Source schemas: what clients send and what they get back."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    HttpUrl,
    RootModel,
    StringConstraints,
    TypeAdapter,
    model_validator,
)

from service.models import TITLE_LENGTH, URL_LENGTH
from service.schemas.common import (
    NO_CONTROL_CHARACTERS,
    CursorList,
    IsoDate,
    ListQuery,
    NumberedList,
    PublicSchema,
    Schema,
)

_HTTP_URL: TypeAdapter[HttpUrl] = TypeAdapter(HttpUrl)


def _http_url(value: str) -> str:
    _HTTP_URL.validate_python(value)
    return value


Title = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        min_length=1,
        max_length=TITLE_LENGTH,
        pattern=NO_CONTROL_CHARACTERS,
    ),
]
Url = Annotated[
    str,
    # ASCII only: an international host or path is sent punycoded / percent-encoded.
    Field(max_length=URL_LENGTH, pattern=r"^https?://[!-~]+$"),
    AfterValidator(_http_url),
]


class SourceCreate(Schema):
    title: Title
    url: Url | None = None
    published_on: IsoDate | None = None


class SourceUpdate(Schema):
    """Some fields of a source; ``url`` and ``published_on`` may be set to null."""

    title: Title | None = None
    url: Url | None = None
    published_on: IsoDate | None = None

    @model_validator(mode="after")
    def _title_not_null(self) -> Any:
        if "title" in self.model_fields_set and self.title is None:
            raise ValueError("title cannot be null")
        return self


class SourcePublic(PublicSchema):
    id: int
    title: str
    url: str | None
    published_on: dt.date | None
    created_at: dt.datetime
    updated_at: dt.datetime


class SourceList(RootModel[CursorList[SourcePublic] | NumberedList[SourcePublic]]):
    """A page of sources: by cursor (default) or by number."""


class SourceQuery(ListQuery):
    order: Literal["id", "-id", "title", "-title"] = "id"
