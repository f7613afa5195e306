"""Pass 1 of ``error`` mode: every bad row and key repeated in the file (stored keys: pass 2)."""

from __future__ import annotations

from service.load.report import MAX_LISTED_PROBLEMS, LoadReport, ProgressCallback, notify
from service.load.source import CsvSource
from service.queries.bulk import RecordRow

# A (country, date) key packed in one int: a country's index in this load, then the day.
_DAY_BITS = 22  # date.max.toordinal() < 2**22


class KeyChecker:
    """Finds keys repeated in the file (memory: one int per row).

    Keys stored already are not looked up here: the write pass finds them, by the database's
    unique constraint (a look now would miss what another writer stores before the write).
    """

    def __init__(self) -> None:
        self.country_index: dict[str, int] = {}
        self.seen: set[int] = set()
        self.repeated: dict[int, list[int]] = {}  # key -> lines repeating it (capped)
        self.listed_repeats = 0

    def key(self, row: RecordRow) -> int:
        assert row.country is not None
        index = self.country_index.setdefault(row.country, len(self.country_index))
        return (index << _DAY_BITS) | row.date.toordinal()

    def add(self, line: int, row: RecordRow, report: LoadReport) -> None:
        key = self.key(row)
        if key not in self.seen:
            self.seen.add(key)
            return
        report.rejected += 1
        if self.listed_repeats < MAX_LISTED_PROBLEMS:
            self.repeated.setdefault(key, []).append(line)
            self.listed_repeats += 1
        else:
            report.unlisted_problems += 1


def check_file(
    source: CsvSource,
    report: LoadReport,
    batch_size: int,
    progress: ProgressCallback | None,
) -> None:
    """Pass 1 of ``error`` mode: every bad row and repeated key goes into ``report``."""
    checker = KeyChecker()
    for line, row, reason in source.rows():
        report.read += 1
        if row is None:
            report.rejected += 1
            report.add_problem(line, reason or "invalid")
        else:
            checker.add(line, row, report)
        if report.read % batch_size == 0:
            notify(progress, "checking", source, report, report.read)
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
