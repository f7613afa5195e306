"""What a load did and how far it has got: the report, its problems, progress snapshots."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from service.queries.bulk import ConflictMode

MODES: tuple[ConflictMode, ...] = ("error", "skip", "update")
DEFAULT_BATCH_SIZE = 5000
# Problems kept (and listed) per load; the rest are counted. A file that is wrong on every
# line needs fixing at its source, not a million-line report.
MAX_LISTED_PROBLEMS = 1000


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


class Measured(Protocol):
    """A source that knows how far it has got."""

    @property
    def position(self) -> int: ...

    @property
    def size(self) -> int: ...


def notify(
    progress: ProgressCallback | None,
    phase: str,
    source: Measured,
    report: LoadReport,
    rows: int,
) -> None:
    """Tell ``progress`` (if any) where the load stands."""
    if progress is not None:
        progress(Progress(phase, source.position, source.size, rows, report.committed_rows))
