"""Statistics queries, computed in SQL.

The reports are cumulative, so a country's figures are those of its latest report, and a
total is a sum over countries of each one's latest figures.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Row, and_, cast, func, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from service.models import Record
from service.queries.countries import get_country

FIGURES = ("cases", "deaths", "recoveries")


def _sum(column: ColumnElement[Any], name: str) -> ColumnElement[int]:
    """SUM as a BigInteger (whatever the backend widens it to), 0 over no rows."""
    return cast(func.coalesce(func.sum(column), 0), BigInteger).label(name)


def _change(column: ColumnElement[int], name: str) -> ColumnElement[int]:
    """A report's figure minus the same country's previous one (0 before its first)."""
    previous = func.lag(column, 1, 0).over(partition_by=Record.country_id, order_by=Record.date)
    return (column - previous).label(name)


async def overall_totals(session: AsyncSession) -> Row[Any]:
    """Countries with records, record count, date span, and the sum of latest figures."""
    latest_dates = (
        select(Record.country_id, func.max(Record.date).label("date"))
        .group_by(Record.country_id)
        .subquery("latest_dates")
    )
    latest = (
        select(
            func.count().label("countries"),
            *(_sum(getattr(Record, name), name) for name in FIGURES),
        )
        .select_from(latest_dates)
        .join(
            Record,
            and_(
                Record.country_id == latest_dates.c.country_id, Record.date == latest_dates.c.date
            ),
        )
        .subquery("latest")
    )
    span = select(
        func.count().label("records"),
        func.min(Record.date).label("first_date"),
        func.max(Record.date).label("last_date"),
    ).subquery("span")
    # Two one-row aggregates side by side, read in one statement so that they agree.
    statement = select(
        latest.c.countries,
        span.c.records,
        span.c.first_date,
        span.c.last_date,
        *(latest.c[name] for name in FIGURES),
    ).select_from(latest.join(span, true()))
    return (await session.execute(statement)).one()


async def country_summary(session: AsyncSession, country_id: int) -> dict[str, Any]:
    """One country's report count, date span and latest figures; 404 if it does not exist."""
    country = await get_country(session, country_id)
    span = (
        select(
            func.count().label("reports"),
            func.min(Record.date).label("first_date"),
            func.max(Record.date).label("last_date"),
        )
        .where(Record.country_id == country_id)
        .subquery("span")
    )
    # The span is one row even without reports; the outer join then finds no latest record.
    statement = select(
        span.c.reports,
        span.c.first_date,
        span.c.last_date,
        *(func.coalesce(getattr(Record, name), 0).label(name) for name in FIGURES),
    ).select_from(
        span.outerjoin(
            Record, and_(Record.country_id == country_id, Record.date == span.c.last_date)
        )
    )
    figures = (await session.execute(statement)).one()
    return {"country_id": country.id, "country": country.name, **figures._asdict()}


async def daily_totals(
    session: AsyncSession,
    *,
    country_id: int | None = None,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
) -> Sequence[Row[Any]]:
    """Per report date in range, the sum over countries of each one's latest figures.

    Each report becomes its change from the country's previous one (LAG), the changes are
    summed per date, and a running SUM over dates adds them up: a country that did not
    report on a date carries its earlier figures, one that has not reported yet adds 0.
    One sort of the records, O(N log N), instead of a join of dates with records.
    """
    changes = select(Record.date, *(_change(getattr(Record, name), name) for name in FIGURES))
    if country_id is not None:
        changes = changes.where(Record.country_id == country_id)
    if date_to is not None:
        # Later reports change nothing up to date_to; earlier ones must stay (carry-forward).
        changes = changes.where(Record.date <= date_to)
    changed = changes.subquery("changes")
    per_date = (
        select(changed.c.date, *(func.sum(changed.c[name]).label(name) for name in FIGURES))
        .group_by(changed.c.date)
        .subquery("per_date")
    )
    running = select(
        per_date.c.date,
        *(
            cast(func.sum(per_date.c[name]).over(order_by=per_date.c.date), BigInteger).label(name)
            for name in FIGURES
        ),
    ).subquery("running")
    # date_from filters after the running sum, so reports before it still count.
    statement = select(running).order_by(running.c.date)
    if date_from is not None:
        statement = statement.where(running.c.date >= date_from)
    return (await session.execute(statement)).all()
