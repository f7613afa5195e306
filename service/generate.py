"""Synthetic daily reports for load tests: many countries, many days, epidemic-shaped curves.

Each country follows a logistic outbreak of its own (size, onset, growth, fatality rate drawn
from the seed); cases, deaths and recoveries are cumulative and never decrease, deaths lag
cases by a week and recoveries by three. The same seed always gives the same rows.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from service.db import Database
from service.load import DEFAULT_BATCH_SIZE, LoadReport, ProgressCallback, write_rows
from service.models import MAX_COUNT, NAME_LENGTH
from service.queries.bulk import ConflictMode, RecordRow

CSV_COLUMNS = ("date", "country", "cases", "deaths", "recoveries")
DEFAULT_SEED = 2003
DEFAULT_START = dt.date(2003, 3, 17)
DEATH_LAG_DAYS = 7
RECOVERY_LAG_DAYS = 21

_SYLLABLES = (
    "al", "ba", "cor", "da", "el", "fen", "gar", "ha", "is", "jor", "ka", "lor", "ma", "nor",
    "os", "pa", "quel", "ra", "sa", "tor", "ur", "va", "wen", "xan", "yor", "zu", "bel", "dor",
    "mir", "tan", "ves", "lin",
)  # fmt: skip
_SUFFIXES = ("ia", "land", "stan", "ovia", "ana", "ea", "ica", "ora", "esh", "ar")


@dataclass(frozen=True)
class _Outbreak:
    """One country's curve: final size, day of the midpoint, growth rate, fatality rate."""

    name: str
    size: float
    midpoint: float
    growth: float
    fatality: float
    noise: float

    def expected(self, day: float) -> float:
        exponent = -self.growth * (day - self.midpoint)
        if exponent > 700:  # exp() would overflow; the curve is 0 this far before it starts
            return 0.0
        return self.size / (1.0 + math.exp(exponent))


def country_names(count: int, rng: random.Random) -> list[str]:
    """``count`` distinct, pronounceable country names."""
    names: list[str] = []
    used: set[str] = set()
    while len(names) < count:
        stem = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3)))
        name = (stem + rng.choice(_SUFFIXES)).capitalize()
        if name in used:
            name = f"{name} {len(names) + 1}"
        if name not in used and len(name) <= NAME_LENGTH:
            used.add(name)
            names.append(name)
    return names


def _outbreaks(countries: int, days: int, rng: random.Random) -> list[_Outbreak]:
    outbreaks = []
    for name in country_names(countries, rng):
        growth = rng.uniform(0.06, 0.3)
        onset = rng.uniform(-0.2, 0.6) * days
        outbreaks.append(
            _Outbreak(
                name=name,
                size=min(math.exp(rng.gauss(5.5, 2.0)), MAX_COUNT / 2),
                # The curve climbs from ~1 % to ~99 % within 9/growth days of its onset.
                midpoint=onset + 4.6 / growth,
                growth=growth,
                fatality=rng.uniform(0.02, 0.17),
                noise=rng.uniform(0.1, 0.5),
            )
        )
    return outbreaks


def generate_rows(
    countries: int,
    days: int,
    *,
    seed: int = DEFAULT_SEED,
    start: dt.date = DEFAULT_START,
) -> Iterator[RecordRow]:
    """``countries * days`` daily reports, day by day, each country once a day."""
    if countries < 1 or days < 1:
        raise ValueError("countries and days must be at least 1")
    rng = random.Random(seed)
    outbreaks = _outbreaks(countries, days, rng)
    # Reported cases accumulate each day's expected new cases, scaled by that day's noise.
    reported = [0.0] * countries
    cases = [0] * countries
    deaths = [0] * countries
    recoveries = [0] * countries
    for day in range(days):
        date = start + dt.timedelta(days=day)
        for index, outbreak in enumerate(outbreaks):
            expected = outbreak.expected(day)
            new_cases = expected - outbreak.expected(day - 1)
            reported[index] += new_cases * max(0.0, rng.gauss(1.0, outbreak.noise))
            cases[index] = min(int(reported[index]), MAX_COUNT)
            if expected > 0:
                # Those who die (recover) were infected a week (three weeks) ago: the share
                # of today's cases that the curve had reached then. Hence deaths + recoveries
                # never exceed cases.
                dying = outbreak.expected(day - DEATH_LAG_DAYS) / expected
                healing = outbreak.expected(day - RECOVERY_LAG_DAYS) / expected
                dead = outbreak.fatality * dying * cases[index]
                healed = (1.0 - outbreak.fatality) * healing * cases[index]
                deaths[index] = max(deaths[index], int(dead))
                recoveries[index] = max(recoveries[index], int(healed))
            yield RecordRow(
                date=date,
                country=outbreak.name,
                cases=cases[index],
                deaths=deaths[index],
                recoveries=recoveries[index],
            )


def write_csv(rows: Iterable[RecordRow], path: Path) -> int:
    """Write ``rows`` as a CSV the loader reads (``date,country,cases,deaths,recoveries``)."""
    written = 0
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            writer.writerow(
                (row.date.isoformat(), row.country, row.cases, row.deaths, row.recoveries)
            )
            written += 1
    return written


class _Counted:
    """The generated rows, counted as they are taken (the progress of a database write)."""

    def __init__(self, rows: Iterable[RecordRow], total: int, report: LoadReport) -> None:
        self._rows = rows
        self._report = report
        self.position = 0
        self.size = total

    def __iter__(self) -> Iterator[RecordRow]:
        for row in self._rows:
            self.position += 1
            self._report.read += 1
            yield row


async def write_database(
    db: Database,
    rows: Iterable[RecordRow],
    total: int,
    mode: ConflictMode = "skip",
    batch_size: int = DEFAULT_BATCH_SIZE,
    report: LoadReport | None = None,
    progress: ProgressCallback | None = None,
) -> LoadReport:
    """Write generated ``rows`` (``total`` of them) through the loader's batched bulk path."""
    report = report or LoadReport(Path("<generated>"), mode, batch_size)
    counted = _Counted(rows, total, report)
    await write_rows(db, counted, mode, batch_size, report, source=counted, progress=progress)
    return report
