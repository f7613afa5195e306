"""Reading and validating the CSV file: one ``(line, row, reason)`` per data line, streamed."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import sys
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

from service.models import MAX_COUNT, NAME_LENGTH
from service.queries.bulk import RecordRow

COLUMNS = ("date", "country", "cases", "deaths", "recoveries")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
_Item = TypeVar("_Item")


class LoadError(Exception):
    """The file cannot be loaded at all: missing, unreadable, empty, or without the header."""


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
