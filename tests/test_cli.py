"""The ``db`` commands (Alembic, the Flask-Migrate way), run as real ``quart`` subprocesses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from service.db import Database
from service.settings import load_settings
from tests.databases import Databases

REPO_ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = REPO_ROOT / "migrations"
pytestmark = pytest.mark.e2e


def run_command(
    *args: str, database_url: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``args`` (a command line) from the repo root with DATABASE_URL set."""
    env = {**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"}
    return subprocess.run(
        list(args),
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def quart(*args: str, database_url: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``quart --app service.app ARGS`` against ``database_url``."""
    command = (sys.executable, "-m", "quart", "--app", "service.app", *args)
    return run_command(*command, database_url=database_url, timeout=timeout)


def succeeded(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def _versions() -> set[str]:
    return {path.name for path in (MIGRATIONS / "versions").glob("*.py")}


@pytest.fixture
def migrations_copy(tmp_path: Path) -> Path:
    """A copy of the migrations folder: revisions written by a test never reach the repo."""
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


async def test_current_heads_and_history_name_the_revision(database_url: str) -> None:
    current = succeeded(quart("db", "current", database_url=database_url))
    heads = succeeded(quart("db", "heads", database_url=database_url))
    history = succeeded(quart("db", "history", database_url=database_url))

    assert current.stdout.strip() == "0001 (head)"
    assert heads.stdout.strip() == "0001 (head)"
    assert history.stdout.strip() == "<base> -> 0001 (head), initial schema"


async def test_check_passes_on_a_migrated_database(database_url: str) -> None:
    result = succeeded(quart("db", "check", database_url=database_url))

    assert "No new upgrade operations detected" in result.stdout


async def test_check_fails_on_an_unmigrated_database(databases: Databases) -> None:
    url = await databases.create(migrated=False)
    try:
        result = quart("db", "check", database_url=url)
    finally:
        await databases.drop(url)

    assert result.returncode != 0
    assert "Target database is not up to date" in result.stderr


async def test_downgrade_to_base_and_upgrade_round_trip(database_url: str) -> None:
    succeeded(quart("db", "downgrade", "base", database_url=database_url))
    after_downgrade = succeeded(quart("db", "current", database_url=database_url))
    succeeded(quart("db", "upgrade", database_url=database_url))  # default: head
    check = quart("db", "check", database_url=database_url)  # at head, and no drift

    assert after_downgrade.stdout.strip() == ""
    assert check.returncode == 0, check.stderr


async def test_downgrade_defaults_to_one_step_and_stamp_records_a_revision(
    database_url: str,
) -> None:
    succeeded(quart("db", "downgrade", database_url=database_url))  # default: -1
    after_downgrade = succeeded(quart("db", "current", database_url=database_url))
    succeeded(quart("db", "stamp", "head", database_url=database_url))
    after_stamp = succeeded(quart("db", "current", database_url=database_url))

    assert after_downgrade.stdout.strip() == ""
    # stamp records the revision without running it: the tables are still missing.
    assert after_stamp.stdout.strip() == "0001 (head)"


async def test_migrate_refuses_to_write_an_empty_revision(
    database_url: str, migrations_copy: Path
) -> None:
    before = _versions()

    result = quart(
        "db", "migrate", "-d", str(migrations_copy), "-m", "nothing", database_url=database_url
    )

    assert result.returncode != 0
    assert "no changes detected" in result.stderr
    assert "no revision was written" in result.stderr
    assert sorted(p.name for p in (migrations_copy / "versions").glob("*.py")) == [
        "0001_initial_schema.py"
    ]
    assert _versions() == before


async def test_check_and_migrate_see_drift(database_url: str, migrations_copy: Path) -> None:
    # A database at head whose schema lost an index: the models and it disagree.
    async with Database(load_settings({"DATABASE_URL": database_url})) as db:
        async with db.session_scope(commit=True) as session:
            await session.execute(text("DROP INDEX ix_records_cases_id"))
    before = _versions()

    check = quart("db", "check", database_url=database_url)
    migrate = quart(
        "db", "migrate", "-d", str(migrations_copy), "-m", "restore", database_url=database_url
    )

    assert check.returncode != 0
    assert "ix_records_cases_id" in check.stderr
    assert migrate.returncode == 0, migrate.stderr
    written = [p for p in (migrations_copy / "versions").glob("*.py") if "restore" in p.name]
    assert len(written) == 1
    assert "ix_records_cases_id" in written[0].read_text()
    assert _versions() == before


async def test_revision_writes_a_hand_written_revision(
    database_url: str, migrations_copy: Path
) -> None:
    directory = str(migrations_copy)
    succeeded(
        quart("db", "revision", "-d", directory, "-m", "by hand", "--rev-id", "0002",
              database_url=database_url)
    )  # fmt: skip
    heads = succeeded(quart("db", "heads", "-d", directory, database_url=database_url))

    assert heads.stdout.strip() == "0002 (head)"
    assert len(list((migrations_copy / "versions").glob("*0002_by_hand.py"))) == 1


async def test_plain_alembic_still_works_from_the_repo_root(database_url: str) -> None:
    alembic = Path(sys.executable).with_name("alembic")
    result = succeeded(run_command(str(alembic), "current", database_url=database_url))

    assert result.stdout.strip() == "0001 (head)"


def test_the_commands_are_on_the_app() -> None:
    result = succeeded(quart("--help", database_url="sqlite+aiosqlite:///unused.db"))

    for command in ("db", "load-data", "generate-data"):
        assert command in result.stdout
