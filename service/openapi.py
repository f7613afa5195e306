"""The OpenAPI document: quart-schema's, plus what the contract adds to every operation.

quart-schema documents the success responses it is told about; the error responses are the
same for every route (problem+json), so they are added here once instead of on each handler.
"""

from __future__ import annotations

from typing import Any

from quart_schema.openapi import OpenAPIProvider
from werkzeug.routing import BaseConverter, Rule

from service.db import READ_METHODS, WRITE_METHODS
from service.http import MAX_ID, IdConverter
from service.replicas import TOKEN_HEADER
from service.schemas.common import Problem

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_DESCRIPTIONS = {
    400: "Malformed JSON, or a body that is not a JSON object",
    401: "No valid bearer token (writes only)",
    404: "No such resource",
    409: "Conflicts with stored data",
    412: "If-Match is stale",
    413: "Body too large",
    415: "Body is not JSON",
    422: "Body or query string failed validation",
    503: "Database unavailable or pool exhausted; retry after Retry-After seconds",
}
_READ_ERRORS = (404, 422, 503)
_WRITE_ERRORS = (400, 401, 404, 409, 412, 413, 415, 422, 503)
_NO_DATABASE = frozenset({"/health", "/metrics", "/openapi.json", "/docs"})
_TOKEN_DESCRIPTION = (
    "Read replicas only (README, 'Read replicas'): an opaque token naming the primary's WAL "
    "position after this write committed. Send it with later reads to see this write."
)
TOKEN_RESPONSE_HEADER = {"description": _TOKEN_DESCRIPTION, "schema": {"type": "string"}}
TOKEN_PARAMETER = {
    "name": TOKEN_HEADER,
    "in": "header",
    "required": False,
    "description": (
        "The latest Consistency-Token this client received from a write: the read is served "
        "by a replica that has that write, else by the primary. Without it a replica may "
        "answer with data up to REPLICA_MAX_LAG_SECONDS old. Never an error: an invalid "
        "or expired token reads from the primary."
    ),
    "schema": {"type": "string"},
}


def _problem(status: int) -> dict[str, Any]:
    return {
        "description": _DESCRIPTIONS[status],
        "content": {"application/problem+json": {"schema": PROBLEM_REF}},
    }


class ServiceOpenAPIProvider(OpenAPIProvider):
    """Integer path ids, problem+json errors, bearer security on writes, bodiless replies."""

    def schema(self) -> dict[str, Any]:
        document = super().schema()
        document["components"]["schemas"]["Problem"] = Problem.model_json_schema()
        return document

    def build_path_parameter(self, name: str, converter: BaseConverter) -> dict[str, Any]:
        if isinstance(converter, IdConverter):
            schema = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
            return {"name": name, "in": "path", "required": True, "schema": schema}
        return super().build_path_parameter(name, converter)

    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        for path, operations in paths.items():
            for method, operation in operations.items():
                operations[method] = self._complete(path, method.upper(), operation)
        return paths, components

    def _complete(self, path: str, method: str, operation: dict[str, Any]) -> dict[str, Any]:
        responses = dict(operation["responses"])
        if method == "DELETE":
            responses.setdefault(204, {"description": "Deleted"})
        if method == "GET" and path == "/records/{record_id}":
            responses[304] = {"description": "Not modified: If-None-Match matches the ETag"}
        if path not in _NO_DATABASE:
            for status in _WRITE_ERRORS if method in WRITE_METHODS else _READ_ERRORS:
                responses.setdefault(status, _problem(status))
            if method in WRITE_METHODS:
                responses = _with_token_header(responses)
        if path == "/metrics":
            text = {"text/plain": {"schema": {"type": "string"}}}
            responses[200] = {"description": "Prometheus text format", "content": text}
        completed = {**operation, "responses": responses}
        if "requestBody" in operation:
            completed["requestBody"] = {**operation["requestBody"], "required": True}
        if method in WRITE_METHODS:
            completed["security"] = [{"bearer": []}]
        if method in READ_METHODS and path not in _NO_DATABASE:
            completed["parameters"] = [*operation.get("parameters", ()), TOKEN_PARAMETER]
        return completed


def _with_token_header(responses: dict[Any, Any]) -> dict[Any, Any]:
    """Successful write responses carry the consistency token."""
    completed = dict(responses)
    for status, response in responses.items():
        if str(status).startswith("2"):
            headers = {**response.get("headers", {}), TOKEN_HEADER: TOKEN_RESPONSE_HEADER}
            completed[status] = {**response, "headers": headers}
    return completed
