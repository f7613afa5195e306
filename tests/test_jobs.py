"""The background record count job: runs while the app serves, leaks no session, stops cleanly."""

from __future__ import annotations

import datetime as dt

import pytest

from service.app import create_app
from service.db import Database, get_database
from service.jobs import RecordCountJob, get_job
from service.metrics import exposition
from service.queries.bulk import RecordRow, bulk_write
from service.settings import ConfigError, load_settings
from tests.conftest import settings_for
from tests.waiting import until


async def _store_records(database_url: str, days: range) -> None:
    rows = [
        RecordRow(date=dt.date(2003, 3, 17) + dt.timedelta(days=day), country="Canada", cases=day)
        for day in days
    ]
    async with Database(load_settings({"DATABASE_URL": database_url})) as db:
        async with db.session_scope(commit=True) as session:
            await bulk_write(session, rows, "error")


async def _wait_for_runs(job: RecordCountJob, runs: int) -> None:
    await until(lambda: job.runs >= runs, f"{runs} runs of the job")


async def test_the_job_counts_records_and_leaves_no_session_behind(database_url: str) -> None:
    await _store_records(database_url, range(3))
    app = create_app(settings_for(database_url, BACKGROUND_JOB_INTERVAL=0.01))
    db = get_database(app)
    job = get_job(app)
    assert job is not None

    async with app.test_app():
        await _wait_for_runs(job, 3)
        before = exposition(app).decode()
        await _store_records(database_url, range(3, 5))
        await _wait_for_runs(job, job.runs + 3)
        after = exposition(app).decode()
        pool = db.engine.pool

    assert "db_records 3.0" in before
    assert "db_records 5.0" in after
    assert job.failures == 0
    assert not app.background_tasks  # the job stopped at shutdown
    assert db.open_sessions == 0  # every run removed its session from the scoped registry
    assert pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_the_job_is_off_by_default(database_url: str) -> None:
    app = create_app(settings_for(database_url))

    async with app.test_app():
        assert get_job(app) is None
        assert not app.background_tasks


def test_a_negative_interval_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="BACKGROUND_JOB_INTERVAL"):
        load_settings({"BACKGROUND_JOB_INTERVAL": -1})
