"""Load a CSV of daily reports (``date,country,cases,deaths,recoveries``) through the bulk path.

- ``error`` (the default): the whole file is checked first (bad rows, keys repeated in the file
  or stored already); any problem writes nothing. A clean file is written in one transaction.
- ``skip`` / ``update``: valid rows are written in batches through
  :func:`service.queries.bulk.bulk_write`, each batch committed on its own, so an interruption
  loses at most the batch in flight; bad rows are rejected and listed.

Run it as ``python -m service.load FILE.csv`` or ``quart --app service.app load-data FILE.csv``.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import itertools
import re
import sys
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, TextIO, TypeVar

import click
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from service.collector import fewer_collections
from service.db import Database
from service.models import MAX_COUNT, NAME_LENGTH, Country, Record
from service.queries.bulk import ConflictMode, RecordRow, bulk_write
from service.queries.records import existing_keys
from service.settings import ConfigError, load_settings

COLUMNS = ("date", "country", "cases", "deaths", "recoveries")
MODES: tuple[ConflictMode, ...] = ("error", "skip", "update")
DEFAULT_BATCH_SIZE = 5000
# Problems kept (and listed) per load; the rest are counted. A file that is wrong on every
# line needs fixing at its source, not a million-line report.
MAX_LISTED_PROBLEMS = 1000
EXIT_INTERRUPTED = 130
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
# A (country, date) key packed in one int: a country's index in this load, then the day.
_DAY_BITS = 22  # date.max.toordinal() < 2**22


class LoadError(Exception):
    """The file cannot be loaded at all: missing, unreadable, empty, or without the header."""


@dataclass(frozen=True, order=True)
class Problem:
    """A line that cannot be loaded, and why."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class LoadReport:
    """What a load did. Counts cover committed batches only, so they stay true if it stops."""

    path: Path
    mode: ConflictMode
    batch_size: int = DEFAULT_BATCH_SIZE
    read: int = 0
    created: int = 0
    updated: int = 0
    skipped: int = 0
    rejected: int = 0
    committed_rows: int = 0
    committed_batches: int = 0
    problems: list[Problem] = field(default_factory=list)
    unlisted_problems: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems and not self.unlisted_problems

    def add_problem(self, line: int, reason: str) -> None:
        if len(self.problems) < MAX_LISTED_PROBLEMS:
            self.problems.append(Problem(line, reason))
        else:
            self.unlisted_problems += 1

    def summary(self) -> str:
        return (
            f"read {self.read:,} / created {self.created:,} / updated {self.updated:,} / "
            f"skipped {self.skipped:,} / rejected {self.rejected:,}"
        )


@dataclass(frozen=True)
class Progress:
    """A snapshot for progress displays: ``done`` of ``total`` units (a file's bytes, or rows)."""

    phase: str
    done: int
    total: int
    rows: int
    committed: int


ProgressCallback = Callable[[Progress], None]
_Command = TypeVar("_Command", bound=Callable[..., Any])
_Item = TypeVar("_Item")


class Measured(Protocol):
    """A source that knows how far it has got."""

    @property
    def position(self) -> int: ...

    @property
    def size(self) -> int: ...


# -- reading the file ---------------------------------------------------------------------------


class CsvSource:
    """The rows of a CSV file, read as a stream: ``(line, row, reason)`` per data line.

    ``line`` is the physical line the record starts on (the header is line 1); ``row`` is None
    when the line is invalid, and ``reason`` then says why.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.size = path.stat().st_size
        except OSError as error:
            raise LoadError(f"cannot read {path}: {error.strerror or error}") from None
        self._raw: IO[bytes] | None = None
        self._names: dict[str, str | None] = {}
        self._dates: dict[str, dt.date | None] = {}
        self.check_header()

    def check_header(self) -> None:
        """Raise LoadError now if the file cannot be read or lacks the header."""
        rows = self.rows()
        try:
            next(rows, None)
        finally:
            rows.close()

    @property
    def position(self) -> int:
        return self._raw.tell() if self._raw is not None and not self._raw.closed else 0

    @contextmanager
    def _open(self) -> Iterator[Any]:
        try:
            raw = self.path.open("rb")
        except OSError as error:
            raise LoadError(f"cannot read {self.path}: {error.strerror or error}") from None
        self._raw = raw
        # Undecodable bytes become lone surrogates, found per line instead of ending the load.
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
        try:
            yield csv.reader(text, strict=True)
        finally:
            text.close()

    def rows(self) -> Generator[tuple[int, RecordRow | None, str | None]]:
        with self._open() as reader:
            try:
                header = next(reader, None)
            except csv.Error as error:
                raise LoadError(f"line 1: malformed CSV header ({error})") from None
            positions = self._positions(header)
            wanted = max(positions) + 1
            previous_line = reader.line_num
            while True:
                try:
                    fields = next(reader)
                except StopIteration:
                    return
                except csv.Error as error:
                    # The reader drops the rest of the bad record and goes on with the next.
                    yield previous_line + 1, None, f"malformed CSV ({error})"
                    previous_line = reader.line_num
                    continue
                line = previous_line + 1
                previous_line = reader.line_num
                if not fields:
                    continue  # a blank line
                if len(fields) < wanted:
                    missing = [COLUMNS[i] for i, at in enumerate(positions) if at >= len(fields)]
                    yield line, None, f"missing field(s): {', '.join(missing)}"
                    continue
                row, reason = self._parse([fields[at] for at in positions])
                yield line, row, reason

    def _positions(self, header: list[str] | None) -> list[int]:
        expected = ",".join(COLUMNS)
        if header is None:
            raise LoadError(f"{self.path} is empty; it needs the header {expected}")
        names = [name.strip().lower() for name in header]
        if not set(COLUMNS) & set(names):
            raise LoadError(f"line 1: no header; the first line must name the columns {expected}")
        missing = [name for name in COLUMNS if name not in names]
        if missing:
            raise LoadError(
                f"line 1: the header lacks {', '.join(missing)} (it must name {expected}; "
                "other columns are ignored)"
            )
        repeated = sorted({name for name in COLUMNS if names.count(name) > 1})
        if repeated:
            raise LoadError(f"line 1: the header names {', '.join(repeated)} more than once")
        return [names.index(name) for name in COLUMNS]

    def _parse(self, fields: list[str]) -> tuple[RecordRow | None, str | None]:
        raw_date, raw_name, raw_cases, raw_deaths, raw_recoveries = fields
        reasons: list[str] = []
        date = self._date(raw_date, reasons)
        name = self._name(raw_name, reasons)
        cases = _count("cases", raw_cases, reasons)
        deaths = _count("deaths", raw_deaths, reasons)
        recoveries = _count("recoveries", raw_recoveries, reasons)
        if reasons:
            return None, "; ".join(reasons)
        assert date is not None and name is not None
        return RecordRow(
            date=date, country=name, cases=cases, deaths=deaths, recoveries=recoveries
        ), None

    def _date(self, raw: str, reasons: list[str]) -> dt.date | None:
        date = _parsed_once(self._dates, raw, _parse_date)
        if date is None:
            reasons.append(
                "date is empty" if not raw.strip() else f"date {raw!r} is not a YYYY-MM-DD date"
            )
        return date

    def _name(self, raw: str, reasons: list[str]) -> str | None:
        name = _parsed_once(self._names, raw, _valid_name)
        if name is None:
            reasons.append(_name_problem(raw))
        return name


def _parsed_once(cache: dict[str, _Item], raw: str, parse: Callable[[str], _Item]) -> _Item:
    """``parse(raw)``, remembered: dates and names repeat on every line of a day, so each
    distinct spelling is parsed once (up to 100,000 of them)."""
    try:
        return cache[raw]
    except KeyError:
        value = parse(raw)
        if len(cache) < 100_000:
            cache[raw] = value
        return value


def _parse_date(raw: str) -> dt.date | None:
    text = raw.strip()
    if len(text) != 10 or text[4] != "-" or text[7] != "-" or not text.isascii():
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return None


def _valid_name(raw: str) -> str | None:
    name = raw.strip()
    if not 1 <= len(name) <= NAME_LENGTH or _CONTROL_CHARACTERS.search(name):
        return None
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return sys.intern(name)


def _name_problem(raw: str) -> str:
    name = raw.strip()
    if not name:
        return "country is empty"
    if len(name) > NAME_LENGTH:
        return f"country is {len(name)} characters long; the most is {NAME_LENGTH}"
    if _CONTROL_CHARACTERS.search(name):
        return "country contains control characters"
    return "country is not valid UTF-8"


def _count(column: str, raw: str, reasons: list[str]) -> int:
    text = raw.strip()
    if text.isdigit() and text.isascii():
        value = int(text)
        if value <= MAX_COUNT:
            return value
        reasons.append(f"{column} {value} is above the maximum {MAX_COUNT}")
    elif not text:
        reasons.append(f"{column} is empty")
    elif text[0] == "-" and text[1:].isdigit() and text[1:].isascii():
        reasons.append(f"{column} {text} is negative")
    else:
        reasons.append(f"{column} {raw!r} is not a whole number")
    return 0


# -- writing ------------------------------------------------------------------------------------


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


def _notify(
    progress: ProgressCallback | None,
    phase: str,
    source: Measured,
    report: LoadReport,
    rows: int,
) -> None:
    if progress is not None:
        progress(Progress(phase, source.position, source.size, rows, report.committed_rows))


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
                await _write_batch(session, batch, mode, report)
                _notify(progress, "loading", source, report, report.read)
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
    session: AsyncSession, batch: list[RecordRow], mode: ConflictMode, report: LoadReport
) -> None:
    outcome = await bulk_write(session, batch, mode)
    await _commit(session)
    report.created += outcome.created
    report.updated += outcome.updated
    report.skipped += outcome.skipped
    report.committed_rows += len(batch)
    report.committed_batches += 1


def _batches(items: Iterable[_Item], size: int) -> Iterator[list[_Item]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def _valid_rows(
    numbered: Iterable[tuple[int, RecordRow | None, str | None]], report: LoadReport
) -> Iterator[RecordRow]:
    """The valid rows; invalid ones are counted and listed in ``report``."""
    for line, row, reason in numbered:
        report.read += 1
        if row is None:
            report.rejected += 1
            report.add_problem(line, reason or "invalid")
        else:
            yield row


# -- error mode: check everything, then write all or nothing ------------------------------------


class _KeyChecker:
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


async def _check_file(
    db: Database,
    source: CsvSource,
    report: LoadReport,
    batch_size: int,
    progress: ProgressCallback | None,
) -> None:
    """Pass 1 of ``error`` mode: every bad row and conflicting key goes into ``report``."""
    async with db.session_scope(writes=False) as session:
        checker = _KeyChecker(session, batch_size)
        await checker.start()
        for line, row, reason in source.rows():
            report.read += 1
            if row is None:
                report.rejected += 1
                report.add_problem(line, reason or "invalid")
            else:
                await checker.add(line, row, report)
            if report.read % batch_size == 0:
                _notify(progress, "checking", source, report, report.read)
        await checker.flush(report)
    if checker.repeated:
        _report_repeats(source, checker, report)


def _report_repeats(source: CsvSource, checker: _KeyChecker, report: LoadReport) -> None:
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


async def _write_all_or_nothing(
    db: Database,
    source: CsvSource,
    report: LoadReport,
    batch_size: int,
    progress: ProgressCallback | None,
) -> None:
    """Pass 2 of ``error`` mode: one transaction, committed only if every batch went in."""
    created = written = 0
    numbered = ((line, row) for line, row, _ in source.rows() if row is not None)
    async with db.session_scope() as session:
        for batch in _batches(numbered, batch_size):
            outcome = await bulk_write(session, [row for _, row in batch], "error")
            if outcome.conflicts:  # stored by someone else since the check: write nothing
                for index in outcome.conflicts:
                    line, row = batch[index]
                    report.rejected += 1
                    report.add_problem(
                        line,
                        f"({row.country}, {row.date.isoformat()}) was stored by someone else "
                        "meanwhile",
                    )
                return
            created += outcome.created
            written += len(batch)
            _notify(progress, "loading", source, report, written)
        await _commit(session)
    report.created = created
    report.committed_rows = written
    report.committed_batches = 1


# -- the entry point ----------------------------------------------------------------------------


async def load_csv(
    db: Database,
    path: Path,
    mode: ConflictMode = "error",
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: ProgressCallback | None = None,
    *,
    report: LoadReport | None = None,
) -> LoadReport:
    """Load the CSV at ``path``; see the module docstring for what each mode does.

    Pass your own ``report`` to read the counts of what was committed even if the load is
    cancelled part-way (they are updated after each commit). Raises LoadError when the file
    cannot be read at all.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    report = report or LoadReport(path, mode, batch_size)
    source = CsvSource(path)
    with fewer_collections():
        if mode == "error":
            await _check_file(db, source, report, batch_size, progress)
            if report.ok:
                await _write_all_or_nothing(db, source, report, batch_size, progress)
        else:
            rows = _valid_rows(source.rows(), report)
            await write_rows(db, rows, mode, batch_size, report, source=source, progress=progress)
    report.problems.sort()
    return report


# -- the command line ---------------------------------------------------------------------------


class ConsoleProgress:
    """Progress on stderr for loads that last over a second: a bar on a terminal, else lines.

    Lines come every ``every_rows`` rows or ``every_seconds`` seconds, whichever is first.
    """

    def __init__(
        self,
        label: str,
        *,
        stream: TextIO | None = None,
        delay: float = 1.0,
        every_rows: int = 50_000,
        every_seconds: float = 2.0,
    ) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty()
        self.delay = delay
        self.every_rows = every_rows
        self.every_seconds = every_seconds
        self.started = time.monotonic()
        self._last_time = self.started
        self._last_rows = 0
        self._phase: str | None = None
        self._bar: Any = None
        self._bar_done = 0

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        if progress.phase != self._phase and not self.interactive:
            self._phase, self._last_rows = progress.phase, 0
        if now - self.started < self.delay:
            return
        if self.interactive:
            self._advance_bar(progress)
            return
        if (
            progress.rows - self._last_rows >= self.every_rows
            or now - self._last_time >= self.every_seconds
        ):
            self._last_rows, self._last_time = progress.rows, now
            share = f" ({100 * progress.done / progress.total:.0f}%)" if progress.total else ""
            print(
                f"{self.label}: {progress.phase}: {progress.rows:,} rows read, "
                f"{progress.committed:,} committed{share}",
                file=self.stream,
                flush=True,
            )

    def _advance_bar(self, progress: Progress) -> None:
        if progress.phase != self._phase:
            self.close()
            self._phase = progress.phase
            self._bar = click.progressbar(
                length=max(progress.total, 1),
                label=f"{self.label}: {progress.phase}",
                file=self.stream,
            )
            self._bar.__enter__()
            self._bar_done = 0
        step = max(progress.done - self._bar_done, 0)
        self._bar_done += step
        self._bar.update(step)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def on_conflict_option(
    default: ConflictMode, modes: Iterable[str] = MODES
) -> Callable[[_Command], _Command]:
    return click.option(
        "--on-conflict",
        "mode",
        type=click.Choice(list(modes)),
        default=default,
        show_default=True,
        help="What to do with a (country, date) stored already or repeated in the file.",
    )


def batch_size_option() -> Callable[[_Command], _Command]:
    return click.option(
        "--batch-size",
        type=click.IntRange(1, 100_000),
        default=DEFAULT_BATCH_SIZE,
        show_default=True,
        help="Rows per bulk write (and per commit, with skip or update).",
    )


def load_arguments(command: _Command) -> _Command:
    """The arguments shared by ``load-data`` and ``python -m service.load``."""
    command = batch_size_option()(command)
    command = on_conflict_option("error")(command)
    file_argument = click.argument(
        "file", type=click.Path(exists=True, dir_okay=False, path_type=Path)
    )
    return file_argument(command)


def run_load(db: Database, path: Path, mode: ConflictMode, batch_size: int) -> int:
    """Load ``path`` and print what happened; returns the exit status (0, 1, or 130)."""
    report = LoadReport(path, mode, batch_size)
    progress = ConsoleProgress(path.name)

    async def load() -> LoadReport:
        async with db:  # disposes the engine, also when interrupted
            return await load_csv(db, path, mode, batch_size, progress, report=report)

    try:
        asyncio.run(load())
    except KeyboardInterrupt:
        progress.close()
        click.echo(interrupted_message(report), err=True)
        return EXIT_INTERRUPTED
    except LoadError as error:
        progress.close()
        click.echo(f"Error: {error}", err=True)
        return 1
    except (SQLAlchemyError, OSError) as error:
        progress.close()
        click.echo(f"Error: database error: {first_line(error)}", err=True)
        click.echo(
            f"{report.summary()}; {report.committed_rows:,} rows were committed before it",
            err=True,
        )
        return 1
    progress.close()
    for problem in report.problems:
        click.echo(str(problem))
    if report.unlisted_problems:
        click.echo(f"... and {report.unlisted_problems:,} more problem line(s), not listed")
    if mode == "error" and not report.ok:
        click.echo(
            f"{report.summary()}; nothing written (--on-conflict error): fix the lines above, "
            "or load with --on-conflict skip or update"
        )
    else:
        click.echo(report.summary())
    return 0 if report.ok else 1


def first_line(error: BaseException) -> str:
    """The first line of an error's message (database errors go on with SQL and links)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else repr(error)


def interrupted_message(report: LoadReport) -> str:
    """What was kept of an interrupted load, and how to finish it."""
    if report.mode == "error":
        return (
            "interrupted: nothing was committed (--on-conflict error writes all or nothing); "
            "rerun the same command to load the file"
        )
    return (
        f"interrupted: {report.committed_rows:,} rows were committed "
        f"({report.committed_batches:,} batches of up to {report.batch_size:,}: "
        f"created {report.created:,}, updated {report.updated:,}, skipped {report.skipped:,}); "
        "the batch in flight was rolled back. "
        f"Rerun with --on-conflict {report.mode} to finish the job."
    )


@click.command(name="python -m service.load")
@load_arguments
def main(file: Path, mode: ConflictMode, batch_size: int) -> None:
    """Load FILE (CSV: date,country,cases,deaths,recoveries) into DATABASE_URL."""
    try:
        settings = load_settings()
    except ConfigError as error:
        raise click.ClickException(f"configuration error: {error}") from None
    sys.exit(run_load(Database(settings), file, mode, batch_size))


if __name__ == "__main__":
    main()
