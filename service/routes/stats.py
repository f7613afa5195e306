"""Statistics: totals over every country, one country's summary, and the daily series."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import document_response, validate_querystring

from service.db import current_session
from service.queries import stats as queries
from service.schemas.stats import (
    CountrySummaryPublic,
    DailyStatsList,
    DailyStatsPublic,
    DailyStatsQuery,
    StatsPublic,
)

blueprint = Blueprint("stats", __name__)


@blueprint.get("/stats")
@document_response(StatsPublic)
async def overall_stats() -> StatsPublic:
    """Totals over every country, each counted with its latest report."""
    return StatsPublic.model_validate(await queries.overall_totals(current_session()))


@blueprint.get("/stats/daily")
@validate_querystring(DailyStatsQuery)
@document_response(DailyStatsList)
async def daily_stats(query_args: DailyStatsQuery) -> DailyStatsList:
    """Per report date, the sum over countries of each one's latest report on or before it."""
    rows = await queries.daily_totals(
        current_session(),
        country_id=query_args.country_id,
        date_from=query_args.date_from,
        date_to=query_args.date_to,
    )
    return DailyStatsList(items=[DailyStatsPublic.model_validate(row) for row in rows])


@blueprint.get("/countries/<id:country_id>/summary")
@document_response(CountrySummaryPublic)
async def country_summary(country_id: int) -> CountrySummaryPublic:
    """One country's report count, date span, latest figures and case fatality rate."""
    summary = await queries.country_summary(current_session(), country_id)
    return CountrySummaryPublic.model_validate(summary)
