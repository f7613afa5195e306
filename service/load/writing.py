"""Writing batches: ``skip``/``update`` in committed batches, ``error`` in one transaction."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable, Iterator
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from service.db import Database
from service.load.report import LoadReport, Measured, ProgressCallback, notify
from service.load.source import CsvSource
from service.queries.bulk import BulkOutcome, ConflictMode, RecordRow, bulk_write
from service.transactions import run_transaction

_Item = TypeVar("_Item")


async def _commit(session: AsyncSession) -> None:
    """Commit; a cancellation arriving meanwhile waits for the commit, so counts stay exact.

    A commit cancelled half-way may or may not have happened on the server; letting it finish
    means a batch is either committed and counted, or rolled back and not.
    """
    committing = asyncio.ensure_future(session.commit())
    try:
        await asyncio.shield(committing)
    except asyncio.CancelledError:
        await asyncio.wait([committing])
        committing.result()
        raise


async def write_rows(
    db: Database,
    rows: Iterable[RecordRow],
    mode: ConflictMode,
    batch_size: int,
    report: LoadReport,
    *,
    source: Measured,
    progress: ProgressCallback | None = None,
) -> None:
    """Write ``rows`` with ``bulk_write`` in batches, committing each (``skip``/``update``).

    The file is parsed in a task of its own while this one writes: the database works on one
    batch while Python parses the next, so the two cores are busy at once.
    """
    assert mode != "error", "error mode writes all or nothing, see load_csv"
    batches = _BatchPipe()
    parsing = asyncio.create_task(batches.fill(rows, batch_size))
    try:
        async with db.session_scope() as session:
            while (batch := await batches.get()) is not None:
                await _write_batch(session, batch, mode, report, db.settings.DB_WRITE_ATTEMPTS)
                notify(progress, "loading", source, report, report.read)
        await parsing  # re-raises what stopped the parsing, if anything did
    finally:
        parsing.cancel()


class _BatchPipe:
    """Batches from a parsing task to the writing one, at most two ahead (flat memory)."""

    AHEAD = 2
    YIELD_EVERY = 256  # rows parsed between turns given to the writer (its next statement)

    def __init__(self) -> None:
        self._queue: asyncio.Queue[list[RecordRow] | None] = asyncio.Queue()
        self._room = asyncio.Semaphore(self.AHEAD)

    async def fill(self, rows: Iterable[RecordRow], size: int) -> None:
        try:
            batch: list[RecordRow] = []
            for row in rows:
                batch.append(row)
                if len(batch) % self.YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                if len(batch) == size:
                    await self._put(batch)
                    batch = []
            if batch:
                await self._put(batch)
        finally:
            self._queue.put_nowait(None)  # the end, whether parsing finished or failed

    async def _put(self, batch: list[RecordRow]) -> None:
        await self._room.acquire()
        self._queue.put_nowait(batch)

    async def get(self) -> list[RecordRow] | None:
        batch = await self._queue.get()
        if batch is not None:
            self._room.release()
        return batch


async def _write_batch(
    session: AsyncSession,
    batch: list[RecordRow],
    mode: ConflictMode,
    report: LoadReport,
    attempts: int,
) -> None:
    async def write() -> BulkOutcome:
        outcome = await bulk_write(session, batch, mode)
        await _commit(session)
        return outcome

    outcome = await run_transaction(session, write, attempts=attempts)
    report.created += outcome.created
    report.updated += outcome.updated
    report.skipped += outcome.skipped
    report.committed_rows += len(batch)
    report.committed_batches += 1


def _batches(items: Iterable[_Item], size: int) -> Iterator[list[_Item]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


async def write_all_or_nothing(
    db: Database,
    source: CsvSource,
    report: LoadReport,
    batch_size: int,
    progress: ProgressCallback | None,
) -> None:
    """Pass 2 of ``error`` mode: one transaction, committed only if no row met a stored key.

    After a batch meets stored keys the pass goes on (writing nothing in the end) to name
    every such line; a transaction that loses a race with another writer runs again.
    """
    async with db.session_scope() as session:

        async def write_all() -> tuple[int, int, list[tuple[int, RecordRow]]]:
            created = written = 0
            stored: list[tuple[int, RecordRow]] = []
            numbered = ((line, row) for line, row, _ in source.rows() if row is not None)
            for batch in _batches(numbered, batch_size):
                outcome = await bulk_write(session, [row for _, row in batch], "error")
                stored += [batch[index] for index in outcome.conflicts]
                created += outcome.created
                written += len(batch)
                notify(progress, "loading", source, report, written)
            if not stored:
                await _commit(session)
            return created, written, stored

        attempts = db.settings.DB_WRITE_ATTEMPTS
        created, written, stored = await run_transaction(session, write_all, attempts=attempts)
    for line, row in stored:
        report.rejected += 1
        report.add_problem(
            line,
            f"({row.country}, {row.date.isoformat()}) is stored already; "
            "use --on-conflict skip or update",
        )
    if not stored:
        report.created = created
        report.committed_rows = written
        report.committed_batches = 1
