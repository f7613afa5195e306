"""The service's tables in SQLAlchemy Core, and the statements the SQLAlchemy peers run.

The reads are the service's own SQL (``service.queries.records.public_columns``): one SELECT
joining the country, with the record's source ids aggregated in a subquery. Statements are
built once, at import, as the service builds them once per dialect.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    bindparam,
    func,
    insert,
    select,
    text,
    tuple_,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert

metadata = MetaData()
countries = Table(
    "countries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100)),
    Column("created_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True)),
)
records = Table(
    "records",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("country_id", ForeignKey("countries.id")),
    Column("date", Date),
    Column("cases", Integer),
    Column("deaths", Integer),
    Column("recoveries", Integer),
    Column("version", Integer),
    Column("created_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True)),
)
record_sources = Table(
    "record_sources",
    metadata,
    Column("record_id", ForeignKey("records.id"), primary_key=True),
    Column("source_id", Integer, primary_key=True),
)

_source_ids = type_coerce(
    select(func.coalesce(func.json_agg(record_sources.c.source_id), text("'[]'::json")))
    .where(record_sources.c.record_id == records.c.id)
    .scalar_subquery(),
    JSON,
).label("source_ids")

PUBLIC: Select[Any] = select(
    records.c.id,
    records.c.country_id,
    countries.c.name.label("country"),
    records.c.date,
    records.c.cases,
    records.c.deaths,
    records.c.recoveries,
    _source_ids,
    records.c.version,
    records.c.created_at,
    records.c.updated_at,
).join_from(records, countries, countries.c.id == records.c.country_id)

RECORD_BY_ID = PUBLIC.where(records.c.id == bindparam("record_id"))

_BY_COUNTRY = PUBLIC.where(
    records.c.country_id.in_(select(countries.c.id).where(countries.c.name == bindparam("name")))
)
# A page of a country's records by date (then id): ``limit`` is the page size plus one.
RECORDS_BY_COUNTRY = _BY_COUNTRY.order_by(records.c.date, records.c.id).limit(bindparam("limit"))
RECORDS_BY_COUNTRY_AFTER = (
    _BY_COUNTRY.where(
        tuple_(records.c.date, records.c.id)
        > tuple_(bindparam("after_date"), bindparam("after_id"))
    )
    .order_by(records.c.date, records.c.id)
    .limit(bindparam("limit"))
)

COUNTRY_ID = select(countries.c.id).where(countries.c.name == bindparam("name"))
# The service's way to create a country by name safely under concurrency.
INSERT_COUNTRY = (
    pg_insert(countries)
    .values(name=bindparam("name"), created_at=bindparam("now"), updated_at=bindparam("now"))
    .on_conflict_do_nothing(index_elements=[countries.c.name])
    .returning(countries.c.id)
)
INSERT_RECORD = (
    insert(records)
    .values(
        country_id=bindparam("country_id"),
        date=bindparam("date"),
        cases=bindparam("cases"),
        deaths=bindparam("deaths"),
        recoveries=bindparam("recoveries"),
        version=1,
        created_at=bindparam("now"),
        updated_at=bindparam("now"),
    )
    .returning(*records.c)
)
