"""The tables: countries 1-n records n-n sources. Relationships never lazy-load."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

MAX_COUNT = 2_147_483_647
NAME_LENGTH = 100
TITLE_LENGTH = 300
URL_LENGTH = 2048

# Named constraints let Alembic's batch mode (SQLite) find and alter them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp that is always timezone-aware UTC in Python, whatever the backend stores."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        # asyncpg already returns timestamptz values as aware UTC datetimes: skip the call
        # per value (two per record, a hundred per page of records).
        if dialect.driver == "asyncpg":
            return self.impl_instance.result_processor(dialect, coltype)
        return super().result_processor(dialect, coltype)


class Base(AsyncAttrs, DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _created_at(context: DefaultExecutionContext) -> Any:
    """A new row's updated_at is its created_at, to the microsecond."""
    return context.get_current_parameters()["created_at"]  # type: ignore[no-untyped-call]


class Timestamped:
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utc_now)
    updated_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime(), default=_created_at, onupdate=utc_now
    )


record_sources = Table(
    "record_sources",
    Base.metadata,
    Column("record_id", ForeignKey("records.id", ondelete="CASCADE"), primary_key=True),
    Column("source_id", ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_record_sources_source_id", "source_id"),
)


class Country(Timestamped, Base):
    __tablename__ = "countries"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)

    records: Mapped[list[Record]] = relationship(back_populates="country", lazy="raise")


class Record(Timestamped, Base):
    __tablename__ = "records"
    __table_args__ = (
        UniqueConstraint("country_id", "date"),
        CheckConstraint("cases >= 0", name="cases_not_negative"),
        CheckConstraint("deaths >= 0", name="deaths_not_negative"),
        CheckConstraint("recoveries >= 0", name="recoveries_not_negative"),
        Index("ix_records_date_id", "date", "id"),
        Index("ix_records_cases_id", "cases", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    country_id: Mapped[int] = mapped_column(ForeignKey("countries.id", ondelete="RESTRICT"))
    date: Mapped[dt.date] = mapped_column(Date)
    cases: Mapped[int] = mapped_column(Integer)
    deaths: Mapped[int] = mapped_column(Integer, default=0)
    recoveries: Mapped[int] = mapped_column(Integer, default=0)
    version: Mapped[int] = mapped_column(Integer)

    country: Mapped[Country] = relationship(back_populates="records", lazy="raise")
    sources: Mapped[list[Source]] = relationship(
        secondary=record_sources, back_populates="records", lazy="raise"
    )

    # A stale write raises StaleDataError instead of silently winning.
    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012 - read once by the mapper


class Source(Timestamped, Base):
    __tablename__ = "sources"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(TITLE_LENGTH))
    url: Mapped[str | None] = mapped_column(String(URL_LENGTH))
    published_on: Mapped[dt.date | None] = mapped_column(Date)

    records: Mapped[list[Record]] = relationship(
        secondary=record_sources, back_populates="sources", lazy="raise"
    )
