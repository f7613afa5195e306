"""Liveness: answers while the process runs, without touching the database."""

from __future__ import annotations

from pydantic import BaseModel
from quart import Blueprint
from quart_schema import document_response

blueprint = Blueprint("health", __name__)


class Health(BaseModel):
    status: str


@blueprint.get("/health")
@document_response(Health)
async def health() -> Health:
    """Report that the process is alive."""
    return Health(status="ok")
