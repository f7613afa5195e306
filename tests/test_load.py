"""The CSV loader: parsing, the three conflict modes, the real data file, progress, Ctrl-C."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import itertools
import os
import re
import signal
import sys
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from service.db import Database
from service.generate import generate_rows, write_csv
from service.load import (
    MAX_LISTED_PROBLEMS,
    ConsoleProgress,
    CsvSource,
    LoadError,
    LoadReport,
    Problem,
    Progress,
    load_csv,
)
from service.models import Country, Record
from service.settings import load_settings
from tests.test_cli import REPO_ROOT, quart, run_command

SARS_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "sars_2003.csv"
HEADER = "date,country,cases,deaths,recoveries\n"


@pytest.fixture
def sars_csv() -> Path:
    if not SARS_CSV.is_file():
        pytest.skip(f"the WHO SARS data set is not at {SARS_CSV} (../shared/data of the repo)")
    return SARS_CSV


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with Database(load_settings({"DATABASE_URL": database_url})) as database:
        yield database


async def _stored(db: Database) -> list[tuple[str, dt.date, int, int, int]]:
    async with db.session_scope(writes=False) as session:
        rows = await session.execute(
            select(Country.name, Record.date, Record.cases, Record.deaths, Record.recoveries)
            .join(Country)
            .order_by(Record.id)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


async def _record_count(db: Database) -> int:
    async with db.session_scope(writes=False) as session:
        return int(await session.scalar(select(func.count()).select_from(Record)) or 0)


def _write(tmp_path: Path, content: str | bytes, name: str = "data.csv") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


# -- reading ------------------------------------------------------------------------------------


def test_reads_bom_quoted_commas_extra_columns_and_crlf(tmp_path: Path) -> None:
    content = (
        "\ufeffcountry,date,cases,deaths,recoveries,source\r\n"
        '"Hong Kong SAR, China",2003-03-17,95,1,0,WHO\r\n'
        "\r\n"
        "  Canada  ,2003-03-17,8,2,0\r\n"
    )
    rows = list(CsvSource(_write(tmp_path, content.encode("utf-8"))).rows())

    assert [(line, row.country, row.date, row.cases) for line, row, _ in rows if row] == [
        (2, "Hong Kong SAR, China", dt.date(2003, 3, 17), 95),
        (4, "Canada", dt.date(2003, 3, 17), 8),
    ]


def test_each_bad_line_gets_its_physical_line_number_and_reason(tmp_path: Path) -> None:
    long_name = "X" * 101
    content = HEADER + (
        "2003-02-30,Canada,1,0,0\n"  # 2
        "2003-03-17,Canada,-1,0,0\n"  # 3
        "2003-03-17,Canada,1.5,0,0\n"  # 4
        "2003-03-17,Canada,2147483648,0,0\n"  # 5
        "2003-03-17,Canada,1,0\n"  # 6
        f"2003-03-17,{long_name},1,0,0\n"  # 7
        "2003-03-17,   ,1,0,0\n"  # 8
        '2003-03-17,"Multi\nline",1,0,0\n'  # 9-10: a quoted name spanning two lines
        "2003-03-17,Canada,,0,0\n"  # 11
        "17/03/2003,Canada,1,0,0\n"  # 12
        "2003-03-18,Canada,2147483647,0,0\n"  # 13: the largest count is fine
    )
    problems = {line: reason for line, row, reason in CsvSource(_write(tmp_path, content)).rows()}

    assert problems == {
        2: "date '2003-02-30' is not a YYYY-MM-DD date",
        3: "cases -1 is negative",
        4: "cases '1.5' is not a whole number",
        5: "cases 2147483648 is above the maximum 2147483647",
        6: "missing field(s): recoveries",
        7: "country is 101 characters long; the most is 100",
        8: "country is empty",
        9: "country contains control characters",
        11: "cases is empty",
        12: "date '17/03/2003' is not a YYYY-MM-DD date",
        13: None,
    }


def test_undecodable_bytes_and_broken_quotes_are_problems_of_their_line(tmp_path: Path) -> None:
    content = HEADER.encode() + b"2003-03-17,Can\xffada,1,0,0\n" + b'2003-03-17,"Canada"x,1,0,0\n'
    content += b"2003-03-18,Canada,1,0,0\n"
    rows = list(CsvSource(_write(tmp_path, content)).rows())

    assert [(line, reason) for line, _, reason in rows] == [
        (2, "country is not valid UTF-8"),
        (3, "malformed CSV (',' expected after '\"')"),
        (4, None),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty; it needs the header date,country,cases,deaths,recoveries"),
        ("2003-03-17,Canada,1,0,0\n", "line 1: no header"),
        ("date,country,cases\n", "line 1: the header lacks deaths, recoveries"),
        ("date,date,country,cases,deaths,recoveries\n", "names date more than once"),
    ],
)
def test_a_missing_or_unknown_header_is_an_error(
    tmp_path: Path, content: str, message: str
) -> None:
    with pytest.raises(LoadError, match=re.escape(message)):
        list(CsvSource(_write(tmp_path, content)).rows())


def test_console_progress_prints_lines_when_not_on_a_terminal() -> None:
    stream = io.StringIO()
    progress = ConsoleProgress("big.csv", stream=stream, delay=0, every_rows=100)

    for rows in (50, 100, 150, 260):
        progress(Progress("loading", rows * 10, 2600, rows, rows - 10))

    assert stream.getvalue().splitlines() == [
        "big.csv: loading: 100 rows read, 90 committed (38%)",
        "big.csv: loading: 260 rows read, 250 committed (100%)",
    ]


def test_console_progress_draws_a_bar_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    progress = ConsoleProgress("big.csv", stream=stream, delay=0)
    progress(Progress("loading", 50, 100, 5, 0))
    progress(Progress("loading", 100, 100, 10, 10))
    progress.close()

    assert "big.csv: loading" in stream.getvalue()
    assert "100%" in stream.getvalue()


# -- loading, in process ------------------------------------------------------------------------


BAD_AND_GOOD = HEADER + (
    "2003-03-17,Canada,8,2,0\n"  # 2
    "2003-03-17,Germany,-1,0,0\n"  # 3: bad
    '2003-03-17,"Hong Kong SAR, China",95,1,0\n'  # 4
    "2003-03-18,Canada,9,2,1\n"  # 5
    "2003-03-17,Canada,10,2,0\n"  # 6: the key of line 2 again
)


async def test_error_mode_writes_nothing_and_names_every_problem(
    db: Database, tmp_path: Path
) -> None:
    report = await load_csv(db, _write(tmp_path, BAD_AND_GOOD), "error")

    assert report.problems == [
        Problem(3, "cases -1 is negative"),
        Problem(6, "duplicate key (Canada, 2003-03-17): line 2 has the same country and date"),
    ]
    assert (report.read, report.created, report.rejected) == (5, 0, 2)
    assert await _stored(db) == []


async def test_error_mode_lists_a_bounded_number_of_repeats(db: Database, tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER + "2003-03-17,Canada,8,2,0\n" * (MAX_LISTED_PROBLEMS + 6))

    report = await load_csv(db, path, "error")

    assert (report.read, report.rejected) == (MAX_LISTED_PROBLEMS + 6, MAX_LISTED_PROBLEMS + 5)
    assert len(report.problems) == MAX_LISTED_PROBLEMS
    assert report.unlisted_problems == 5
    assert report.problems[0] == Problem(
        3, "duplicate key (Canada, 2003-03-17): line 2 has the same country and date"
    )
    assert await _record_count(db) == 0


async def test_error_mode_refuses_keys_stored_already(db: Database, tmp_path: Path) -> None:
    first = _write(tmp_path, HEADER + "2003-03-17,Canada,8,2,0\n", "first.csv")
    assert (await load_csv(db, first, "error")).created == 1
    second = _write(tmp_path, HEADER + "2003-03-18,Canada,9,2,0\n2003-03-17,Canada,8,2,0\n")

    report = await load_csv(db, second, "error")

    assert len(report.problems) == 1
    assert report.problems[0].line == 3
    assert report.problems[0].reason.startswith("(Canada, 2003-03-17) is stored already")
    assert await _record_count(db) == 1


async def test_error_mode_writes_a_clean_file_in_batches(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "clean.csv"
    write_csv(generate_rows(7, 10, seed=1), path)

    report = await load_csv(db, path, "error", batch_size=8)

    assert report.ok
    assert (report.read, report.created) == (70, 70)
    assert await _record_count(db) == 70


async def test_skip_mode_loads_the_valid_rows_and_lists_the_rest(
    db: Database, tmp_path: Path
) -> None:
    report = await load_csv(db, _write(tmp_path, BAD_AND_GOOD), "skip", batch_size=2)

    assert report.summary() == "read 5 / created 3 / updated 0 / skipped 1 / rejected 1"
    assert report.problems == [Problem(3, "cases -1 is negative")]
    assert await _stored(db) == [
        ("Canada", dt.date(2003, 3, 17), 8, 2, 0),  # the first of the repeated key
        ("Hong Kong SAR, China", dt.date(2003, 3, 17), 95, 1, 0),
        ("Canada", dt.date(2003, 3, 18), 9, 2, 1),
    ]


async def test_update_mode_overwrites_and_the_last_repeat_wins(
    db: Database, tmp_path: Path
) -> None:
    await load_csv(db, _write(tmp_path, HEADER + "2003-03-17,Canada,1,0,0\n", "a.csv"), "skip")

    report = await load_csv(db, _write(tmp_path, BAD_AND_GOOD), "update")

    assert report.summary() == "read 5 / created 2 / updated 1 / skipped 1 / rejected 1"
    assert ("Canada", dt.date(2003, 3, 17), 10, 2, 0) in await _stored(db)


async def test_checking_a_file_keeps_keys_not_rows(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    rows = write_csv(generate_rows(100, 400, seed=2), path)  # 40,000 rows, 1.3 MB
    with path.open("a") as file:
        file.write("2003-03-17,Late,-5,0,0\n")  # a bad last line: nothing is written

    tracemalloc.start()
    try:
        report = await load_csv(db, path, "error")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert (report.read, report.rejected, report.created) == (rows + 1, 1, 0)
    # 40,000 rows as RecordRow objects alone would take > 8 MB.
    assert peak < 6_000_000, f"peak {peak:,} bytes"


# -- the real data set, through the real commands -----------------------------------------------


@pytest.mark.e2e
async def test_the_sars_file_loads_as_the_contract_says(
    database_url: str, db: Database, sars_csv: Path
) -> None:
    refused = quart("load-data", str(sars_csv), database_url=database_url)
    assert refused.returncode == 1
    assert (
        "line 385: duplicate key (China, 2003-04-12): line 367 has the same country and date"
        in refused.stdout.splitlines()
    )
    assert "nothing written" in refused.stdout
    assert await _record_count(db) == 0

    loaded = quart("load-data", str(sars_csv), "--on-conflict", "skip", database_url=database_url)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == (
        "read 2,538 / created 2,537 / updated 0 / skipped 1 / rejected 0"
    )
    assert await _record_count(db) == 2537

    again = run_command(
        sys.executable, "-m", "service.load", str(sars_csv), "--on-conflict", "skip",
        database_url=database_url,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == (
        "read 2,538 / created 0 / updated 0 / skipped 2,538 / rejected 0"
    )
    assert await _record_count(db) == 2537


@pytest.mark.e2e
async def test_python_m_service_load_reports_bad_lines_and_exits_1(
    database_url: str, db: Database, tmp_path: Path
) -> None:
    path = _write(tmp_path, BAD_AND_GOOD)

    result = run_command(
        sys.executable, "-m", "service.load", str(path), "--on-conflict", "skip",
        "--batch-size", "2", database_url=database_url,
    )  # fmt: skip

    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "line 3: cases -1 is negative",
        "read 5 / created 3 / updated 0 / skipped 1 / rejected 1",
    ]
    assert await _record_count(db) == 3


@pytest.mark.e2e
def test_a_file_without_a_header_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    path = _write(tmp_path, "2003-03-17,Canada,1,0,0\n")
    url = f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}"

    result = run_command(sys.executable, "-m", "service.load", str(path), database_url=url)

    assert result.returncode == 1
    assert "line 1: no header" in result.stderr


# -- interrupted --------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.sqlite_only
async def test_ctrl_c_rolls_back_the_batch_in_flight_and_a_rerun_finishes(
    database_url: str, db: Database, tmp_path: Path
) -> None:
    path = tmp_path / "big.csv"
    total = write_csv(itertools.islice(generate_rows(500, 1000, seed=3), 100_000), path)
    batch_size = 1000
    command = [
        sys.executable, "-m", "service.load", str(path), "--on-conflict", "skip",
        "--batch-size", str(batch_size),
    ]  # fmt: skip
    env = {**os.environ, "DATABASE_URL": database_url}
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=REPO_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # Python only turns SIGINT into KeyboardInterrupt if it is not ignored when it starts.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert process.stderr is not None
        async with asyncio.timeout(60):
            first_line = (await process.stderr.readline()).decode()  # the first progress line
            assert "rows read" in first_line, first_line
            process.send_signal(signal.SIGINT)
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    stdout, stderr = out.decode(), err.decode()

    assert process.returncode == 130, f"{stdout}\n{stderr}"
    match = re.search(r"interrupted: ([\d,]+) rows were committed", stderr)
    assert match, stderr
    assert "Rerun with --on-conflict skip to finish the job" in stderr
    committed = int(match.group(1).replace(",", ""))
    stored = await _record_count(db)
    assert stored == committed
    assert 0 < stored < total
    assert stored % batch_size == 0  # whole batches only: the one in flight was rolled back

    rerun = run_command(*command, database_url=database_url)

    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.strip() == (
        f"read {total:,} / created {total - stored:,} / updated 0 / "
        f"skipped {stored:,} / rejected 0"
    )
    assert await _record_count(db) == total


def test_load_report_counts_read_when_nothing_was_committed(tmp_path: Path) -> None:
    report = LoadReport(tmp_path / "x.csv", "skip")

    assert report.ok
    assert report.summary() == "read 0 / created 0 / updated 0 / skipped 0 / rejected 0"
