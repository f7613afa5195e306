"""Sources: the documents behind records (many-to-many)."""

from __future__ import annotations

from quart import Blueprint, Response
from quart_schema import document_response, validate_querystring, validate_request

from service.db import current_session
from service.listing import ListBody, paginate
from service.queries import sources as queries
from service.schemas.sources import (
    SourceCreate,
    SourceList,
    SourcePublic,
    SourceQuery,
    SourceUpdate,
)
from service.transactions import retried

blueprint = Blueprint("sources", __name__)


@blueprint.get("/sources")
@validate_querystring(SourceQuery)
@document_response(SourceList)
async def list_sources(query_args: SourceQuery) -> tuple[ListBody, int, dict[str, str]]:
    """List sources."""
    body, headers = await paginate(
        current_session(),
        queries.list_statement(),
        queries.ORDERS,
        query_args.order,
        query_args,
    )
    return body, 200, headers


@blueprint.post("/sources")
@validate_request(SourceCreate)
@document_response(SourcePublic, 201)
@retried
async def create_source(data: SourceCreate) -> tuple[SourcePublic, int, dict[str, str]]:
    """Create a source."""
    session = current_session()
    source = SourcePublic.model_validate(await queries.create_source(session, data))
    await session.commit()
    return source, 201, {"Location": f"/sources/{source.id}"}


@blueprint.get("/sources/<id:source_id>")
@document_response(SourcePublic)
async def get_source(source_id: int) -> SourcePublic:
    """Read one source."""
    return await queries.read_source(current_session(), source_id)


@blueprint.patch("/sources/<id:source_id>")
@validate_request(SourceUpdate)
@document_response(SourcePublic)
@retried
async def update_source(source_id: int, data: SourceUpdate) -> SourcePublic:
    """Change some fields of a source."""
    session = current_session()
    source = SourcePublic.model_validate(await queries.update_source(session, source_id, data))
    await session.commit()
    return source


@blueprint.delete("/sources/<id:source_id>")
@retried
async def delete_source(source_id: int) -> Response:
    """Delete a source; it is unlinked from its records, which stay."""
    session = current_session()
    await queries.delete_source(session, source_id)
    await session.commit()
    return Response(status=204)
