"""The command line: options shared by ``load-data`` and ``python -m service.load``, progress
on the console, and what a load's outcome prints."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO, TypeVar

import click
from sqlalchemy.exc import SQLAlchemyError

from service.db import Database
from service.load.loading import load_csv
from service.load.report import DEFAULT_BATCH_SIZE, MODES, LoadReport, Progress
from service.load.source import LoadError
from service.queries.bulk import ConflictMode
from service.settings import ConfigError, load_settings

EXIT_INTERRUPTED = 130
_Command = TypeVar("_Command", bound=Callable[..., Any])


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
