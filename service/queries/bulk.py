"""Bulk writes of records: multi-row upserts in one transaction, all or nothing.

Shared by ``POST /records/bulk`` and the CSV loader. A conflict is a (country, date) key that
is stored already or repeated in the batch; ``error`` refuses the batch, ``skip`` keeps what
is stored (and the first of repeats), ``update`` overwrites it (the last of repeats wins).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from sqlalchemy import Table, delete, func, insert, literal_column, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from service.errors import APIError, FieldError, validation_error
from service.models import Country, Record, Source, record_sources, utc_now
from service.queries.records import existing_keys

ConflictMode = Literal["error", "skip", "update"]
Key = tuple[int, dt.date]
RECORDS: Table = Record.__table__  # type: ignore[assignment]
COUNTRIES: Table = Country.__table__  # type: ignore[assignment]


class RecordRow(NamedTuple):
    """One item of a batch: its country by name or by id, its figures and sources.

    A named tuple: loads build millions of these, and a tuple is the cheapest to build.
    """

    date: dt.date
    cases: int
    deaths: int = 0
    recoveries: int = 0
    country: str | None = None
    country_id: int | None = None
    source_ids: tuple[int, ...] = ()


@dataclass
class BulkOutcome:
    created: int = 0
    updated: int = 0
    skipped: int = 0
    conflicts: list[int] = field(default_factory=list)


def _insert(session: AsyncSession, table: Table) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


async def country_ids_by_name(session: AsyncSession, names: Iterable[str]) -> dict[str, int]:
    """Ids of the named countries, creating the new ones (safe against concurrent creators)."""
    wanted = set(names)
    if not wanted:
        return {}
    ids: dict[str, int] = {}
    for chunk in _chunks(sorted(wanted), 500):
        rows = await session.execute(
            select(Country.name, Country.id).where(Country.name.in_(chunk))
        )
        ids.update({row.name: row.id for row in rows})
    missing = sorted(wanted - ids.keys())
    if missing:
        now = utc_now()
        statement = _insert(session, COUNTRIES).on_conflict_do_nothing(index_elements=["name"])
        await session.execute(
            statement, [{"name": name, "created_at": now, "updated_at": now} for name in missing]
        )
        for chunk in _chunks(missing, 500):
            rows = await session.execute(
                select(Country.name, Country.id).where(Country.name.in_(chunk))
            )
            ids.update({row.name: row.id for row in rows})
    return ids


async def _resolve_country_ids(session: AsyncSession, rows: Sequence[RecordRow]) -> list[int]:
    by_name = await country_ids_by_name(session, (r.country for r in rows if r.country))
    given = {r.country_id for r in rows if r.country_id is not None}
    known: set[int] = set()
    for chunk in _chunks(sorted(given), 500):
        known.update(await session.scalars(select(Country.id).where(Country.id.in_(chunk))))
    errors = [
        FieldError(f"records.{i}.country_id", f"country {r.country_id} does not exist")
        for i, r in enumerate(rows)
        if r.country_id is not None and r.country_id not in known
    ]
    if errors:
        raise validation_error(errors)
    return [by_name[r.country] if r.country else r.country_id for r in rows]  # type: ignore[misc]


async def _check_sources(session: AsyncSession, rows: Sequence[RecordRow]) -> None:
    wanted = {source_id for row in rows for source_id in row.source_ids}
    known: set[int] = set()
    for chunk in _chunks(sorted(wanted), 500):
        known.update(await session.scalars(select(Source.id).where(Source.id.in_(chunk))))
    errors = [
        FieldError(f"records.{i}.source_ids.{j}", f"source {source_id} does not exist")
        for i, row in enumerate(rows)
        for j, source_id in enumerate(row.source_ids)
        if source_id not in known
    ]
    if errors:
        raise validation_error(errors)


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _conflicting_indexes(keys: Sequence[Key], stored: dict[Key, int]) -> list[int]:
    seen: dict[Key, int] = {}
    for key in keys:
        seen[key] = seen.get(key, 0) + 1
    return [i for i, key in enumerate(keys) if key in stored or seen[key] > 1]


def _chosen(keys: Sequence[Key], mode: ConflictMode, stored: dict[Key, int]) -> dict[Key, int]:
    """Which item index is written for each key: first of repeats (skip), last (update)."""
    chosen: dict[Key, int] = {}
    for index, key in enumerate(keys):
        if mode == "skip" and (key in stored or key in chosen):
            continue
        chosen[key] = index
    return chosen


def _database_clock(session: AsyncSession) -> Any:
    """The current UTC time as the database states it (PostgreSQL: the transaction's start)."""
    if session.get_bind().dialect.name == "postgresql":
        return func.now()
    return func.strftime("%Y-%m-%d %H:%M:%f", "now")


def _values(row: RecordRow, country_id: int) -> dict[str, Any]:
    return {
        "country_id": country_id,
        "date": row.date,
        "cases": row.cases,
        "deaths": row.deaths,
        "recoveries": row.recoveries,
    }


async def _upsert(
    session: AsyncSession, values: list[dict[str, Any]], mode: ConflictMode
) -> dict[Key, int]:
    """Insert (or with ``update`` overwrite) the rows; returns the ids of the rows written."""
    if not values:
        return {}
    # What every row shares is SQL, not a parameter bound (and converted) once per row.
    now = _database_clock(session)
    statement = _insert(session, RECORDS).values(
        version=literal_column("1"), created_at=now, updated_at=now
    )
    if mode == "update":
        excluded = statement.excluded
        statement = statement.on_conflict_do_update(
            index_elements=["country_id", "date"],
            set_={
                "cases": excluded.cases,
                "deaths": excluded.deaths,
                "recoveries": excluded.recoveries,
                "updated_at": excluded.updated_at,
                "version": RECORDS.c.version + 1,
            },
        )
    else:
        statement = statement.on_conflict_do_nothing(index_elements=["country_id", "date"])
    returning = statement.returning(RECORDS.c.id, RECORDS.c.country_id, RECORDS.c.date)
    written = await session.execute(returning, values)
    return {(row.country_id, row.date): row.id for row in written}


async def _link_sources(
    session: AsyncSession,
    rows: Sequence[RecordRow],
    chosen: dict[Key, int],
    ids: dict[Key, int],
    stored: dict[Key, int],
) -> None:
    """Give each written record exactly the sources of its item (overwritten ones lose theirs)."""
    overwritten = [record_id for key, record_id in ids.items() if key in stored]
    for chunk in _chunks(overwritten, 500):
        await session.execute(delete(record_sources).where(record_sources.c.record_id.in_(chunk)))
    links = [
        {"record_id": ids[key], "source_id": source_id}
        for key, index in chosen.items()
        if key in ids
        for source_id in dict.fromkeys(rows[index].source_ids)
    ]
    if links:
        await session.execute(insert(record_sources), links)


async def bulk_write(
    session: AsyncSession, rows: Sequence[RecordRow], mode: ConflictMode
) -> BulkOutcome:
    """Write ``rows`` in the session's transaction; the caller commits.

    In ``error`` mode a batch with conflicts writes nothing and returns their indexes.
    """
    country_ids = await _resolve_country_ids(session, rows)
    await _check_sources(session, rows)
    keys: list[Key] = [(cid, row.date) for cid, row in zip(country_ids, rows, strict=True)]
    # skip needs no lookup: ON CONFLICT DO NOTHING keeps what is stored, and tells what it wrote.
    stored = {} if mode == "skip" else await existing_keys(session, keys)
    if mode == "error":
        conflicts = _conflicting_indexes(keys, stored)
        if conflicts:
            return BulkOutcome(conflicts=conflicts)
    chosen = _chosen(keys, mode, stored)
    values = [_values(rows[index], key[0]) for key, index in chosen.items()]
    ids = await _upsert(session, values, mode)
    await _link_sources(session, rows, chosen, ids, stored)
    updated = sum(1 for key in ids if key in stored)
    created = len(ids) - updated
    return BulkOutcome(created=created, updated=updated, skipped=len(rows) - len(ids))


def conflict_error(conflicts: Sequence[int]) -> APIError:
    """409 naming the items whose (country, date) is stored already or repeated."""
    shown = ", ".join(str(i) for i in conflicts[:20]) + (" ..." if len(conflicts) > 20 else "")
    return APIError(
        409,
        f"{len(conflicts)} item(s) conflict with stored records or with each other "
        f"(indexes {shown}); nothing was written. Use on_conflict=skip or update.",
        [
            FieldError(f"records.{i}", "(country, date) is stored already or repeated")
            for i in conflicts
        ],
    )
