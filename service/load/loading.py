"""The entry point of a load: check (``error`` mode) or stream, then write."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from service.collector import fewer_collections
from service.db import Database
from service.load.checking import check_file
from service.load.report import DEFAULT_BATCH_SIZE, MODES, LoadReport, ProgressCallback
from service.load.source import CsvSource
from service.load.writing import write_all_or_nothing, write_rows
from service.queries.bulk import ConflictMode, RecordRow


async def load_csv(
    db: Database,
    path: Path,
    mode: ConflictMode = "error",
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: ProgressCallback | None = None,
    *,
    report: LoadReport | None = None,
) -> LoadReport:
    """Load the CSV at ``path``; ``service.load`` says what each mode does.

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
            check_file(source, report, batch_size, progress)
            if report.ok:
                await write_all_or_nothing(db, source, report, batch_size, progress)
        else:
            rows = _valid_rows(source.rows(), report)
            await write_rows(db, rows, mode, batch_size, report, source=source, progress=progress)
    report.problems.sort()
    return report


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
