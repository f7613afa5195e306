"""What the tests read straight from the database: contents, checksums, backends; seed data."""

from __future__ import annotations

import sqlite3
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from service.db import Database
from service.generate import generate_rows, write_database
from service.settings import load_settings

# Every table of the service and the order that makes its checksum deterministic.
TABLES = {
    "countries": "id",
    "records": "id",
    "sources": "id",
    "record_sources": "record_id, source_id",
}


def dsn(database_url: str) -> str:
    """The libpq form of a postgresql+asyncpg URL, for asyncpg.connect."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def database_name(database_url: str) -> str:
    name = make_url(database_url).database
    assert name
    return name


async def fetch(database_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn(database_url))
    try:
        rows: list[asyncpg.Record] = await connection.fetch(query, *args)
        return rows
    finally:
        await connection.close()


async def fetchval(database_url: str, query: str, *args: Any) -> Any:
    connection = await asyncpg.connect(dsn(database_url))
    try:
        return await connection.fetchval(query, *args)
    finally:
        await connection.close()


async def checksums(database_url: str) -> dict[str, tuple[int, str]]:
    """(row count, md5 of every row in order) of each table."""
    result: dict[str, tuple[int, str]] = {}
    connection = await asyncpg.connect(dsn(database_url))
    try:
        for table, order in TABLES.items():
            row = await connection.fetchrow(
                f"SELECT count(*) AS n, coalesce(md5(string_agg(t::text, '|' ORDER BY {order})),"
                f" '') AS digest FROM {table} t"
            )
            result[table] = (row["n"], row["digest"])
    finally:
        await connection.close()
    return result


async def backends(database_url: str, where: str = "true") -> int:
    """Connections to the database other than this one that match ``where``."""
    count: int = await fetchval(
        database_url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        f" AND pid <> pg_backend_pid() AND ({where})",
    )
    return count


async def idle_in_transaction(database_url: str) -> int:
    return await backends(database_url, "state LIKE 'idle in transaction%'")


async def terminate_backends(database_url: str) -> int:
    """pg_terminate_backend every other connection to the database; how many there were."""
    count: int = await fetchval(
        database_url,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    return count


async def seed(database_url: str, countries: int, days: int, seed: int = 2003) -> int:
    """Write ``countries * days`` generated daily reports; returns how many rows."""
    async with Database(load_settings({"DATABASE_URL": database_url})) as db:
        report = await write_database(
            db, generate_rows(countries, days, seed=seed), countries * days
        )
    return report.created


def sqlite_query(database_url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of ``query`` on the SQLite file of ``database_url`` (read in this process)."""
    path = make_url(database_url).database
    assert path
    connection = sqlite3.connect(path)
    try:
        return connection.execute(query, args).fetchall()
    finally:
        connection.close()
