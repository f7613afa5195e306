"""Source queries: reads as Core statements of SourcePublic's columns, writes on the ORM."""

from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.errors import not_found
from service.models import Source
from service.pagination import AnySelect, Listing, SortKey, sort_keys
from service.queries.rows import read_one
from service.schemas.sources import SourceCreate, SourcePublic, SourceUpdate

sources = Source.__table__
ORDERS: dict[str, SortKey] = sort_keys(sources.c.id, title=sources.c.title)

# SourcePublic's fields as table columns, in its order: the session runs reads as Core.
_PUBLIC: AnySelect = select(
    sources.c.id,
    sources.c.title,
    sources.c.url,
    sources.c.published_on,
    sources.c.created_at,
    sources.c.updated_at,
)
_BY_ID = _PUBLIC.where(sources.c.id == bindparam("source_id"))


def list_statement() -> Listing:
    """Every source, as SourcePublic rows."""
    return Listing(_PUBLIC, {})


async def read_source(session: AsyncSession, source_id: int) -> SourcePublic:
    """One source as served: a single Core statement, no ORM object."""
    missing = f"source {source_id} does not exist"
    return await read_one(session, _BY_ID, {"source_id": source_id}, SourcePublic, missing)


async def get_source(session: AsyncSession, source_id: int) -> Source:
    """One source as an ORM object, for writes."""
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
