"""Read paths: rows as dicts, pages served without models, timestamps as aware UTC."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import RootModel
from quart import Quart
from quart.typing import TestClientProtocol as Client
from sqlalchemy import event, select, text
from sqlalchemy.orm import Session

from service.db import Database, get_database
from service.models import Country
from service.pagination import Listing
from service.queries import countries, records, sources
from service.queries.records import public_columns
from service.queries.rows import as_dict, as_dicts
from service.schemas.countries import CountryList
from service.schemas.records import RecordList, RecordPublic, RecordQuery
from service.schemas.sources import SourceList
from service.settings import load_settings
from tests.factories import create_country, create_record, create_source


def _reads(dialect: str, record: dict[str, Any], source_id: int) -> list[Listing]:
    """The statement behind GET /records/{id} and those behind every list, each with
    parameters that select the record made by the test (or its country, or its source)."""
    filters = RecordQuery(country=record["country"], date_from="2003-01-01", min_cases=0)
    return [
        Listing(records._record_by_id(dialect), {"record_id": record["id"]}),
        Listing(public_columns(dialect), {}),
        records.list_statement(filters, dialect, source_id=source_id),
        records.list_statement(RecordQuery(country_id=record["country_id"]), dialect),
        countries.list_statement(None),
        countries.list_statement(record["country"].lower()),
        sources.list_statement(),
    ]


async def test_rows_become_the_dicts_sqlalchemy_would_give(app: Quart, client: Client) -> None:
    source = await create_source(client)
    record = await create_record(client, country="Rowland", source_ids=[source["id"]])
    db = get_database(app)
    async with db.session_scope(writes=False) as session:
        for read in _reads(session.get_bind().dialect.name, record, source["id"]):
            rows = (await session.execute(read.statement, read.params)).all()
            assert rows, read
            assert as_dicts(read.statement, rows) == [row._asdict() for row in rows]
            assert as_dict(read.statement, rows[0]) == rows[0]._asdict()


async def test_pages_are_byte_for_byte_what_their_schemas_would_serve(client: Client) -> None:
    """A page's items are encoded from the rows, not from models (service/listing.py): the
    bytes must be those the route's declared schema makes of the same page."""
    plain = await create_source(client, url=None)
    dated = await create_source(
        client, url="https://www.who.int/csr/sars", published_on="2003-04-02"
    )
    country = await create_country(client)
    # Linked in descending order: the aggregate may give them in any order, the schema sorts.
    record = await create_record(
        client, country_id=country["id"], source_ids=[dated["id"], plain["id"]]
    )
    await create_record(client, country_id=country["id"], date="2003-04-02")
    schemas: dict[str, type[RootModel[Any]]] = {
        "/records": RecordList,
        f"/countries/{country['id']}/records": RecordList,
        f"/sources/{plain['id']}/records": RecordList,
        "/countries": CountryList,
        "/sources": SourceList,
    }
    for path, schema in schemas.items():
        for query in ("limit=3", "page=1&per_page=3"):
            response = await client.get(f"{path}?{query}")
            assert response.status_code == 200, path
            raw = await response.get_data(as_text=True)
            assert schema.model_validate_json(raw).model_dump_json() == raw, f"{path}?{query}"
            assert (await response.get_json())["items"], f"{path}?{query}"
    listed = await client.get(f"/countries/{country['id']}/records?order=date")
    first = (await listed.get_json())["items"][0]
    assert first["id"] == record["id"]
    assert first["source_ids"] == sorted([plain["id"], dated["id"]])


def test_a_pages_source_ids_are_sorted_as_the_schema_sorts_them() -> None:
    """The database's aggregate gives them in no promised order."""
    statement = public_columns("postgresql")
    now = dt.datetime(2003, 4, 1, tzinfo=dt.UTC)
    row = (7, 1, "Sortland", dt.date(2003, 4, 1), 3, 0, 0, [9, 2, 5], 1, now, now)
    (item,) = records.public_records(statement, [row])  # type: ignore[list-item]
    assert item["source_ids"] == [2, 5, 9]
    assert item == RecordPublic.model_validate(item).model_dump()


async def test_a_row_of_another_statement_is_refused(app: Quart) -> None:
    db = get_database(app)
    async with db.session_scope(writes=False) as session:
        row = (await session.execute(select(text("1 AS one")))).one()
        dialect = session.get_bind().dialect.name
    with pytest.raises(ValueError, match="zip"):
        as_dict(records._record_by_id(dialect), row)


@pytest.mark.parametrize("time_zone", ["UTC", "Pacific/Auckland", "America/Los_Angeles"])
async def test_timestamps_read_back_as_aware_utc(database_url: str, time_zone: str) -> None:
    """Whatever the database session's time zone; PostgreSQL's driver already answers in
    UTC, so the service skips its own conversion there (service.models.UTCDateTime)."""
    written = dt.datetime(
        2003, 3, 17, 12, 30, 15, 123456, tzinfo=dt.timezone(dt.timedelta(hours=5))
    )
    async with Database(load_settings({"DATABASE_URL": database_url})) as db:
        async with db.session_scope(commit=True) as session:
            session.add(Country(name="Timed", created_at=written, updated_at=written))
        async with db.session_scope() as session:
            if session.get_bind().dialect.name == "postgresql":
                await session.execute(text(f"SET TIME ZONE '{time_zone}'"))
            core = await session.scalar(select(Country.__table__.c.created_at))
            orm = await session.scalar(select(Country))
            assert orm is not None
            for value in (core, orm.created_at, orm.updated_at):
                assert value == written
                assert value.tzinfo is dt.UTC


async def test_reading_one_resource_loads_no_orm_object(client: Client) -> None:
    # Every resource's GET by id follows the same pattern (queries.rows.read_one): a Core
    # statement of the public schema's columns, validated from a dict.
    record = await create_record(client, source_ids=[(await create_source(client))["id"]])
    loaded: list[object] = []

    def count(_session: Session, instance: object) -> None:
        loaded.append(instance)

    event.listen(Session, "loaded_as_persistent", count)
    try:
        for path in (
            f"/countries/{record['country_id']}",
            f"/sources/{record['source_ids'][0]}",
            f"/records/{record['id']}",
        ):
            assert (await client.get(path)).status_code == 200, path
    finally:
        event.remove(Session, "loaded_as_persistent", count)
    assert loaded == []
