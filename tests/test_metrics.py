"""Prometheus metrics: names, bounded route labels, and the database gauges."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from quart import Quart
from quart.typing import TestClientProtocol as Client

from service.app import create_app
from tests.conftest import settings_for

METRIC_NAMES = (
    "http_requests_total",
    "http_request_duration_seconds",
    "db_pool_size",
    "db_pool_checked_out",
    "db_sessions_open",
    "db_queries_total",
)


async def _scrape(client: Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of one scrape, keyed by name and labels."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = {}
    for family in text_string_to_metric_families(await response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def _value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_every_metric_is_exposed(real_app: Quart) -> None:
    client = real_app.test_client()
    await client.get("/health")
    samples = {name for name, _labels in await _scrape(client)}
    for name in METRIC_NAMES:
        if name == "http_request_duration_seconds":
            assert {f"{name}_bucket", f"{name}_count", f"{name}_sum"} <= samples
        else:
            assert name in samples, name


async def test_requests_are_counted_by_route_template(real_app: Quart) -> None:
    client = real_app.test_client()
    route = "/countries/<id:country_id>"
    before = await _scrape(client)
    assert (await client.get("/countries/123")).status_code == 404
    assert (await client.get("/no/such/path")).status_code == 404
    after = await _scrape(client)

    counted = {"method": "GET", "route": route, "status": "404"}
    assert (
        _value(after, "http_requests_total", **counted)
        == _value(before, "http_requests_total", **counted) + 1
    )
    timed = {"method": "GET", "route": route}
    assert (
        _value(after, "http_request_duration_seconds_count", **timed)
        == _value(before, "http_request_duration_seconds_count", **timed) + 1
    )
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert _value(after, "http_requests_total", **unmatched) == 1
    assert not [key for key in after if ("route", "/countries/123") in key[1]]
    scrapes = {"method": "GET", "route": "/metrics", "status": "200"}
    assert _value(after, "http_requests_total", **scrapes) == 1


async def test_database_gauges_and_query_count(real_app: Quart) -> None:
    client = real_app.test_client()
    before = await _scrape(client)
    assert _value(before, "db_sessions_open") == 1  # the scrape's own request
    assert _value(before, "db_pool_size") == real_app.config["SETTINGS"].DB_POOL_SIZE
    assert _value(before, "db_pool_checked_out") == 0

    assert (await client.get("/countries")).status_code == 200
    after = await _scrape(client)
    assert _value(after, "db_queries_total") > _value(before, "db_queries_total")
    assert _value(after, "db_sessions_open") == 1


async def test_each_app_has_its_own_registry(real_app: Quart, database_url: str) -> None:
    other = create_app(settings_for(database_url))
    async with other.test_app():
        await real_app.test_client().get("/health")
        samples = await _scrape(other.test_client())
    health = {"method": "GET", "route": "/health", "status": "200"}
    assert _value(samples, "http_requests_total", **health) == 0
