"""Bulk writes of records: multi-row upserts in one transaction, all or nothing.

Shared by ``POST /records/bulk`` and the CSV loader. A conflict is a (country, date) key that
is stored already or repeated in the batch; ``error`` refuses the batch, ``skip`` keeps what
is stored (and the first of repeats), ``update`` overwrites it (the last of repeats wins).

Nothing is looked up before it is written: a key another transaction stores between a look and
the write would slip through. ``error`` inserts, and the unique constraint refuses a key stored
by anyone, committed before or during the insert; ``skip`` and ``update`` let ``ON CONFLICT``
settle each key, and what the insert returns says which rows it created. Rows are written in
one order, whatever the batch's (countries by name, records by key, links by record and
source), so two batches that share keys queue on them instead of deadlocking.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from sqlalchemy import Table, delete, func, insert, literal_column, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.constraints import RECORD_KEY, unique_columns, violated_constraint
from service.errors import APIError, FieldError, validation_error
from service.models import Country, Record, Source, record_sources
from service.queries.countries import create_countries
from service.queries.records import existing_keys

ConflictMode = Literal["error", "skip", "update"]
Key = tuple[int, dt.date]
RECORDS: Table = Record.__table__  # type: ignore[assignment]


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
    ids.update(await create_countries(session, wanted - ids.keys()))
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


async def _named_conflicts(session: AsyncSession, keys: Sequence[Key]) -> list[int]:
    """The indexes of the items of a refused batch whose key is stored or repeated: looked up
    once the batch is refused, to name them, never to decide."""
    return _conflicting_indexes(keys, await existing_keys(session, keys))


def _chosen(keys: Sequence[Key], mode: ConflictMode) -> dict[Key, int]:
    """Which item is written for each key, in key order: the first of repeats (skip), else the
    last (update; error refuses repeats before it writes)."""
    chosen: dict[Key, int] = {}
    for index, key in enumerate(keys):
        if mode == "skip" and key in chosen:
            continue
        chosen[key] = index
    return dict(sorted(chosen.items()))


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


class Written(NamedTuple):
    """A record the batch wrote: its id, and whether it was created or overwritten."""

    id: int
    created: bool


async def _write_records(
    session: AsyncSession, values: list[dict[str, Any]], mode: ConflictMode
) -> dict[Key, Written]:
    """Insert (``skip``: unless stored; ``update``: or overwrite) rows of distinct keys, in
    the order given; returns what was written, by key. ``error`` raises IntegrityError."""
    if not values:
        return {}
    # What every row shares is SQL, not a parameter bound (and converted) once per row.
    now = _database_clock(session)
    statement = _insert(session, RECORDS).values(
        version=literal_column("1"), created_at=now, updated_at=now
    )
    key_columns = unique_columns(RECORD_KEY)
    if mode == "update":
        excluded = statement.excluded
        statement = statement.on_conflict_do_update(
            index_elements=key_columns,
            set_={
                "cases": excluded.cases,
                "deaths": excluded.deaths,
                "recoveries": excluded.recoveries,
                "updated_at": excluded.updated_at,
                "version": RECORDS.c.version + 1,
            },
        )
    elif mode == "skip":
        statement = statement.on_conflict_do_nothing(index_elements=key_columns)
    # A created row has version 1, an overwritten one more: the statement itself says which,
    # even when a concurrent transaction stored the key a moment before.
    returning = statement.returning(
        RECORDS.c.id, RECORDS.c.country_id, RECORDS.c.date, RECORDS.c.version
    )
    written = await session.execute(returning, values)
    return {(row.country_id, row.date): Written(row.id, row.version == 1) for row in written}


async def _link_sources(
    session: AsyncSession,
    rows: Sequence[RecordRow],
    chosen: dict[Key, int],
    written: dict[Key, Written],
) -> None:
    """Give each written record exactly the sources of its item (overwritten ones lose theirs)."""
    overwritten = sorted(record.id for record in written.values() if not record.created)
    for chunk in _chunks(overwritten, 500):
        await session.execute(delete(record_sources).where(record_sources.c.record_id.in_(chunk)))
    links = sorted(
        (written[key].id, source_id)
        for key, index in chosen.items()
        if key in written
        for source_id in set(rows[index].source_ids)
    )
    if links:
        await session.execute(
            insert(record_sources),
            [{"record_id": record_id, "source_id": source_id} for record_id, source_id in links],
        )


async def _insert_all_or_name_conflicts(
    session: AsyncSession, keys: Sequence[Key], values: list[dict[str, Any]]
) -> dict[Key, Written] | list[int]:
    """``error`` mode's insert, in a savepoint; on a key stored by anyone (the constraint
    says so, possibly after waiting for a concurrent insert to commit), the indexes of the
    items whose key is stored, and nothing written."""
    try:
        async with session.begin_nested():
            return await _write_records(session, values, "error")
    except IntegrityError as error:
        if violated_constraint(error) != RECORD_KEY:
            raise
        conflicts = await _named_conflicts(session, keys)
        if not conflicts:  # the stored key was deleted again since: nothing left to name
            raise
        return conflicts


async def bulk_write(
    session: AsyncSession, rows: Sequence[RecordRow], mode: ConflictMode
) -> BulkOutcome:
    """Write ``rows`` in the session's transaction; the caller commits.

    In ``error`` mode a batch with conflicts writes nothing and returns their indexes.
    """
    country_ids = await _resolve_country_ids(session, rows)
    await _check_sources(session, rows)
    keys: list[Key] = [(cid, row.date) for cid, row in zip(country_ids, rows, strict=True)]
    chosen = _chosen(keys, mode)
    values = [_values(rows[index], key[0]) for key, index in chosen.items()]
    if mode != "error":
        written = await _write_records(session, values, mode)
    elif len(chosen) < len(keys):  # keys repeated in the batch: refused before any write
        return BulkOutcome(conflicts=await _named_conflicts(session, keys))
    else:
        inserted = await _insert_all_or_name_conflicts(session, keys, values)
        if isinstance(inserted, list):
            return BulkOutcome(conflicts=inserted)
        written = inserted
    await _link_sources(session, rows, chosen, written)
    created = sum(1 for record in written.values() if record.created)
    return BulkOutcome(
        created=created, updated=len(written) - created, skipped=len(rows) - len(written)
    )


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
