"""Countries: list, create, read, rename, delete, and their records and summary."""

from __future__ import annotations

from quart import Blueprint, Response
from quart_schema import document_response, validate_querystring, validate_request

from service.db import current_session
from service.listing import ListBody, paginate
from service.queries import countries as queries
from service.schemas.countries import (
    CountryCreate,
    CountryDeleteQuery,
    CountryList,
    CountryPublic,
    CountryQuery,
    CountryUpdate,
)
from service.transactions import retried

blueprint = Blueprint("countries", __name__)


@blueprint.get("/countries")
@validate_querystring(CountryQuery)
@document_response(CountryList)
async def list_countries(query_args: CountryQuery) -> tuple[ListBody, int, dict[str, str]]:
    """List countries, optionally filtered by a case-insensitive substring of the name."""
    body, headers = await paginate(
        current_session(),
        queries.list_statement(query_args.q),
        queries.ORDERS,
        query_args.order,
        query_args,
    )
    return body, 200, headers


@blueprint.post("/countries")
@validate_request(CountryCreate)
@document_response(CountryPublic, 201)
@retried
async def create_country(data: CountryCreate) -> tuple[CountryPublic, int, dict[str, str]]:
    """Create a country; a name already taken is a 409."""
    session = current_session()
    country = await queries.create_country(session, data.name)
    await session.commit()
    return CountryPublic.model_validate(country), 201, {"Location": f"/countries/{country.id}"}


@blueprint.get("/countries/<id:country_id>")
@document_response(CountryPublic)
async def get_country(country_id: int) -> CountryPublic:
    """Read one country."""
    return await queries.read_country(current_session(), country_id)


@blueprint.patch("/countries/<id:country_id>")
@validate_request(CountryUpdate)
@document_response(CountryPublic)
@retried
async def rename_country(country_id: int, data: CountryUpdate) -> CountryPublic:
    """Rename a country; a name already taken is a 409."""
    session = current_session()
    country = await queries.rename_country(session, country_id, data.name)
    await session.commit()
    return CountryPublic.model_validate(country)


@blueprint.delete("/countries/<id:country_id>")
@validate_querystring(CountryDeleteQuery)
@retried
async def delete_country(country_id: int, query_args: CountryDeleteQuery) -> Response:
    """Delete a country: 409 while it has records, unless cascade=true deletes them too."""
    session = current_session()
    await queries.delete_country(session, country_id, cascade=query_args.cascade)
    await session.commit()
    return Response(status=204)
