"""Record queries: reads with their country and sources loaded up front, writes, bulk writes."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    Date,
    Integer,
    Row,
    bindparam,
    column,
    func,
    insert,
    select,
    text,
    type_coerce,
    values,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload, selectinload

from service.constraints import RECORD_KEY, refused_by
from service.errors import APIError, FieldError, conflict, not_found, validation_error
from service.models import Country, Record, Source, record_sources, utc_now
from service.pagination import AnySelect, Listing, SortKey, sort_keys
from service.queries.countries import country_id_for_name, country_name
from service.queries.rows import as_dicts, read_one
from service.schemas.records import RecordCreate, RecordFilters, RecordPatch, RecordPublic

# Read paths select table columns, not mapped attributes: the session then runs them as plain
# Core statements and skips the ORM's compile and loading steps (no objects are wanted).
records = Record.__table__
countries = Country.__table__
_INSERT_RECORD = insert(records).returning(records.c.id)  # type: ignore[arg-type]
ORDERS: dict[str, SortKey] = sort_keys(records.c.id, date=records.c.date, cases=records.c.cases)
WRITABLE_FIGURES = ("date", "cases", "deaths", "recoveries")


def _with_relations(statement: AnySelect) -> AnySelect:
    return statement.options(
        joinedload(Record.country), selectinload(Record.sources).load_only(Source.id)
    )


# Built once, with bound values: a statement built per call costs more than running it.
_RECORD_WITH_RELATIONS = _with_relations(select(Record).where(Record.id == bindparam("record_id")))
_SOURCES_BY_ID = select(Source).where(Source.id.in_(bindparam("source_ids", expanding=True)))


def _source_ids(dialect: str) -> Any:
    """The record's source ids as one JSON array column (no second query per page)."""
    linked = record_sources.c.source_id
    aggregate: Any = (
        func.coalesce(func.json_agg(linked), text("'[]'::json"))
        if dialect == "postgresql"
        else func.json_group_array(linked)
    )
    subquery = select(aggregate).where(record_sources.c.record_id == records.c.id)
    return type_coerce(subquery.scalar_subquery(), JSON).label("source_ids")


@functools.cache
def public_columns(dialect: str) -> AnySelect:
    """Every field of RecordPublic as plain columns: read paths hydrate no ORM objects.

    Built once per dialect: constructing a statement costs more than running a cached one.
    """
    return select(
        records.c.id,
        records.c.country_id,
        countries.c.name.label("country"),
        records.c.date,
        records.c.cases,
        records.c.deaths,
        records.c.recoveries,
        _source_ids(dialect),
        records.c.version,
        records.c.created_at,
        records.c.updated_at,
    ).join(countries, countries.c.id == records.c.country_id)


_FILTERS: dict[str, Callable[[], ColumnElement[bool]]] = {
    "country": lambda: records.c.country_id.in_(
        select(countries.c.id).where(countries.c.name == bindparam("country"))
    ),
    "country_id": lambda: records.c.country_id == bindparam("country_id"),
    "date_from": lambda: records.c.date >= bindparam("date_from"),
    "date_to": lambda: records.c.date <= bindparam("date_to"),
    "min_cases": lambda: records.c.cases >= bindparam("min_cases"),
    "source_id": lambda: records.c.id.in_(
        select(record_sources.c.record_id).where(
            record_sources.c.source_id == bindparam("source_id")
        )
    ),
}


@functools.cache
def _filtered(dialect: str, filters: tuple[str, ...]) -> AnySelect:
    statement = public_columns(dialect)
    for name in filters:
        statement = statement.where(_FILTERS[name]())
    return statement


def list_statement(
    filters: RecordFilters, dialect: str, *, source_id: int | None = None
) -> Listing:
    """Records matching the contract's filters, as RecordPublic rows."""
    given = {**filters.model_dump(include=set(_FILTERS)), "source_id": source_id}
    values = {name: value for name, value in given.items() if value is not None}
    return Listing(_filtered(dialect, tuple(values)), values)


def to_public(record: Record) -> RecordPublic:
    return RecordPublic(
        id=record.id,
        country_id=record.country_id,
        country=record.country.name,
        date=record.date,
        cases=record.cases,
        deaths=record.deaths,
        recoveries=record.recoveries,
        source_ids=sorted(source.id for source in record.sources),
        version=record.version,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def public_records(statement: AnySelect, rows: Sequence[Row[Any]]) -> list[dict[str, Any]]:
    """Rows of ``public_columns`` as RecordPublic's fields, without building models (see
    service/listing.py). The source ids come from an unordered aggregate; RecordPublic sorts
    them, and so does this."""
    items = as_dicts(statement, rows)
    for item in items:
        item["source_ids"].sort()
    return items


@functools.cache
def _record_by_id(dialect: str) -> AnySelect:
    return public_columns(dialect).where(records.c.id == bindparam("record_id"))


async def read_record(session: AsyncSession, record_id: int) -> RecordPublic:
    """One record as served: a single statement, no ORM object."""
    statement = _record_by_id(session.get_bind().dialect.name)
    params = {"record_id": record_id}
    return await read_one(
        session, statement, params, RecordPublic, f"record {record_id} does not exist"
    )


async def get_record(session: AsyncSession, record_id: int) -> Record:
    """One record as an ORM object with its country and sources, for writes."""
    record: Record | None = await session.scalar(_RECORD_WITH_RELATIONS, {"record_id": record_id})
    if record is None:
        raise not_found(f"record {record_id} does not exist")
    return record


async def _country(session: AsyncSession, name: str | None, country_id: int | None) -> Country:
    if name is not None:
        country_id = await country_id_for_name(session, name)
    assert country_id is not None
    country = await session.get(Country, country_id)
    if country is None:
        raise validation_error([FieldError("country_id", f"country {country_id} does not exist")])
    return country


async def _sources(session: AsyncSession, source_ids: Sequence[int]) -> list[Source]:
    wanted = list(dict.fromkeys(source_ids))
    if not wanted:
        return []
    found = {s.id: s for s in await session.scalars(_SOURCES_BY_ID, {"source_ids": wanted})}
    missing = [
        FieldError(f"source_ids.{index}", f"source {source_id} does not exist")
        for index, source_id in enumerate(source_ids)
        if source_id not in found
    ]
    if missing:
        raise validation_error(missing)
    return [found[source_id] for source_id in wanted]


async def _country_key(
    session: AsyncSession, name: str | None, country_id: int | None
) -> tuple[int, str]:
    """(id, name) of the record's country, created when a new name is given."""
    if name is not None:
        return await country_id_for_name(session, name), name
    assert country_id is not None
    found = await country_name(session, country_id)
    if found is None:
        raise validation_error([FieldError("country_id", f"country {country_id} does not exist")])
    return country_id, found


def _taken_key(country: str, date: Any) -> APIError:
    return conflict(f"{country} already has a record for {date}")


async def create_record(session: AsyncSession, data: RecordCreate) -> RecordPublic:
    """Insert a record with one statement (no unit of work), returning it as served."""
    country_id, country = await _country_key(session, data.country, data.country_id)
    source_ids = sorted(source.id for source in await _sources(session, data.source_ids))
    now = utc_now()
    values = {
        "country_id": country_id,
        "date": data.date,
        "cases": data.cases,
        "deaths": data.deaths,
        "recoveries": data.recoveries,
        "version": 1,
        "created_at": now,
        "updated_at": now,
    }
    with refused_by(RECORD_KEY, lambda: _taken_key(country, data.date)):
        record_id = (await session.execute(_INSERT_RECORD, values)).scalar_one()
    if source_ids:
        links = [{"record_id": record_id, "source_id": source_id} for source_id in source_ids]
        await session.execute(insert(record_sources), links)
    return RecordPublic(id=record_id, country=country, source_ids=source_ids, **values)


async def update_record(
    session: AsyncSession, record: Record, data: RecordCreate | RecordPatch
) -> Record:
    """Apply the fields ``data`` sets (all of them for a PUT); stale versions raise 412."""
    fields = data.model_dump(exclude_unset=isinstance(data, RecordPatch))
    if fields.get("country") is not None or fields.get("country_id") is not None:
        record.country = await _country(session, fields.get("country"), fields.get("country_id"))
    for name in WRITABLE_FIGURES:
        if fields.get(name) is not None:
            setattr(record, name, fields[name])
    if fields.get("source_ids") is not None:
        record.sources = await _sources(session, fields["source_ids"])
    country, date = record.country.name, record.date  # a failed flush expires the record
    with refused_by(RECORD_KEY, lambda: _taken_key(country, date)):
        await session.flush()
    return record


async def delete_record(session: AsyncSession, record: Record) -> None:
    await session.delete(record)
    await session.flush()


async def existing_keys(
    session: AsyncSession, keys: Sequence[tuple[int, Any]]
) -> dict[tuple[int, Any], int]:
    """Which (country_id, date) keys are stored already, with their record ids."""
    found: dict[tuple[int, Any], int] = {}
    unique = list(dict.fromkeys(keys))
    for start in range(0, len(unique), 2000):
        # A join against a VALUES list uses the (country_id, date) index on both backends;
        # "(country_id, date) IN (...)" makes SQLite scan the whole index for every lookup.
        wanted = (
            values(column("country_id", Integer), column("date", Date), name="wanted")
            .data(unique[start : start + 2000])
            .cte()
        )
        rows = await session.execute(
            select(Record.country_id, Record.date, Record.id).join(
                wanted,
                (Record.country_id == wanted.c.country_id) & (Record.date == wanted.c.date),
            )
        )
        found.update({(row.country_id, row.date): row.id for row in rows})
    return found
