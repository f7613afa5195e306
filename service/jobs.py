"""Background work inside the service: a periodic count of the stored records.

With ``BACKGROUND_JOB_INTERVAL`` > 0, a task started in ``before_serving`` counts the records
every that many seconds into the ``db_records`` gauge of ``/metrics`` (a figure too costly
to compute on every scrape of a large table). Each run opens its own session with
``session_scope``: the job's task is not a request and has no session of its own otherwise.
It stops when the app shuts down (``shutdown_event``), before the engine is disposed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from prometheus_client import Gauge
from quart import Quart
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from service.db import get_database
from service.metrics import EXTENSION_KEY as METRICS_KEY
from service.metrics import get_metrics
from service.models import Record
from service.settings import Settings

EXTENSION_KEY = "record_count_job"
logger = logging.getLogger(__name__)


class RecordCountJob:
    """Counts the records every ``interval`` seconds while the app serves."""

    def __init__(self, app: Quart, interval: float) -> None:
        self.app = app
        self.interval = interval
        self.runs = 0
        self.failures = 0
        self.records: int | None = None
        self.gauge: Gauge | None = None
        self.counted_at: Gauge | None = None
        if METRICS_KEY in app.extensions:
            registry = get_metrics(app).registry
            self.gauge = Gauge(
                "db_records", "Records stored, as of the last background count.", registry=registry
            )
            self.counted_at = Gauge(
                "db_records_counted_timestamp_seconds",
                "When the background job last counted the records (Unix time).",
                registry=registry,
            )

    async def run_once(self) -> int:
        """Count the records in a session of this task's own, and publish the figure."""
        async with get_database(self.app).session_scope(writes=False) as session:
            count = await session.scalar(select(func.count()).select_from(Record))
        self.records = int(count or 0)
        self.runs += 1
        if self.gauge is not None and self.counted_at is not None:
            self.gauge.set(self.records)
            self.counted_at.set(time.time())
        logger.debug("background job: %d records stored", self.records)
        return self.records

    async def run_until_shutdown(self) -> None:
        """Run now and then every ``interval`` seconds until the app starts shutting down."""
        stopping = self.app.shutdown_event
        while not stopping.is_set():
            try:
                await self.run_once()
            except (SQLAlchemyError, OSError) as error:
                # The database being away for a while must not end the job.
                self.failures += 1
                logger.warning("background job: record count failed: %s", error)
            await self._sleep_unless_stopping(self.interval)

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        stopping = self.app.shutdown_event
        assert isinstance(stopping, asyncio.Event)  # Quart's default event_class
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=seconds)

    async def start(self) -> None:
        self.app.add_background_task(self.run_until_shutdown)


def get_job(app: Quart) -> RecordCountJob | None:
    """The app's record count job, or None when BACKGROUND_JOB_INTERVAL is 0."""
    job = app.extensions.get(EXTENSION_KEY)
    assert job is None or isinstance(job, RecordCountJob)
    return job


def init_app(app: Quart) -> None:
    """Start the record count job with the app when ``BACKGROUND_JOB_INTERVAL`` > 0."""
    settings = app.config["SETTINGS"]
    assert isinstance(settings, Settings)
    if settings.BACKGROUND_JOB_INTERVAL == 0:
        return
    job = RecordCountJob(app, settings.BACKGROUND_JOB_INTERVAL)
    app.extensions[EXTENSION_KEY] = job
    app.before_serving(job.start)
