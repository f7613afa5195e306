"""Peer: FastAPI + SQLAlchemy asyncio (asyncpg), served by uvicorn.

What a user would pick instead, written the way FastAPI's docs do it: an ``AsyncSession`` per
request through ``Depends``, pydantic models for the body and the response, ``HTTPBearer``.
Only the benchmark's three endpoints::

    uvicorn --loop uvloop --http httptools --no-access-log bench.peers.fastapi_app:app
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from bench.peers import tables
from bench.peers.common import (
    DEFAULT_LIMIT,
    MAX_COUNT,
    MAX_LIMIT,
    POOL_SIZE,
    POOL_TIMEOUT,
    RequestError,
    authorized,
    make_cursor,
    parse_cursor,
    problem,
    url_with_driver,
    utc_now,
)

engine = create_async_engine(
    url_with_driver("asyncpg"), pool_size=POOL_SIZE, max_overflow=0, pool_timeout=POOL_TIMEOUT
)
Session = async_sessionmaker(engine, expire_on_commit=False)


async def session() -> AsyncIterator[AsyncSession]:
    async with Session() as db:
        yield db


DB = Annotated[AsyncSession, Depends(session)]
bearer = HTTPBearer(auto_error=False)
Count = Annotated[int, Field(ge=0, le=MAX_COUNT, strict=True)]


def token(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    header = f"{credentials.scheme} {credentials.credentials}" if credentials else None
    if not authorized(header):
        raise RequestError(401, "writes need 'Authorization: Bearer <token>' with a valid token")


class RecordOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    country_id: int
    country: str
    date: dt.date
    cases: int
    deaths: int
    recoveries: int
    source_ids: list[int]
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime

    @field_validator("source_ids")
    @classmethod
    def _ascending(cls, value: list[int]) -> list[int]:
        return sorted(value)


class RecordPage(BaseModel):
    items: list[RecordOut]
    next_cursor: str | None


class RecordIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    country: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    date: dt.date
    cases: Count
    deaths: Count = 0
    recoveries: Count = 0


app = FastAPI()


@app.exception_handler(RequestError)
async def bad_request(_request: Request, error: RequestError) -> JSONResponse:
    return JSONResponse(
        problem(error.status, error.detail),
        error.status,
        media_type="application/problem+json",
    )


@app.get("/records/{record_id}", response_model=RecordOut)
async def get_record(record_id: int, db: DB) -> Any:
    row = (await db.execute(tables.RECORD_BY_ID, {"record_id": record_id})).first()
    if row is None:
        raise RequestError(404, f"record {record_id} does not exist")
    return row


@app.get("/records", response_model=RecordPage)
async def list_records(
    db: DB,
    country: str,
    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> Any:
    params: dict[str, Any] = {"name": country, "limit": limit + 1}
    statement = tables.RECORDS_BY_COUNTRY
    if cursor:
        params["after_date"], params["after_id"] = parse_cursor(cursor)
        statement = tables.RECORDS_BY_COUNTRY_AFTER
    rows = (await db.execute(statement, params)).all()
    next_cursor = make_cursor(rows[limit - 1]._mapping) if len(rows) > limit else None
    return {"items": rows[:limit], "next_cursor": next_cursor}


@app.post("/records", response_model=RecordOut, status_code=201, dependencies=[Depends(token)])
async def create_record(body: RecordIn, db: DB, response: Response) -> Any:
    fields: dict[str, Any] = {**body.model_dump(), "name": body.country, "now": utc_now()}
    country_id = await db.scalar(tables.COUNTRY_ID, fields)
    if country_id is None:
        country_id = await db.scalar(tables.INSERT_COUNTRY, fields) or await db.scalar(
            tables.COUNTRY_ID, fields
        )
    try:
        row = await db.execute(tables.INSERT_RECORD, {**fields, "country_id": country_id})
        created = dict(row.mappings().one())
        await db.commit()
    except IntegrityError:
        await db.rollback()
        detail = f"{body.country} already has a record for {body.date}"
        raise RequestError(409, detail) from None
    response.headers["Location"] = f"/records/{created['id']}"
    return {**created, "country": body.country, "source_ids": []}
