"""Alembic environment: async, URL from the service's settings, batch mode on SQLite."""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from service.db import create_engine
from service.logs import configure_logging
from service.models import Base
from service.settings import settings_or_exit

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    if settings_or_exit().LOG_FORMAT == "json":
        # One JSON object a line, as the service logs (the compose stack's `migrate`).
        configure_logging(settings_or_exit())
    else:
        fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _configure(connection: Connection | None = None, url: str | None = None) -> None:
    dialect = connection.dialect.name if connection is not None else (url or "").split(":")[0]
    context.configure(
        connection=connection,
        url=url,
        target_metadata=target_metadata,
        render_as_batch=dialect.startswith("sqlite"),
        # The engine emits BEGIN itself on SQLite too, so DDL is transactional on both backends.
        transactional_ddl=True,
        compare_type=True,
        literal_binds=connection is None,
    )


def _run_sync(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


# One connection, and none of the request timeouts: building an index or rewriting a table
# may take minutes, and a migration that waits for a lock waits for the traffic to drain.
_MIGRATION_SETTINGS = {
    "DB_POOL_SIZE": 1,
    "DB_STATEMENT_TIMEOUT": 0,
    "DB_LOCK_TIMEOUT": 0,
    "DB_COMMAND_TIMEOUT": 0,
}


def _database_url() -> str:
    """The URL given to this Alembic run (tests, the CLI), else the service's DATABASE_URL."""
    return config.get_main_option("sqlalchemy.url") or settings_or_exit().DATABASE_URL


async def _run_online() -> None:
    engine = create_engine(
        settings_or_exit({"DATABASE_URL": _database_url(), **_MIGRATION_SETTINGS})
    )
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_sync)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    _configure(url=_database_url())
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_sync(connection)
    else:
        asyncio.run(_run_online())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
