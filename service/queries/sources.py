"""Source queries."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.errors import not_found
from service.models import Source
from service.pagination import AnySelect, Listing, SortKey, sort_keys
from service.schemas.sources import SourceCreate, SourceUpdate

ORDERS: dict[str, SortKey] = sort_keys(Source.id, title=Source.title)


_COLUMNS: AnySelect = select(
    Source.id,
    Source.title,
    Source.url,
    Source.published_on,
    Source.created_at,
    Source.updated_at,
)


def list_statement() -> Listing:
    return Listing(_COLUMNS, {})


async def get_source(session: AsyncSession, source_id: int) -> Source:
    source = await session.get(Source, source_id)
    if source is None:
        raise not_found(f"source {source_id} does not exist")
    return source


async def create_source(session: AsyncSession, data: SourceCreate) -> Source:
    source = Source(**data.model_dump())
    session.add(source)
    await session.flush()
    return source


async def update_source(session: AsyncSession, source_id: int, data: SourceUpdate) -> Source:
    source = await get_source(session, source_id)
    for name, value in data.model_dump(exclude_unset=True).items():
        setattr(source, name, value)
    await session.flush()
    return source


async def delete_source(session: AsyncSession, source_id: int) -> None:
    """Delete a source; its links to records go with it (the records stay)."""
    await session.delete(await get_source(session, source_id))
    await session.flush()
