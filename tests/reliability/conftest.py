"""Fixtures of the reliability suite: the report, its sections, and the databases under test.

Every module names its section with ``SECTION = (number, title)`` (or, with several tests,
``SECTIONS = {test_name: (number, title)}``); the ``section`` fixture times the test, records
its outcome and appends its part to reports/reliability.md.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import BACKENDS
from tests.databases import POSTGRES_URL, PostgresDatabases, SQLiteDatabases, fresh_database
from tests.reliability.report import Report, Section, report_path


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    setattr(item, f"reliability_{report.when}", report)
    return report


def _outcome(item: pytest.Item) -> str:
    setup: pytest.TestReport | None = getattr(item, "reliability_setup", None)
    call: pytest.TestReport | None = getattr(item, "reliability_call", None)
    if setup is not None and setup.failed:
        return "error"
    if call is None:
        return "skipped"
    return call.outcome


async def _postgres_version() -> str:
    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        version: str = await connection.fetchval("SHOW server_version")
        return version
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def reliability_report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Report]:
    """The report of this run: truncated and headed at the start, summarised at the end.

    It is written where ``report_path`` says: the tracked report only when asked for.
    """
    try:
        version = asyncio.run(_postgres_version())
    except (OSError, asyncpg.PostgresError) as error:
        version = f"unreachable ({type(error).__name__})"
    report = Report(report_path(tmp_path_factory.mktemp("reliability")))
    report.start(version)
    yield report
    report.finish()


@pytest.fixture
def section(request: pytest.FixtureRequest, reliability_report: Report) -> Iterator[Section]:
    sections = getattr(request.module, "SECTIONS", {})
    number, title = sections.get(request.function.__name__) or request.module.SECTION
    found = Section(number, title)
    started, load = time.monotonic(), os.getloadavg()[0]
    yield found
    found.duration = time.monotonic() - started
    found.load = (load, os.getloadavg()[0])
    found.outcome = _outcome(request.node)
    reliability_report.append(found)
    print(f"[reliability {number}] {title}: {found.outcome} in {found.duration:.1f} s")


@pytest.fixture
def pg_databases(request: pytest.FixtureRequest) -> PostgresDatabases:
    if "postgresql" not in BACKENDS:
        pytest.skip("PostgreSQL is not among TEST_BACKENDS")
    databases: PostgresDatabases = request.getfixturevalue("postgresql_databases")
    return databases


@pytest.fixture
async def pg_url(pg_databases: PostgresDatabases) -> AsyncIterator[str]:
    """A fresh, migrated PostgreSQL database of this test's own."""
    async with fresh_database(pg_databases) as url:
        yield url


@pytest.fixture
def sqlite_databases_only(request: pytest.FixtureRequest) -> SQLiteDatabases:
    if "sqlite" not in BACKENDS:
        pytest.skip("SQLite is not among TEST_BACKENDS")
    databases: SQLiteDatabases = request.getfixturevalue("sqlite_databases")
    return databases


@pytest.fixture
async def sqlite_url(sqlite_databases_only: SQLiteDatabases) -> AsyncIterator[str]:
    """A fresh, migrated SQLite file of this test's own."""
    async with fresh_database(sqlite_databases_only) as url:
        yield url


@pytest.fixture
def server_log(tmp_path: Path) -> Path:
    return tmp_path / "hypercorn.log"
