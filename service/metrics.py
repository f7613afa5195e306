"""Prometheus metrics of one app: requests, their durations, the pool, sessions and queries.

Each app has a registry of its own, so several apps in one process (the tests) never clash.
Labels are bounded: ``route`` is the URL rule (``/records/<id:record_id>``), never the raw
path, and ``unmatched`` for a request no rule matched.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from quart import Quart, Response, current_app, g, request
from sqlalchemy.pool import QueuePool

from service.db import get_database

EXTENSION_KEY = "metrics"
# The classic text format; newer prometheus_client versions default to 1.0.0.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNMATCHED_ROUTE = "unmatched"
OTHER_METHOD = "OTHER"
_KNOWN_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"})


class Metrics:
    """The registry of one app and the request metrics its hooks feed."""

    def __init__(self, app: Quart) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests",
            "HTTP requests served, by method, URL rule and status.",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.durations = Histogram(
            "http_request_duration_seconds",
            "Time from the first request hook to the response, by method and URL rule.",
            ("method", "route"),
            registry=self.registry,
        )
        self.registry.register(DatabaseCollector(app))
        if app.config["SETTINGS"].DATABASE_REPLICA_URLS:
            self.registry.register(ReplicaCollector(app))
        # The children of each label set: prometheus_client's labels() validates, converts
        # and locks on every call. Bounded: methods x URL rules x statuses.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    # -- the request hooks --------------------------------------------------------------------

    async def _start_timer(self) -> None:
        g.metrics_started = time.perf_counter()

    async def _record_request(self, response: Response) -> Response:
        method = request.method if request.method in _KNOWN_METHODS else OTHER_METHOD
        rule = request.url_rule
        route = rule.rule if rule is not None else UNMATCHED_ROUTE
        count, duration = self._children_for(method, route, response.status_code)
        count.inc()
        started: float | None = g.pop("metrics_started", None)
        if started is not None:
            duration.observe(time.perf_counter() - started)
        return response

    def _children_for(self, method: str, route: str, status: int) -> tuple[Counter, Histogram]:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(method, route, str(status)),
                self.durations.labels(method, route),
            )
            self._children[key] = children
        return children


class DatabaseCollector(Collector):
    """Pool and session gauges and the statement count, read at scrape time."""

    def __init__(self, app: Quart) -> None:
        self.app = app

    def describe(self) -> Iterator[Metric]:
        yield from self._families(pool_size=None, checked_out=None, sessions=None, queries=None)

    def collect(self) -> Iterator[Metric]:
        database = get_database(self.app)
        pool = database.pool
        pool_size, checked_out = (0, 0)
        if isinstance(pool, QueuePool):  # the pool of both backends; others have no size
            pool_size, checked_out = pool.size(), pool.checkedout()
        yield from self._families(
            pool_size=pool_size,
            checked_out=checked_out,
            sessions=database.open_sessions,
            queries=database.statements.total,
        )

    @staticmethod
    def _families(
        *,
        pool_size: int | None,
        checked_out: int | None,
        sessions: int | None,
        queries: int | None,
    ) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "db_pool_size", "Connections the pool keeps (0 before the engine exists).", pool_size
        )
        yield GaugeMetricFamily(
            "db_pool_checked_out", "Pooled connections in use right now.", checked_out
        )
        yield GaugeMetricFamily(
            "db_sessions_open",
            "Live entries in the task-scoped session registry, the scrape's own included.",
            sessions,
        )
        yield CounterMetricFamily("db_queries", "SQL statements sent to the database.", queries)


class ReplicaCollector(Collector):
    """Where reads went, and each replica's health and lag, read at scrape time."""

    def __init__(self, app: Quart) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        replicas = get_database(self.app).replicas
        assert replicas is not None
        reads = CounterMetricFamily(
            "db_reads",
            "Read (GET, HEAD) requests that used the database, by the server they read from.",
            labels=("target",),
        )
        reads.add_metric(("primary",), replicas.primary_reads)
        healthy = GaugeMetricFamily(
            "db_replica_healthy", "1 while a replica takes reads.", labels=("replica",)
        )
        lag_bytes = GaugeMetricFamily(
            "db_replica_lag_bytes",
            "WAL bytes the primary had at the last check that a replica had not replayed.",
            labels=("replica",),
        )
        lag_seconds = GaugeMetricFamily(
            "db_replica_lag_seconds",
            "How long a replica has been missing WAL the primary had, at the last check.",
            labels=("replica",),
        )
        for replica in replicas.replicas:
            reads.add_metric((replica.name,), replica.reads)
            healthy.add_metric((replica.name,), int(replica.healthy))
            if replica.lag_bytes is not None:
                lag_bytes.add_metric((replica.name,), replica.lag_bytes)
            if replica.lag_seconds is not None:
                lag_seconds.add_metric((replica.name,), replica.lag_seconds)
        yield from (reads, healthy, lag_bytes, lag_seconds)


def get_metrics(app: Quart | None = None) -> Metrics:
    """The Metrics of ``app`` (default: the current app)."""
    metrics = (app or current_app).extensions[EXTENSION_KEY]
    assert isinstance(metrics, Metrics)
    return metrics


def exposition(app: Quart | None = None) -> bytes:
    """Every metric of ``app`` in the Prometheus text format (see CONTENT_TYPE)."""
    return generate_latest(get_metrics(app).registry)


def init_app(app: Quart) -> None:
    """Give ``app`` its registry and the hooks that feed it.

    Call it before the other extensions: its ``before_request`` then runs first and its
    ``after_request`` last, so the timing covers every other hook, and responses made by
    error handlers are counted like any other.
    """
    metrics = Metrics(app)
    app.extensions[EXTENSION_KEY] = metrics
    app.before_request(metrics._start_timer)
    app.after_request(metrics._record_request)
