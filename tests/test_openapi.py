"""The OpenAPI document is accurate: schemathesis finds no server error and no response
that contradicts it, on both backends, against a real Hypercorn process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from quart import Quart

from tests.conftest import TOKEN
from tests.live import live_server

# Cursors are signed and a record needs exactly one of country/country_id: requests the
# schema allows can still be refused with 422, so "positive data acceptance" is not checked.
CHECKS = ["--checks", "all", "--exclude-checks", "positive_data_acceptance"]


async def test_every_contract_route_is_documented(app: Quart) -> None:
    document = await (await app.test_client().get("/openapi.json")).get_json()
    assert document["openapi"].startswith("3.")
    expected = {
        "/",
        "/health",
        "/ready",
        "/metrics",
        "/countries",
        "/countries/{country_id}",
        "/countries/{country_id}/records",
        "/countries/{country_id}/summary",
        "/records",
        "/records/{record_id}",
        "/records/bulk",
        "/sources",
        "/sources/{source_id}",
        "/sources/{source_id}/records",
        "/stats",
        "/stats/daily",
    }
    assert expected <= set(document["paths"])
    record = document["paths"]["/records/{record_id}"]
    assert set(record) >= {"get", "put", "patch", "delete"}
    assert record["delete"]["security"] == [{"bearer": []}]
    assert "412" in record["patch"]["responses"]
    assert record["get"]["parameters"][0]["schema"]["type"] == "integer"


async def test_the_consistency_token_is_documented_on_writes_and_reads(app: Quart) -> None:
    document = await (await app.test_client().get("/openapi.json")).get_json()
    paths = document["paths"]
    for path, method, status in [
        ("/records", "post", "201"),
        ("/records/{record_id}", "patch", "200"),
        ("/records/bulk", "post", "200"),
        ("/countries", "post", "201"),
    ]:
        headers = paths[path][method]["responses"][status].get("headers", {})
        assert "Consistency-Token" in headers, (path, method)
    for path in ("/records", "/records/{record_id}", "/countries/{country_id}/summary"):
        names = {(p["in"], p["name"]) for p in paths[path]["get"]["parameters"]}
        assert ("header", "Consistency-Token") in names, path
    for path in ("/health", "/metrics"):
        parameters = paths[path]["get"].get("parameters", [])
        assert all(p["name"] != "Consistency-Token" for p in parameters), path
    ready = paths["/ready"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"replicas", "degraded"} <= set(ready["properties"])
    assert {"replicas", "degraded"}.isdisjoint(ready.get("required", []))


# pydantic's names for constraints; JSON Schema (and so every validator) knows none of them.
PYDANTIC_ONLY_KEYWORDS = frozenset(
    {"ge", "le", "gt", "lt", "min_length", "max_length", "multiple_of", "max_digits", "strict"}
)


def _schema_keywords(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, keyword) for every key of every schema object in ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if not path.endswith("/properties"):  # there, keys are field names
                yield path, key
            yield from _schema_keywords(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _schema_keywords(value, f"{path}[{index}]")


async def test_bounds_are_standard_json_schema_keywords(app: Quart) -> None:
    document = await (await app.test_client().get("/openapi.json")).get_json()
    leaked = [(p, k) for p, k in _schema_keywords(document) if k in PYDANTIC_ONLY_KEYWORDS]
    assert leaked == []
    body = document["paths"]["/records"]["post"]["requestBody"]["content"]["application/json"]
    schema = body["schema"]
    if "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    cases = schema["properties"]["cases"]
    assert (cases["minimum"], cases["maximum"]) == (0, 2_147_483_647)
    source_id = schema["properties"]["source_ids"]["items"]
    assert (source_id["minimum"], source_id["maximum"]) == (1, 2_147_483_647)


@pytest.mark.e2e
def test_schemathesis_finds_nothing(database_url: str, tmp_path: Path) -> None:
    with live_server(database_url, tmp_path / "server.log", API_TOKENS=TOKEN) as server:
        schema = httpx.get(f"{server.url}/openapi.json").json()
        assert "paths" in schema
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "run",
                f"{server.url}/openapi.json",
                *CHECKS,
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--max-examples",
                "25",
                "--seed",
                "2003",
                "--workers",
                "2",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        log = server.output()
    assert result.returncode == 0, result.stdout[-6000:]
    assert "Traceback" not in log, log[-4000:]
