"""HTTP plumbing shared by every route: JSON in and out, body limits, request ids."""

from __future__ import annotations

import functools
import os
import re
from typing import Any

import orjson
from quart import Quart, Response, current_app, g, request
from quart.json.provider import DefaultJSONProvider
from werkzeug.datastructures import ETags
from werkzeug.http import parse_etags
from werkzeug.routing import BaseConverter

from service.compat.quart import CancellableBodyRequest
from service.compat.quart_schema import serialize_models_directly
from service.errors import APIError
from service.settings import Settings

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
BULK_ENDPOINTS = frozenset({"records.bulk_write"})
MAX_ID = 2_147_483_647
_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


class JSONProvider(DefaultJSONProvider):
    """orjson: fast, compact, UTC timestamps ending in ``Z``, keys in model order."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return _to_json(obj).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return orjson.loads(s)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        data = args[0] if len(args) == 1 else (args or kwargs)
        return current_app.response_class(_to_json(data), mimetype="application/json")


def _to_json(value: Any) -> bytes:
    """``value`` as the API's JSON (pydantic models inside it as their JSON form)."""
    return orjson.dumps(value, default=_default, option=_OPTIONS)


def _default(value: Any) -> Any:
    model_dump = getattr(value, "model_dump", None)
    if model_dump is not None:
        return model_dump(mode="json")
    raise TypeError(f"cannot serialise {type(value).__name__}")


class ServiceRequest(CancellableBodyRequest):
    """A request whose JSON body must be declared as JSON, within the route's size limit."""

    async def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        if not self.is_json:
            raise APIError(415, "send the body as JSON with Content-Type: application/json")
        data = await self.get_data(cache=cache, as_text=False)
        if len(data) > body_limit():
            raise APIError(413, f"the body is larger than {body_limit()} bytes")
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as error:
            raise APIError(400, f"malformed JSON: {error}") from None

    @functools.cached_property
    def blueprints(self) -> list[str]:
        """Quart works this out from the endpoint three times per request (the hooks, the
        response, the teardown); it is fixed once the request is routed, before any of them."""
        return super().blueprints


def body_limit() -> int:
    """The largest body the current route accepts."""
    settings: Settings = current_app.config["SETTINGS"]
    if request.endpoint in BULK_ENDPOINTS:
        return settings.BULK_MAX_BODY_BYTES
    return settings.MAX_BODY_BYTES


async def _reject_oversized_body() -> None:
    if request.content_length is not None and request.content_length > body_limit():
        raise APIError(413, f"the body is larger than {body_limit()} bytes")


def sent_header(name: str) -> str | None:
    """The request's first ``name`` header, if any.

    ``Headers.get`` finds a missing header by raising and catching an exception, about three
    times the cost of ``getlist``, which only loops. The headers read on every GET
    (``X-Request-ID``, ``If-None-Match``) are usually absent.
    """
    values = request.headers.getlist(name)
    return values[0] if values else None


def sent_etags(name: str) -> ETags | None:
    """The entity tags of the request's ``If-Match`` or ``If-None-Match`` header, parsed by
    werkzeug; None when the header is absent.

    Compare with ``ETags.contains`` for ``If-Match`` (strong comparison) and
    ``ETags.contains_weak`` for ``If-None-Match`` (weak comparison), as RFC 9110 13.1 says;
    both match ``*``.
    """
    sent = sent_header(name)
    return None if sent is None else parse_etags(sent)


def _new_request_id() -> str:
    return os.urandom(16).hex()


async def _assign_request_id() -> None:
    sent = sent_header(REQUEST_ID_HEADER)
    valid = sent is not None and _VALID_REQUEST_ID.fullmatch(sent)
    g.request_id = sent if valid else _new_request_id()


async def _echo_request_id(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = g.get("request_id") or _new_request_id()
    return response


class IdConverter(BaseConverter):
    """``<id:name>``: a positive 32-bit integer; anything else does not match (404)."""

    # 1 to 2147483647 spelled out: a converter that refused a match later (ValidationError)
    # would leave werkzeug answering 405 for the methods of the route it had matched.
    regex = (
        r"(?:[1-9][0-9]{0,8}|1[0-9]{9}|20[0-9]{8}|21[0-3][0-9]{7}|214[0-6][0-9]{6}"
        r"|2147[0-3][0-9]{5}|21474[0-7][0-9]{4}|214748[0-2][0-9]{3}|2147483[0-5][0-9]{2}"
        r"|21474836[0-3][0-9]|214748364[0-7])"
    )

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: Any) -> str:
        return str(value)


_REPEATED_SLASHES = re.compile(r"//+")


class SlashInsensitive:
    """ASGI wrapper: ``/records/`` is ``/records`` and ``/records//1`` is ``/records/1``,
    served as they are, with no redirect.

    Werkzeug would answer a repeated slash with a 308 to an absolute URL built from the
    request's ``Host`` header, an address the client chose.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and len(path) > 1 and ("//" in path or path.endswith("/")):
            path = _REPEATED_SLASHES.sub("/", path)
            scope = {**scope, "path": path.rstrip("/") or "/"}
        await self.app(scope, receive, send)


def init_app(app: Quart, settings: Settings) -> None:
    """Install the JSON provider, the response serializer and the per-request hooks."""
    app.url_map.converters["id"] = IdConverter
    app.asgi_app = SlashInsensitive(app.asgi_app)  # type: ignore[method-assign]
    app.json = JSONProvider(app)
    serialize_models_directly(app, _to_json)
    # Quart enforces one limit for every route while the body streams in; the bulk route's
    # larger limit is the ceiling, and body_limit() applies the per-route one.
    app.config["MAX_CONTENT_LENGTH"] = max(settings.MAX_BODY_BYTES, settings.BULK_MAX_BODY_BYTES)
    app.before_request(_assign_request_id)
    app.before_request(_reject_oversized_body)
    app.after_request(_echo_request_id)
