"""The synthetic data generator: realistic, deterministic, readable by the loader."""

from __future__ import annotations

import datetime as dt
import itertools
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from service.db import Database
from service.generate import generate_rows, write_csv
from service.load import CsvSource
from service.models import MAX_COUNT, NAME_LENGTH, Record
from service.queries.bulk import RecordRow
from service.settings import load_settings
from tests.test_cli import quart, succeeded


def _by_country(rows: list[RecordRow]) -> dict[str, list[RecordRow]]:
    series: dict[str, list[RecordRow]] = defaultdict(list)
    for row in rows:
        assert row.country is not None
        series[row.country].append(row)
    return series


def test_the_same_seed_gives_the_same_rows() -> None:
    assert list(generate_rows(20, 30, seed=7)) == list(generate_rows(20, 30, seed=7))
    assert list(generate_rows(20, 30, seed=7)) != list(generate_rows(20, 30, seed=8))


def test_every_country_reports_once_a_day_from_the_start_date() -> None:
    rows = list(generate_rows(12, 40, seed=1, start=dt.date(2004, 1, 1)))
    series = _by_country(rows)

    assert len(rows) == 12 * 40
    assert len(series) == 12
    assert all(1 <= len(name) <= NAME_LENGTH for name in series)
    for reports in series.values():
        dates = [row.date for row in reports]
        assert dates == [dt.date(2004, 1, 1) + dt.timedelta(days=day) for day in range(40)]


def test_the_figures_are_cumulative_and_plausible() -> None:
    rows = list(generate_rows(200, 150, seed=3))

    for reports in _by_country(rows).values():
        for before, after in itertools.pairwise(reports):
            assert before.cases <= after.cases
            assert before.deaths <= after.deaths
            assert before.recoveries <= after.recoveries
    assert all(0 <= row.cases <= MAX_COUNT for row in rows)
    assert all(row.deaths + row.recoveries <= row.cases for row in rows)
    finals = sorted(reports[-1].cases for reports in _by_country(rows).values())
    assert finals[-1] > 1000  # some large outbreaks
    assert finals[len(finals) // 2] > 0  # most countries have cases


def test_the_csv_is_what_the_loader_reads(tmp_path: Path) -> None:
    path = tmp_path / "generated.csv"
    written = write_csv(generate_rows(5, 6, seed=2), path)

    parsed = [row for _, row, _ in CsvSource(path).rows()]

    assert written == 30
    assert parsed == list(generate_rows(5, 6, seed=2))


@pytest.mark.e2e
def test_generate_data_writes_the_same_csv_for_the_same_seed(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}"
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    arguments = ("generate-data", "--countries", "4", "--days", "5", "--seed", "11")

    result = succeeded(quart(*arguments, "--output", str(first), database_url=url))
    succeeded(quart(*arguments, "--output", str(second), database_url=url))

    assert result.stdout.strip() == f"wrote 20 rows to {first}"
    assert first.read_bytes() == second.read_bytes()
    assert first.read_text().splitlines()[0] == "date,country,cases,deaths,recoveries"
    assert [row for _, row, _ in CsvSource(first).rows()] == list(generate_rows(4, 5, seed=11))


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with Database(load_settings({"DATABASE_URL": database_url})) as database:
        yield database


@pytest.mark.e2e
async def test_generate_data_writes_to_the_database_through_the_bulk_path(
    database_url: str, db: Database
) -> None:
    arguments = ("generate-data", "--countries", "6", "--days", "10", "--batch-size", "25")

    first = succeeded(quart(*arguments, database_url=database_url))
    again = succeeded(quart(*arguments, database_url=database_url))

    assert first.stdout.strip() == "read 60 / created 60 / updated 0 / skipped 0 / rejected 0"
    assert again.stdout.strip() == "read 60 / created 0 / updated 0 / skipped 60 / rejected 0"
    async with db.session_scope(writes=False) as session:
        assert await session.scalar(select(func.count()).select_from(Record)) == 60
