"""Liveness: answers while the process runs, without touching the database."""

from __future__ import annotations

from quart import Blueprint

blueprint = Blueprint("health", __name__)


@blueprint.get("/health")
async def health() -> dict[str, str]:
    """Report that the process is alive."""
    return {"status": "ok"}
