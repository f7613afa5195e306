"""Which constraint refused a write, as each backend's driver reports it, and what the client
is told."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from service.constraints import COUNTRY_NAME, RECORD_KEY, violated_constraint
from service.db import Database
from service.errors import lost_a_race, translate_database_error
from service.settings import load_settings

COUNTRY = (
    "INSERT INTO countries (name, created_at, updated_at) "
    "VALUES (:name, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
)
RECORD = (
    "INSERT INTO records (country_id, date, cases, deaths, recoveries, version, created_at, "
    "updated_at) VALUES (:country_id, '2003-04-01', :cases, 0, 0, 1, CURRENT_TIMESTAMP, "
    "CURRENT_TIMESTAMP)"
)


async def _refusal(database_url: str, statements: list[tuple[str, dict[str, Any]]]) -> Any:
    async with (
        Database(load_settings({"DATABASE_URL": database_url})) as db,
        db.session_scope() as session,
    ):
        with pytest.raises(IntegrityError) as refused:
            for statement, values in statements:
                await session.execute(text(statement), values)
        return refused.value


async def test_a_repeated_country_name_names_its_constraint(database_url: str) -> None:
    error = await _refusal(database_url, [(COUNTRY, {"name": "A"}), (COUNTRY, {"name": "A"})])
    assert violated_constraint(error) == COUNTRY_NAME
    problem = translate_database_error(error)
    assert problem is not None
    assert (problem.status, problem.detail) == (409, "a country with this name exists already")


async def test_a_repeated_record_key_names_its_constraint(database_url: str) -> None:
    country = [(COUNTRY, {"name": "A"})]
    record = (RECORD, {"country_id": 1, "cases": 1})
    error = await _refusal(database_url, [*country, record, record])
    assert violated_constraint(error) == RECORD_KEY
    assert not lost_a_race(error)


async def test_other_integrity_errors_name_no_unique_constraint(
    database_url: str, backend: str
) -> None:
    negative = await _refusal(
        database_url, [(COUNTRY, {"name": "A"}), (RECORD, {"country_id": 1, "cases": -1})]
    )
    assert violated_constraint(negative) is None
    problem = translate_database_error(negative)
    assert problem is not None and "uniqueness" not in (problem.detail or "")

    missing = await _refusal(database_url, [(RECORD, {"country_id": 999, "cases": 1})])
    assert violated_constraint(missing) is None
    # PostgreSQL's foreign_key_violation is a race lost to a delete (the service checks the
    # row first); SQLite runs one writer at a time, so there it can only be a bug.
    assert lost_a_race(missing) == (backend == "postgresql")
