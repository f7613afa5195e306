"""What the contract (API.md) promises about every response, as checks on raw responses."""

from __future__ import annotations

from typing import Any

import orjson

from tests.reliability.rawhttp import Response

PROBLEM_JSON = "application/problem+json"


def problem_issues(response: Response) -> list[str]:
    """Why ``response`` (an error) is not a contract problem+json; empty when it is one."""
    if response.content_type != PROBLEM_JSON:
        return [f"content type {response.content_type or 'missing'!r}"]
    try:
        body: Any = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        return ["body is not JSON"]
    if not isinstance(body, dict):
        return ["body is not an object"]
    issues = []
    if body.get("type") != "about:blank":
        issues.append(f"type {body.get('type')!r}")
    if not isinstance(body.get("title"), str) or not body["title"]:
        issues.append("no title")
    if body.get("status") != response.status:
        issues.append(f"status {body.get('status')!r} != {response.status}")
    if "detail" in body and not isinstance(body["detail"], str):
        issues.append("detail is not a string")
    if response.status == 422:
        errors = body.get("errors")
        if not isinstance(errors, list) or not errors:
            issues.append("422 without errors")
        elif not all(
            isinstance(e, dict)
            and isinstance(e.get("field"), str)
            and isinstance(e.get("message"), str)
            for e in errors
        ):
            issues.append("errors without field/message")
    if response.status == 503 and response.header("retry-after") != "1":
        issues.append("503 without Retry-After: 1")
    if response.status == 401 and not (response.header("www-authenticate") or "").startswith(
        "Bearer"
    ):
        issues.append("401 without WWW-Authenticate: Bearer")
    if response.header("x-request-id") is None:
        issues.append("no X-Request-ID")
    return issues
