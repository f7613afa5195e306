"""Turn a list query into the contract's list response, in either pagination mode."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from service.errors import FieldError, validation_error
from service.pagination import Listing, SortKey, cursor_page, next_link, numbered_page
from service.queries.rows import as_dicts
from service.schemas.common import CursorList, ListQuery, NumberedList

P = TypeVar("P", bound=BaseModel)
ListBody = CursorList[Any] | NumberedList[Any]


async def paginate(
    session: AsyncSession,
    listing: Listing,
    orders: Mapping[str, SortKey],
    order: str,
    query: ListQuery,
    to_public: Callable[[Any], P],
) -> tuple[ListBody, dict[str, str]]:
    """One page of ``listing``: by cursor (default) or by number when ``page`` is given."""
    key = orders[order]
    if query.page is not None:
        if query.cursor is not None:
            raise validation_error([FieldError("cursor", "use either cursor or page, not both")])
        numbered = await numbered_page(session, listing, key, query.page, query.per_page)
        body: ListBody = NumberedList[Any](
            items=[to_public(row) for row in as_dicts(listing.statement, numbered.items)],
            page=query.page,
            per_page=query.per_page,
            total=numbered.total,
            pages=math.ceil(numbered.total / query.per_page),
        )
        return body, {}
    page = await cursor_page(session, listing, key, order, query.limit, query.cursor)
    headers = {"Link": next_link(page.next_cursor)} if page.next_cursor else {}
    items = [to_public(row) for row in as_dicts(listing.statement, page.items)]
    return CursorList[Any](items=items, next_cursor=page.next_cursor), headers
