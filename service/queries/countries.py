"""Country queries: reads as Core statements of CountryPublic's columns, writes on the ORM."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Select, Table, bindparam, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from service.constraints import COUNTRY_NAME, refused_by, unique_columns
from service.errors import conflict, not_found
from service.models import Country, Record, utc_now
from service.pagination import Listing, SortKey, sort_keys
from service.queries.rows import read_one
from service.schemas.countries import CountryPublic

countries = Country.__table__
_TABLE: Table = Country.__table__  # type: ignore[assignment] # dialect inserts want a Table
ORDERS: dict[str, SortKey] = sort_keys(countries.c.id, name=countries.c.name)

# CountryPublic's fields as table columns, in its order: the session runs reads as Core.
_PUBLIC = select(countries.c.id, countries.c.name, countries.c.created_at, countries.c.updated_at)
_BY_ID = _PUBLIC.where(countries.c.id == bindparam("country_id"))
_NAME_CONTAINS = _PUBLIC.where(func.lower(countries.c.name).like(bindparam("pattern"), escape="/"))
# Built once, with bound values: a statement built per call costs more than running it.
_ID_BY_NAME: Select[int] = select(Country.__table__.c.id).where(
    Country.__table__.c.name == bindparam("name")
)
_NAME_BY_ID: Select[str] = select(Country.__table__.c.name).where(
    Country.__table__.c.id == bindparam("country_id")
)


def list_statement(q: str | None) -> Listing:
    """Countries, those whose name contains ``q`` (any case) when it is given."""
    if not q:
        return Listing(_PUBLIC, {})
    literal = q.lower().replace("/", "//").replace("%", "/%").replace("_", "/_")
    return Listing(_NAME_CONTAINS, {"pattern": f"%{literal}%"})


async def read_country(session: AsyncSession, country_id: int) -> CountryPublic:
    """One country as served: a single Core statement, no ORM object."""
    missing = f"country {country_id} does not exist"
    return await read_one(session, _BY_ID, {"country_id": country_id}, CountryPublic, missing)


async def get_country(
    session: AsyncSession, country_id: int, *, for_update: bool = False
) -> Country:
    """One country as an ORM object, for writes (its row locked with ``for_update``)."""
    country = await session.get(Country, country_id, with_for_update=for_update)
    if country is None:
        raise not_found(f"country {country_id} does not exist")
    return country


async def _flush_unique_name(session: AsyncSession, name: str) -> None:
    with refused_by(COUNTRY_NAME, lambda: conflict(f"a country named {name!r} already exists")):
        await session.flush()


async def create_country(session: AsyncSession, name: str) -> Country:
    country = Country(name=name)
    session.add(country)
    await _flush_unique_name(session, name)
    return country


async def rename_country(session: AsyncSession, country_id: int, name: str) -> Country:
    country = await get_country(session, country_id)
    if country.name != name:
        country.name = name
        await _flush_unique_name(session, name)
    return country


async def delete_country(session: AsyncSession, country_id: int, *, cascade: bool) -> None:
    """Delete a country; its records go too only with ``cascade``, else 409 while it has any.

    The country's row is locked first: a record being added to it meanwhile (which holds a
    share of that lock until its transaction ends) is committed before the delete looks at
    the records, and one added later waits for the delete and then finds no country.
    """
    country = await get_country(session, country_id, for_update=True)
    if cascade:
        await session.execute(delete(Record).where(Record.country_id == country_id))
    elif await session.scalar(select(Record.id).where(Record.country_id == country_id).limit(1)):
        raise conflict(
            f"country {country_id} still has records; delete them first or pass cascade=true"
        )
    await session.delete(country)
    await session.flush()


async def country_name(session: AsyncSession, country_id: int) -> str | None:
    """The name of country ``country_id``; None if there is no such country."""
    return await session.scalar(_NAME_BY_ID, {"country_id": country_id})


async def country_id_for_name(session: AsyncSession, name: str) -> int:
    """The id of the country called ``name``, creating it if new; safe under concurrency."""
    found = await session.scalar(_ID_BY_NAME, {"name": name})
    if found is not None:
        return found
    return (await create_countries(session, [name]))[name]


async def create_countries(session: AsyncSession, names: Iterable[str]) -> dict[str, int]:
    """The ids of countries ``names``, creating each one that is missing, in name order.

    One statement settles every race: on a name another transaction stored meanwhile,
    ``ON CONFLICT DO UPDATE`` (the name set to itself, nothing else touched) returns that
    row's id once it is committed, and inserts anew if it was deleted instead. ``DO NOTHING``
    would return no id, and a second look could find the row gone.
    """
    dialect = session.get_bind().dialect.name
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(_TABLE)
    statement = insert.on_conflict_do_update(
        index_elements=unique_columns(COUNTRY_NAME), set_={"name": insert.excluded.name}
    ).returning(countries.c.name, countries.c.id)
    now = utc_now()
    values = [{"name": name, "created_at": now, "updated_at": now} for name in sorted(set(names))]
    if not values:
        return {}
    return {row.name: row.id for row in await session.execute(statement, values)}
