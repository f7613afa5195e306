"""Records: list, create, read, replace, patch, delete, and bulk writes."""

from __future__ import annotations

from quart import Blueprint, Response
from quart_schema import document_response, validate_querystring, validate_request

from service.db import current_session
from service.errors import APIError
from service.http import sent_etags
from service.listing import ListBody, paginate
from service.models import Record
from service.queries import bulk
from service.queries import records as queries
from service.queries.countries import get_country
from service.queries.sources import get_source
from service.schemas.records import (
    BulkResult,
    BulkWrite,
    RecordCreate,
    RecordList,
    RecordPatch,
    RecordPublic,
    RecordQuery,
)
from service.transactions import retried

blueprint = Blueprint("records", __name__)


def _dialect() -> str:
    return current_session().get_bind().dialect.name


def _etag(record: RecordPublic) -> dict[str, str]:
    return {"ETag": f'"{record.version}"'}


def _not_modified(record: RecordPublic) -> bool:
    """If-None-Match names the record's current version (weak comparison) or is ``*``."""
    etags = sent_etags("If-None-Match")
    return etags is not None and etags.contains_weak(str(record.version))


def _check_if_match(record: Record) -> None:
    """Refuse (412) a write whose If-Match names neither the stored version (strong
    comparison) nor ``*``."""
    etags = sent_etags("If-Match")
    if etags is not None and not etags.contains(str(record.version)):
        raise APIError(
            412, f"record {record.id} is at version {record.version}; re-read it and retry"
        )


async def list_records(
    query: RecordQuery, *, source_id: int | None = None
) -> tuple[ListBody, int, dict[str, str]]:
    """The contract's list of records (shared with the country and source sub-lists)."""
    body, headers = await paginate(
        current_session(),
        queries.list_statement(query, _dialect(), source_id=source_id),
        queries.ORDERS,
        query.order,
        query,
        queries.public_records,
    )
    return body, 200, headers


@blueprint.get("/records")
@validate_querystring(RecordQuery)
@document_response(RecordList)
async def list_all(query_args: RecordQuery) -> tuple[ListBody, int, dict[str, str]]:
    """List records; filter by country, country_id, date range and min_cases."""
    return await list_records(query_args)


@blueprint.get("/countries/<id:country_id>/records")
@validate_querystring(RecordQuery)
@document_response(RecordList)
async def list_for_country(
    country_id: int, query_args: RecordQuery
) -> tuple[ListBody, int, dict[str, str]]:
    """List a country's records (the same as /records?country_id=ID)."""
    await get_country(current_session(), country_id)
    return await list_records(query_args.model_copy(update={"country_id": country_id}))


@blueprint.get("/sources/<id:source_id>/records")
@validate_querystring(RecordQuery)
@document_response(RecordList)
async def list_for_source(
    source_id: int, query_args: RecordQuery
) -> tuple[ListBody, int, dict[str, str]]:
    """List the records a source is linked to."""
    await get_source(current_session(), source_id)
    return await list_records(query_args, source_id=source_id)


@blueprint.post("/records")
@validate_request(RecordCreate)
@document_response(RecordPublic, 201)
@retried
async def create(data: RecordCreate) -> tuple[RecordPublic, int, dict[str, str]]:
    """Create a record; a new country name creates the country."""
    session = current_session()
    record = await queries.create_record(session, data)
    await session.commit()
    return record, 201, {"Location": f"/records/{record.id}", **_etag(record)}


@blueprint.get("/records/<id:record_id>")
@document_response(RecordPublic)
async def get(record_id: int) -> Response | tuple[RecordPublic, int, dict[str, str]]:
    """Read one record; If-None-Match with its current ETag gives 304."""
    record = await queries.read_record(current_session(), record_id)
    if _not_modified(record):
        return Response(status=304, headers=_etag(record))
    return record, 200, _etag(record)


async def _update(
    record_id: int, data: RecordCreate | RecordPatch
) -> tuple[RecordPublic, int, dict[str, str]]:
    session = current_session()
    record = await queries.get_record(session, record_id)
    _check_if_match(record)
    public = queries.to_public(await queries.update_record(session, record, data))
    await session.commit()
    return public, 200, _etag(public)


@blueprint.put("/records/<id:record_id>")
@validate_request(RecordCreate)
@document_response(RecordPublic)
@retried
async def replace(record_id: int, data: RecordCreate) -> tuple[RecordPublic, int, dict[str, str]]:
    """Replace every writable field; If-Match is honoured (412 when stale)."""
    return await _update(record_id, data)


@blueprint.patch("/records/<id:record_id>")
@validate_request(RecordPatch)
@document_response(RecordPublic)
@retried
async def patch(record_id: int, data: RecordPatch) -> tuple[RecordPublic, int, dict[str, str]]:
    """Change some writable fields; If-Match is honoured (412 when stale)."""
    return await _update(record_id, data)


@blueprint.delete("/records/<id:record_id>")
@retried
async def delete(record_id: int) -> Response:
    """Delete a record; If-Match is honoured (412 when stale)."""
    session = current_session()
    record = await queries.get_record(session, record_id)
    _check_if_match(record)
    await queries.delete_record(session, record)
    await session.commit()
    return Response(status=204)


@blueprint.post("/records/bulk")
@validate_request(BulkWrite)
@document_response(BulkResult)
@retried
async def bulk_write(data: BulkWrite) -> BulkResult:
    """Write up to 10,000 records in one transaction: all or nothing."""
    session = current_session()
    rows = [
        bulk.RecordRow(
            country=item.country,
            country_id=item.country_id,
            date=item.date,
            cases=item.cases,
            deaths=item.deaths,
            recoveries=item.recoveries,
            source_ids=tuple(item.source_ids),
        )
        for item in data.records
    ]
    outcome = await bulk.bulk_write(session, rows, data.on_conflict)
    if outcome.conflicts:
        raise bulk.conflict_error(outcome.conflicts)
    await session.commit()
    return BulkResult(created=outcome.created, updated=outcome.updated, skipped=outcome.skipped)
