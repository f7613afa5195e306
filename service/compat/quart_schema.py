"""quart-schema workaround: returned models serialized straight to JSON.

Written against quart-schema 0.25.0 (checked for ``SUPPORTED``: ``>=0.22,<0.26``).

Behaviour relied on (no public API): ``QuartSchema.init_app`` replaces ``app.make_response``
on the instance with a wrapper (``quart_schema.extension.wrap_make_response``) that first turns
a returned model, dict or list into Python objects (``convert_response_return_value``: a
pydantic ``TypeAdapter`` made per response for dicts and lists) and then hands them to Quart.

Why: serializing straight to JSON bytes (pydantic's serializer for models, orjson for the
rest) is several times cheaper than that detour. Installed over quart-schema's wrapper, so it
must come after ``QuartSchema(app)``; :func:`serialize_models_directly` refuses otherwise
instead of silently taking the slow path. No upstream issue. It can go when quart-schema
leaves serialization to the app's JSON provider.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from quart import Quart

DISTRIBUTION = "quart-schema"
SUPPORTED = ">=0.22,<0.26"
EXTENSION_KEY = "QUART_SCHEMA"


def _parts(result: Any) -> tuple[Any, int, Any]:
    """(body, status, headers) of a handler's return value, in any of Quart's shapes."""
    if not isinstance(result, tuple):
        return result, 200, None
    if len(result) == 3:
        return result
    body, extra = result
    return (body, extra, None) if isinstance(extra, int) else (body, 200, extra)


def serialize_models_directly(app: Quart, to_json: Callable[[Any], bytes]) -> None:
    """Turn a returned pydantic model (``model_dump_json``), dict or list (``to_json``) into
    a JSON response in one step, ahead of quart-schema's conversion."""
    if EXTENSION_KEY not in app.extensions:
        raise RuntimeError("serialize_models_directly() must run after QuartSchema(app)")
    convert = app.make_response

    async def make_response(result: Any) -> Any:
        value, status, headers = _parts(result)
        if isinstance(value, BaseModel):
            body: str | bytes = value.model_dump_json()
        elif isinstance(value, dict | list):
            body = to_json(value)
        else:
            return await convert(result)
        return app.response_class(body, status, headers, content_type="application/json")

    app.make_response = make_response  # type: ignore[method-assign]
