"""Statistics schemas: totals over every country, one country's summary, the daily series."""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal

from pydantic import BaseModel, ValidationError, computed_field, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from service.schemas.common import IsoDate, PublicSchema, QueryId, QuerySchema

RATE_PLACES = Decimal("0.0001")


class StatsPublic(PublicSchema):
    """Totals over every country, each counted with its latest report."""

    countries: int
    records: int
    first_date: dt.date | None
    last_date: dt.date | None
    cases: int
    deaths: int
    recoveries: int


class CountrySummaryPublic(PublicSchema):
    """One country's reports: their span and the figures of the latest."""

    country_id: int
    country: str
    reports: int
    first_date: dt.date | None
    last_date: dt.date | None
    cases: int
    deaths: int
    recoveries: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def case_fatality_rate(self) -> float | None:
        """deaths / cases to 4 places, halves rounded up; null without cases."""
        if self.cases == 0:
            return None
        # Decimal, not float round(): exact, and 1/32 gives 0.0313 on every backend.
        rate = (Decimal(self.deaths) / Decimal(self.cases)).quantize(RATE_PLACES, ROUND_HALF_UP)
        return float(rate)


class DailyStatsQuery(QuerySchema):
    country_id: QueryId | None = None
    date_from: IsoDate | None = None
    date_to: IsoDate | None = None

    @model_validator(mode="after")
    def _ordered_range(self) -> DailyStatsQuery:
        if self.date_from and self.date_to and self.date_from > self.date_to:
            # A ValidationError raised here keeps its location, so the 422 names the parameter
            # (a plain ValueError would be reported against the whole query string).
            error = InitErrorDetails(
                type=PydanticCustomError("date_range", "date_from is after date_to"),
                loc=("date_from",),
                input=self.date_from.isoformat(),
            )
            raise ValidationError.from_exception_data(type(self).__name__, [error])
        return self


class DailyStatsPublic(PublicSchema):
    """The totals on one report date."""

    date: dt.date
    cases: int
    deaths: int
    recoveries: int


class DailyStatsList(BaseModel):
    items: list[DailyStatsPublic]
