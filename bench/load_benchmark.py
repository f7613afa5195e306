"""Benchmark: the bulk CSV loader (``load_csv``, skip mode) against a naive ORM loader.

Not a test: it prints figures. It generates a synthetic CSV (1,000,000 rows by default), then
on PostgreSQL (a fresh database it creates and drops) and on SQLite (a temporary file) times

- ``bulk``: ``service.load.load_csv(db, csv, "skip", batch_size)``, and
- ``naive``: one ``session.add`` + ``flush`` per row, one commit at the end (the classic
  anti-pattern), on the first ``--naive-rows`` rows since it is slow,

and prints rows per second and the ratio of the two. Run it from the repo root::

    .venv/bin/python bench/load_benchmark.py [--rows 1000000] [--naive-rows 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import itertools
import math
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from service.db import Database
from service.generate import generate_rows, write_csv
from service.load import load_csv
from service.models import Country, Record
from service.settings import load_settings

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DAYS = 1000


@dataclass
class Measurement:
    backend: str
    loader: str
    rows: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else math.inf


# -- databases ----------------------------------------------------------------------------------


def _migrate(database_url: str) -> None:
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["configure_logging"] = False
    command.upgrade(config, "head")


class PostgresDatabases:
    """Fresh databases on the server of ``admin_url``, dropped afterwards."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.created: list[str] = []

    async def _admin(self, statement: str) -> None:
        dsn = make_url(self.admin_url).set(drivername="postgresql")
        connection = await asyncpg.connect(dsn.render_as_string(hide_password=False))
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    def create(self) -> str:
        name = f"sars_bench_{uuid.uuid4().hex[:12]}"
        asyncio.run(self._admin(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        url = make_url(self.admin_url).set(drivername="postgresql+asyncpg", database=name)
        rendered = url.render_as_string(hide_password=False)
        _migrate(rendered)
        return rendered

    def drop_all(self) -> None:
        for name in self.created:
            asyncio.run(self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.created.clear()


class SQLiteDatabases:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def create(self) -> str:
        url = f"sqlite+aiosqlite:///{self.directory / f'{uuid.uuid4().hex}.db'}"
        _migrate(url)
        return url

    def drop_all(self) -> None:
        pass  # the temporary directory goes as a whole


# -- the loaders --------------------------------------------------------------------------------


async def _count(db: Database) -> int:
    async with db.session_scope(writes=False) as session:
        return int(await session.scalar(select(func.count()).select_from(Record)) or 0)


async def bulk_load(database_url: str, path: Path, batch_size: int) -> tuple[int, float]:
    """Rows stored and seconds taken by load_csv in skip mode."""
    async with Database(load_settings({"DATABASE_URL": database_url})) as db:
        started = time.perf_counter()
        report = await load_csv(db, path, "skip", batch_size)
        seconds = time.perf_counter() - started
        assert report.ok and report.created == await _count(db), report.summary()
        return report.created, seconds


async def naive_load(database_url: str, path: Path) -> tuple[int, float]:
    """Rows stored and seconds taken by one ORM object, one flush per row."""
    async with Database(load_settings({"DATABASE_URL": database_url})) as db:
        started = time.perf_counter()
        async with db.session_scope() as session:
            countries: dict[str, Country] = {}
            with path.open(encoding="utf-8-sig", newline="") as file:
                for line in csv.DictReader(file):
                    country = countries.get(line["country"])
                    if country is None:
                        country = Country(name=line["country"])
                        session.add(country)
                        await session.flush()
                        countries[country.name] = country
                    session.add(
                        Record(
                            country_id=country.id,
                            date=dt.date.fromisoformat(line["date"]),
                            cases=int(line["cases"]),
                            deaths=int(line["deaths"]),
                            recoveries=int(line["recoveries"]),
                        )
                    )
                    await session.flush()
            await session.commit()
        seconds = time.perf_counter() - started
        return await _count(db), seconds


# -- the run ------------------------------------------------------------------------------------


def _generate(path: Path, rows: int) -> None:
    countries = max(1, math.ceil(rows / DAYS))
    days = min(DAYS, rows)
    write_csv(itertools.islice(generate_rows(countries, days, seed=2003), rows), path)


def _table(measurements: list[Measurement]) -> str:
    naive = {m.backend: m.rate for m in measurements if m.loader == "naive"}
    lines = [
        f"{'backend':<11} {'loader':<6} {'rows':>10} {'seconds':>9} {'rows/s':>10} {'ratio':>7}"
    ]
    for m in measurements:
        base = naive.get(m.backend)
        ratio = f"{m.rate / base:.1f}x" if base else "-"
        lines.append(
            f"{m.backend:<11} {m.loader:<6} {m.rows:>10,} {m.seconds:>9.2f} "
            f"{m.rate:>10,.0f} {ratio:>7}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows for the bulk loader")
    parser.add_argument("--naive-rows", type=int, default=20_000, help="rows for the naive one")
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument(
        "--backends", default="postgresql,sqlite", help="comma-separated: postgresql,sqlite"
    )
    args = parser.parse_args(argv)

    measurements: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="sars-bench-") as tmp:
        directory = Path(tmp)
        big, small = directory / "bulk.csv", directory / "naive.csv"
        started = time.perf_counter()
        _generate(big, args.rows)
        _generate(small, min(args.naive_rows, args.rows))
        print(f"generated {args.rows:,} rows in {time.perf_counter() - started:.1f} s", flush=True)
        for backend in args.backends.split(","):
            databases: PostgresDatabases | SQLiteDatabases = (
                PostgresDatabases(args.postgres_url)
                if backend == "postgresql"
                else SQLiteDatabases(directory)
            )
            try:
                rows, seconds = asyncio.run(bulk_load(databases.create(), big, args.batch_size))
                measurements.append(Measurement(backend, "bulk", rows, seconds))
                print(f"{backend} bulk: {rows:,} rows in {seconds:.1f} s", flush=True)
                rows, seconds = asyncio.run(naive_load(databases.create(), small))
                measurements.append(Measurement(backend, "naive", rows, seconds))
                print(f"{backend} naive: {rows:,} rows in {seconds:.1f} s", flush=True)
            finally:
                databases.drop_all()
    print()
    print(_table(measurements))


if __name__ == "__main__":
    main()
