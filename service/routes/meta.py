"""The service's own routes: the index, readiness and the Prometheus metrics."""

from __future__ import annotations

import asyncio
import functools
import logging
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from pydantic import BaseModel, Field
from quart import Blueprint, Response, current_app
from quart_schema import document_response
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from service import __version__, metrics
from service.db import current_session, get_database
from service.errors import unavailable
from service.schemas.common import Problem
from service.settings import Settings

blueprint = Blueprint("meta", __name__)
logger = logging.getLogger(__name__)

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "alembic.ini"
VERSION_TABLE = "alembic_version"
LINKS = {
    "countries": "/countries",
    "records": "/records",
    "sources": "/sources",
    "stats": "/stats",
    "docs": "/docs",
    "openapi": "/openapi.json",
    "health": "/health",
    "ready": "/ready",
    "metrics": "/metrics",
}


class ServiceInfo(BaseModel):
    """What this service is, and where its resources live."""

    name: str
    version: str
    links: dict[str, str]


class ReplicaHealth(BaseModel):
    """What the last check of one read replica found."""

    name: str = Field(description="host:port")
    healthy: bool = Field(description="whether it takes reads")
    lag_bytes: int | None = Field(description="WAL bytes behind the primary; null: unknown")
    lag_seconds: float | None = Field(description="how long it has been behind; null: unknown")
    error: str | None = Field(description="why it takes no reads")


class Readiness(BaseModel):
    """The database answers and its schema is at the Alembic head."""

    status: str
    database: str
    migrations: str


class ReadinessWithReplicas(Readiness):
    """With read replicas configured, ``replicas`` and ``degraded`` (the names of those taking
    no reads) are added; a degraded replica does not make the service unready."""

    replicas: list[ReplicaHealth] = Field(default_factory=list)
    degraded: list[str] = Field(default_factory=list)


@functools.cache
def head_revisions() -> tuple[str, ...]:
    """The head revision(s) of the scripts in migrations/, read once, without the database."""
    scripts = ScriptDirectory.from_config(Config(str(ALEMBIC_INI)))
    return tuple(sorted(scripts.get_heads()))


def _stored_revisions(connection: Connection) -> tuple[str, ...]:
    if not inspect(connection).has_table(VERSION_TABLE):
        return ()
    rows = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))
    return tuple(sorted(rows.scalars()))


async def database_revisions(session: AsyncSession) -> tuple[str, ...]:
    """Check that the database answers, then read the revision(s) it is stamped with."""
    connection = await session.connection()
    await connection.execute(text("SELECT 1"))
    return await connection.run_sync(_stored_revisions)


def _describe(revisions: tuple[str, ...]) -> str:
    return ", ".join(revisions) or "none"


UPGRADE_HINT = "run `alembic upgrade head` (or `quart --app service.app db upgrade`)"


@blueprint.before_app_serving
async def warn_when_not_migrated() -> None:
    """Say at start-up, in one log line, what to run when the schema is not at the head."""
    settings: Settings = current_app.config["SETTINGS"]
    try:
        async with asyncio.timeout(settings.DB_POOL_TIMEOUT):
            async with get_database().session_scope(writes=False) as session:
                stored = await database_revisions(session)
    except (SQLAlchemyError, OSError, TimeoutError) as error:
        logger.warning(
            "the database does not answer at start-up (%s); /ready reports 503 until it does",
            type(error).__name__,
        )
        return
    if stored != head_revisions():
        logger.warning(
            "the database schema is at %s but this code needs %s: %s",
            _describe(stored),
            _describe(head_revisions()),
            UPGRADE_HINT,
        )


@blueprint.get("/")
@document_response(ServiceInfo)
async def index() -> ServiceInfo:
    """Name the service and link to its resources and operational routes."""
    return ServiceInfo(name="SARS records API", version=__version__, links=LINKS)


@blueprint.get("/ready")
@document_response(ReadinessWithReplicas)
@document_response(Problem, 503)
async def ready() -> Readiness:
    """Report whether the database answers and its schema is at the Alembic head (else 503)."""
    settings: Settings = current_app.config["SETTINGS"]
    try:
        # A database that accepts connections but never answers must not hang the probe.
        async with asyncio.timeout(settings.DB_POOL_TIMEOUT):
            stored = await database_revisions(current_session())
    except (SQLAlchemyError, OSError, TimeoutError) as error:
        logger.warning("not ready: the database is unavailable (%s)", type(error).__name__)
        raise unavailable("database: unavailable") from None
    head = head_revisions()
    if stored != head:
        raise unavailable(
            f"migrations: database at {_describe(stored)}, head is {_describe(head)}; "
            f"{UPGRADE_HINT}"
        )
    replicas = get_database().replicas
    if replicas is None:
        return Readiness(status="ready", database="ok", migrations="head")
    return ReadinessWithReplicas(
        status="ready",
        database="ok",
        migrations="head",
        replicas=[
            ReplicaHealth(
                name=replica.name,
                healthy=replica.healthy,
                lag_bytes=replica.lag_bytes,
                lag_seconds=replica.lag_seconds,
                error=replica.error,
            )
            for replica in replicas.replicas
        ],
        degraded=[replica.name for replica in replicas.replicas if not replica.healthy],
    )


@blueprint.get("/metrics")
async def prometheus_metrics() -> Response:
    """Every metric in the Prometheus text exposition format."""
    return Response(metrics.exposition(), content_type=metrics.CONTENT_TYPE)
