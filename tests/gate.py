"""A statement that blocks until the test releases it, on either backend.

PostgreSQL: the statement asks for a shared advisory lock that the test holds exclusively in
a connection of its own. SQLite: the statement calls a function that waits, in the
connection's thread, on an event the test sets. Either way the statement's connection stays
checked out for as long as the test wants, however slow the machine is.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import asyncpg
from sqlalchemy import TextClause, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry

from tests.waiting import HANG_GUARD_SECONDS, until


class StatementGate:
    """Shut, statements from :meth:`statement` block; open, they run and return 1."""

    def __init__(self, database_url: str) -> None:
        url = make_url(database_url)
        self.is_sqlite = url.get_backend_name() == "sqlite"
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.key = random.randrange(1, 2**31)
        self._open = threading.Event()
        self._open.set()
        self._blocked = 0  # SQLite: statements waiting in the function right now
        self._holder: Any = None  # PostgreSQL: the test's connection holding the lock

    def statement(self) -> TextClause:
        """The statement a blocked route runs."""
        if self.is_sqlite:
            return text("SELECT probe_gate()")
        return self.postgresql_statement().bindparams(key=self.key)

    @staticmethod
    def postgresql_statement() -> TextClause:
        """The PostgreSQL statement, its ``key`` parameter left to bind."""
        return text("SELECT 1 FROM (SELECT pg_advisory_xact_lock_shared(:key)) AS gate")

    def install(self, engine: AsyncEngine) -> None:
        """Give every SQLite connection of ``engine`` the gate's function (and a sleep)."""
        if self.is_sqlite:
            event.listen(engine.sync_engine, "checkout", self._register_functions)

    def _register_functions(
        self, dbapi_connection: Any, record: ConnectionPoolEntry, _: Any
    ) -> None:
        if record.info.get("probe_gate") is not self:
            dbapi_connection.create_function("probe_gate", 0, self.wait_in_thread)
            dbapi_connection.create_function("probe_sleep", 1, _sleep_in_thread)
            record.info["probe_gate"] = self

    def wait_in_thread(self) -> int:
        """The SQLite function: wait for the gate to open, in the connection's thread."""
        self._blocked += 1
        try:
            if not self._open.wait(HANG_GUARD_SECONDS):
                raise TimeoutError("the test never opened the gate")
        finally:
            self._blocked -= 1
        return 1

    async def shut(self) -> None:
        """Make the gate's statements block from now on."""
        if self.is_sqlite:
            self._open.clear()
            return
        self._holder = await asyncpg.connect(self._dsn)
        await self._holder.execute("SELECT pg_advisory_lock($1)", self.key)

    async def open(self) -> None:
        """Let every blocked statement run; idempotent."""
        self._open.set()
        if self._holder is not None:
            holder, self._holder = self._holder, None
            await holder.close()  # ends the session, and with it the lock

    async def blocked(self) -> int:
        """How many statements wait at the gate right now."""
        if self.is_sqlite:
            return self._blocked
        assert self._holder is not None, "the gate is open"
        count: int = await self._holder.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND classid = 0 AND objid = $1",
            self.key,
        )
        return count

    async def wait_until_blocked(self, count: int = 1) -> None:
        """Return once ``count`` statements wait at the gate."""

        async def enough() -> bool:
            return await self.blocked() >= count

        await until(enough, f"{count} statement(s) blocked at the gate")

    async def __aenter__(self) -> StatementGate:
        await self.shut()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.open()


def _sleep_in_thread(seconds: float) -> int:
    """SQLite's pg_sleep: holds the connection without using the CPU."""
    time.sleep(seconds)
    return 1
