"""Pass 1 of ``error`` mode: every bad row, key repeated in the file or stored already."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.db import Database
from service.load.report import MAX_LISTED_PROBLEMS, LoadReport, ProgressCallback, notify
from service.load.source import CsvSource
from service.models import Country, Record
from service.queries.bulk import RecordRow
from service.queries.records import existing_keys

# A (country, date) key packed in one int: a country's index in this load, then the day.
_DAY_BITS = 22  # date.max.toordinal() < 2**22


class KeyChecker:
    """Finds keys repeated in the file (memory: one int per row) and keys stored already."""

    def __init__(self, session: AsyncSession, batch_size: int) -> None:
        self.session = session
        self.batch_size = batch_size
        self.country_index: dict[str, int] = {}
        self.seen: set[int] = set()
        self.repeated: dict[int, list[int]] = {}  # key -> lines repeating it (capped)
        self.listed_repeats = 0
        self.stored_ids: dict[str, int] = {}
        self.pending: list[tuple[int, int, dt.date, str]] = []  # (line, country_id, date, name)

    async def start(self) -> None:
        if await self.session.scalar(select(Record.id).limit(1)) is None:
            return  # nothing stored: no key can conflict with the database
        rows = await self.session.execute(select(Country.name, Country.id))
        self.stored_ids = {row.name: row.id for row in rows}

    def key(self, row: RecordRow) -> int:
        assert row.country is not None
        index = self.country_index.setdefault(row.country, len(self.country_index))
        return (index << _DAY_BITS) | row.date.toordinal()

    async def add(self, line: int, row: RecordRow, report: LoadReport) -> None:
        key = self.key(row)
        if key in self.seen:
            report.rejected += 1
            if self.listed_repeats < MAX_LISTED_PROBLEMS:
                self.repeated.setdefault(key, []).append(line)
                self.listed_repeats += 1
            else:
                report.unlisted_problems += 1
            return
        self.seen.add(key)
        assert row.country is not None
        country_id = self.stored_ids.get(row.country)
        if country_id is not None:
            self.pending.append((line, country_id, row.date, row.country))
            if len(self.pending) >= self.batch_size:
                await self.flush(report)

    async def flush(self, report: LoadReport) -> None:
        """Report the pending keys that are stored already."""
        pending, self.pending = self.pending, []
        stored = await existing_keys(self.session, [(cid, date) for _, cid, date, _ in pending])
        for line, country_id, date, name in pending:
            if (country_id, date) in stored:
                report.rejected += 1
                report.add_problem(
                    line,
                    f"({name}, {date.isoformat()}) is stored already (record "
                    f"{stored[(country_id, date)]}); use --on-conflict skip or update",
                )


async def check_file(
    db: Database,
    source: CsvSource,
    report: LoadReport,
    batch_size: int,
    progress: ProgressCallback | None,
) -> None:
    """Pass 1 of ``error`` mode: every bad row and conflicting key goes into ``report``."""
    async with db.session_scope(writes=False) as session:
        checker = KeyChecker(session, batch_size)
        await checker.start()
        for line, row, reason in source.rows():
            report.read += 1
            if row is None:
                report.rejected += 1
                report.add_problem(line, reason or "invalid")
            else:
                await checker.add(line, row, report)
            if report.read % batch_size == 0:
                notify(progress, "checking", source, report, report.read)
        await checker.flush(report)
    if checker.repeated:
        report_repeats(source, checker, report)


def report_repeats(source: CsvSource, checker: KeyChecker, report: LoadReport) -> None:
    """Name the first line of each repeated key: one more pass, keeping only those keys."""
    first_lines: dict[int, tuple[int, RecordRow]] = {}
    for line, row, _ in source.rows():
        if row is not None:
            key = checker.key(row)
            if key in checker.repeated and key not in first_lines:
                first_lines[key] = (line, row)
                if len(first_lines) == len(checker.repeated):
                    break
    for key, lines in checker.repeated.items():
        first, row = first_lines[key]
        for line in lines:
            report.add_problem(
                line,
                f"duplicate key ({row.country}, {row.date.isoformat()}): "
                f"line {first} has the same country and date",
            )
