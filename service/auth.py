"""Bearer-token authentication for writes: GET, HEAD and OPTIONS stay public."""

from __future__ import annotations

import hmac

from quart import Quart, current_app, request

from service.db import WRITE_METHODS
from service.errors import APIError
from service.settings import Settings


def token_is_valid(sent: str, tokens: tuple[str, ...]) -> bool:
    """Compare against every token in constant time, so timing reveals nothing."""
    sent_bytes = sent.encode()
    matches = [hmac.compare_digest(sent_bytes, token.encode()) for token in tokens]
    return any(matches)


def _bearer_token() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def _require_token_for_writes() -> None:
    if request.method not in WRITE_METHODS or request.routing_exception is not None:
        return  # reads are public; unknown routes and methods get their 404 and 405
    settings: Settings = current_app.config["SETTINGS"]
    token = _bearer_token()
    if token is None or not token_is_valid(token, settings.API_TOKENS):
        raise APIError(
            401, _refusal(settings), headers={"WWW-Authenticate": 'Bearer realm="sars"'}
        )


def _refusal(settings: Settings) -> str:
    if not settings.API_TOKENS:
        return "this service has no API tokens configured (API_TOKENS), so it refuses every write"
    return "writes need 'Authorization: Bearer <token>' with a token from API_TOKENS"


def init_app(app: Quart) -> None:
    app.before_request(_require_token_for_writes)
