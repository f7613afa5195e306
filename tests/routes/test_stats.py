"""Statistics: totals, one country's summary and the daily series, with hand-computed values."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from service.db import get_database
from service.models import Country, Record
from service.queries import stats as queries

# Country A reports on the 17th, 19th and 20th (not the 18th: it carries the 17th's figures),
# and its recoveries go down on the 20th (a correction: the latest report wins, not the
# largest). B reports on the 18th, 19th and 21st. C has no reports at all.
REPORTS = {
    "A": [
        ("2003-03-17", 10, 1, 0),
        ("2003-03-19", 30, 3, 5),
        ("2003-03-20", 35, 4, 4),
    ],
    "B": [
        ("2003-03-18", 5, 0, 1),
        ("2003-03-19", 7, 1, 2),
        ("2003-03-21", 12, 2, 4),
    ],
    "C": [],
}

# Per date: A's latest + B's latest (0 before B's first report).
DAILY = [
    {"date": "2003-03-17", "cases": 10, "deaths": 1, "recoveries": 0},  # A17
    {"date": "2003-03-18", "cases": 15, "deaths": 1, "recoveries": 1},  # A17 + B18
    {"date": "2003-03-19", "cases": 37, "deaths": 4, "recoveries": 7},  # A19 + B19
    {"date": "2003-03-20", "cases": 42, "deaths": 5, "recoveries": 6},  # A20 + B19
    {"date": "2003-03-21", "cases": 47, "deaths": 6, "recoveries": 8},  # A20 + B21
]


async def insert(
    app: Quart, reports: dict[str, list[tuple[str, int, int, int]]]
) -> dict[str, int]:
    """Store countries and their reports through the ORM; return the country ids by name."""
    countries = {name: Country(name=f"Stats {name}") for name in reports}
    records = [
        Record(
            country=countries[name],
            date=dt.date.fromisoformat(date),
            cases=cases,
            deaths=deaths,
            recoveries=recoveries,
        )
        for name, rows in reports.items()
        for date, cases, deaths, recoveries in rows
    ]
    async with app.app_context():
        async with get_database(app).session_scope(commit=True) as session:
            session.add_all([*countries.values(), *records])
            await session.flush()
            return {name: country.id for name, country in countries.items()}


async def get_json(client: Client, url: str, status: int = 200) -> Any:
    response = await client.get(url)
    assert response.status_code == status, await response.get_data()
    return await response.get_json()


async def test_empty_database(client: Client) -> None:
    assert await get_json(client, "/stats") == {
        "countries": 0,
        "records": 0,
        "first_date": None,
        "last_date": None,
        "cases": 0,
        "deaths": 0,
        "recoveries": 0,
    }
    assert await get_json(client, "/stats/daily") == {"items": []}


async def test_totals_use_each_countrys_latest_report(app: Quart, client: Client) -> None:
    await insert(app, REPORTS)
    assert await get_json(client, "/stats") == {
        "countries": 2,
        "records": 6,
        "first_date": "2003-03-17",
        "last_date": "2003-03-21",
        "cases": 35 + 12,
        "deaths": 4 + 2,
        "recoveries": 4 + 4,
    }


async def test_daily_carries_figures_forward(app: Quart, client: Client) -> None:
    await insert(app, REPORTS)
    assert await get_json(client, "/stats/daily") == {"items": DAILY}
    assert await get_json(client, "/stats/daily/") == {"items": DAILY}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # Reports before date_from still count: A's 17th is carried into the 18th.
        ("date_from=2003-03-18&date_to=2003-03-20", DAILY[1:4]),
        ("date_from=2003-03-20", DAILY[3:]),
        ("date_to=2003-03-18", DAILY[:2]),
        ("date_from=2003-03-19&date_to=2003-03-19", DAILY[2:3]),
        # Bounds that are not report dates.
        ("date_from=2003-03-01&date_to=2003-03-17", DAILY[:1]),
        ("date_from=2003-03-22", []),
        ("date_to=2003-03-16", []),
    ],
)
async def test_daily_date_range(
    app: Quart, client: Client, query: str, expected: list[dict[str, Any]]
) -> None:
    await insert(app, REPORTS)
    assert await get_json(client, f"/stats/daily?{query}") == {"items": expected}


async def test_daily_for_one_country(app: Quart, client: Client) -> None:
    ids = await insert(app, REPORTS)
    a, b, c = ids["A"], ids["B"], ids["C"]
    # Only the selected country's report dates appear.
    assert (await get_json(client, f"/stats/daily?country_id={b}"))["items"] == [
        {"date": "2003-03-18", "cases": 5, "deaths": 0, "recoveries": 1},
        {"date": "2003-03-19", "cases": 7, "deaths": 1, "recoveries": 2},
        {"date": "2003-03-21", "cases": 12, "deaths": 2, "recoveries": 4},
    ]
    assert (await get_json(client, f"/stats/daily?country_id={a}&date_from=2003-03-18"))[
        "items"
    ] == [
        {"date": "2003-03-19", "cases": 30, "deaths": 3, "recoveries": 5},
        {"date": "2003-03-20", "cases": 35, "deaths": 4, "recoveries": 4},
    ]
    both_bounds = f"/stats/daily?country_id={b}&date_from=2003-03-20&date_to=2003-03-20"
    assert (await get_json(client, both_bounds))["items"] == []
    assert (await get_json(client, f"/stats/daily?country_id={c}"))["items"] == []
    assert (await get_json(client, "/stats/daily?country_id=999999"))["items"] == []


async def test_queries_return_ints_and_dates(app: Quart) -> None:
    await insert(app, REPORTS)
    async with app.app_context():
        async with get_database(app).session_scope(writes=False) as session:
            totals = await queries.overall_totals(session)
            daily = await queries.daily_totals(session, date_from=dt.date(2003, 3, 18))
    assert totals._asdict() == {
        "countries": 2,
        "records": 6,
        "first_date": dt.date(2003, 3, 17),
        "last_date": dt.date(2003, 3, 21),
        "cases": 47,
        "deaths": 6,
        "recoveries": 8,
    }
    assert all(type(totals._mapping[name]) is int for name in queries.FIGURES)
    assert [row.date for row in daily] == [dt.date(2003, 3, day) for day in (18, 19, 20, 21)]
    assert all(type(row._mapping[name]) is int for row in daily for name in queries.FIGURES)


async def test_country_summary(app: Quart, client: Client) -> None:
    ids = await insert(app, REPORTS)
    assert await get_json(client, f"/countries/{ids['A']}/summary") == {
        "country_id": ids["A"],
        "country": "Stats A",
        "reports": 3,
        "first_date": "2003-03-17",
        "last_date": "2003-03-20",
        "cases": 35,
        "deaths": 4,
        "recoveries": 4,
        "case_fatality_rate": 0.1143,  # 4 / 35 = 0.114285...
    }
    summary_b = await get_json(client, f"/countries/{ids['B']}/summary")
    assert summary_b["case_fatality_rate"] == 0.1667  # 2 / 12 = 0.16666...


async def test_country_summary_without_reports(app: Quart, client: Client) -> None:
    ids = await insert(app, {"C": []})
    assert await get_json(client, f"/countries/{ids['C']}/summary") == {
        "country_id": ids["C"],
        "country": "Stats C",
        "reports": 0,
        "first_date": None,
        "last_date": None,
        "cases": 0,
        "deaths": 0,
        "recoveries": 0,
        "case_fatality_rate": None,
    }


@pytest.mark.parametrize(
    ("cases", "deaths", "rate"),
    [
        (0, 0, None),  # no cases: no rate
        (32, 1, 0.0313),  # 0.03125: halves round up
        (3, 2, 0.6667),
        (7, 7, 1.0),
        (40000, 3, 0.0001),  # 0.000075
        (2147483647, 1, 0.0),
    ],
)
async def test_case_fatality_rate(
    app: Quart, client: Client, cases: int, deaths: int, rate: float | None
) -> None:
    ids = await insert(app, {"D": [("2003-04-01", cases, deaths, 0)]})
    summary = await get_json(client, f"/countries/{ids['D']}/summary")
    assert (summary["cases"], summary["deaths"], summary["case_fatality_rate"]) == (
        cases,
        deaths,
        rate,
    )


async def test_country_summary_of_unknown_country(client: Client) -> None:
    for path in ("/countries/999999/summary", "/countries/0/summary", "/countries/x/summary"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.headers["Content-Type"] == "application/problem+json"
        assert (await response.get_json())["status"] == 404


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("date_from=2003-13-01", "date_from"),
        ("date_from=2003-3-1", "date_from"),
        ("date_from=yesterday", "date_from"),
        ("date_from=2003-03-20&date_to=2003-03-19", "date_from"),
        ("date_to=2003-02-30", "date_to"),
        ("country_id=0", "country_id"),
        ("country_id=abc", "country_id"),
        ("country_id=2147483648", "country_id"),
    ],
)
async def test_daily_validation(client: Client, query: str, field: str) -> None:
    response = await client.get(f"/stats/daily?{query}")
    assert response.status_code == 422
    assert response.headers["Content-Type"] == "application/problem+json"
    body = await response.get_json()
    assert body["status"] == 422
    assert body["errors"][0]["field"] == field
