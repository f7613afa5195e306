"""CORS for the origins in ``CORS_ORIGINS``; with none configured, no CORS headers at all."""

from __future__ import annotations

from quart import Quart
from quart_cors import cors

from service.settings import Settings

ALLOW_METHODS = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE")
ALLOW_HEADERS = (
    "Authorization",
    "Consistency-Token",
    "Content-Type",
    "If-Match",
    "If-None-Match",
    "X-Request-ID",
)
EXPOSE_HEADERS = ("Consistency-Token", "ETag", "Location", "Link", "X-Request-ID", "Retry-After")


def init_app(app: Quart, settings: Settings) -> None:
    """Answer preflights and label responses for the configured origins only."""
    if not settings.CORS_ORIGINS:
        return
    cors(
        app,
        allow_origin=list(settings.CORS_ORIGINS),
        allow_methods=ALLOW_METHODS,
        allow_headers=ALLOW_HEADERS,
        expose_headers=EXPOSE_HEADERS,
    )
