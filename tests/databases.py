"""Throwaway databases for tests: one migrated template per backend, copied per test."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def in_a_thread(function: Callable[[], T]) -> T:
    """``function()`` run in a thread of its own, joined before returning.

    The session-wide databases are made with ``asyncio.run`` (Alembic's async env.py, the admin
    connections), which leaves the calling thread with no event loop: done in the thread of
    whichever test first asks for them, it took the event loop from under an async test.
    """
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(function())
        except BaseException as error:  # handed to the caller
            failure.append(error)

    thread = threading.Thread(target=run, name="test-databases")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


def alembic_config(database_url: str) -> Config:
    """An Alembic config for ``database_url`` that leaves the test run's logging alone."""
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", database_url)
    config.attributes["configure_logging"] = False
    return config


def migrate(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


@dataclass
class SQLiteDatabases:
    """SQLite files under one directory; a copy of the migrated template is a fresh database."""

    directory: Path
    template: Path = field(init=False)
    name = "sqlite"

    def __post_init__(self) -> None:
        self.template = self.directory / "template.db"
        migrate(self.url(self.template))
        shared = self.directory / "shared.db"
        shutil.copyfile(self.template, shared)
        self.shared_url = self.url(shared)

    @staticmethod
    def url(path: Path) -> str:
        return f"sqlite+aiosqlite:///{path}"

    async def create(self, migrated: bool = True) -> str:
        path = self.directory / f"{uuid.uuid4().hex}.db"
        if migrated:
            shutil.copyfile(self.template, path)
        return self.url(path)

    async def drop(self, url: str) -> None:
        database = make_url(url).database
        assert database
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(database + suffix).unlink(missing_ok=True)  # noqa: ASYNC240 - tiny local files

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class PostgresDatabases:
    """Databases on the test server; ``CREATE DATABASE ... TEMPLATE`` copies the migrated one."""

    admin_url: str = POSTGRES_URL
    prefix: str = field(default_factory=lambda: f"sars_test_{uuid.uuid4().hex[:8]}")
    name = "postgresql"

    def __post_init__(self) -> None:
        self.template = f"{self.prefix}_template"
        asyncio.run(self._admin(f'CREATE DATABASE "{self.template}"'))
        migrate(self.url(self.template))
        self.shared_url = asyncio.run(self.create())

    def url(self, database: str) -> str:
        url = make_url(self.admin_url).set(drivername="postgresql+asyncpg", database=database)
        return url.render_as_string(hide_password=False)

    async def _admin(self, *statements: str) -> None:
        dsn = make_url(self.admin_url).set(drivername="postgresql").render_as_string(False)
        connection = await asyncpg.connect(dsn)
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()

    async def create(self, migrated: bool = True) -> str:
        database = f"{self.prefix}_{uuid.uuid4().hex[:12]}"
        template = f' TEMPLATE "{self.template}"' if migrated else ""
        await self._admin(f'CREATE DATABASE "{database}"{template}')
        return self.url(database)

    async def drop(self, url: str) -> None:
        database = make_url(url).database
        await self._admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    def close(self) -> None:
        asyncio.run(self.drop(self.shared_url))
        asyncio.run(self._admin(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)'))


Databases = SQLiteDatabases | PostgresDatabases


@asynccontextmanager
async def fresh_database(databases: Databases) -> AsyncIterator[str]:
    """A fresh, migrated database of its own for the block, dropped after it."""
    url = await databases.create()
    try:
        yield url
    finally:
        await databases.drop(url)
