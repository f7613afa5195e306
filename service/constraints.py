"""The uniqueness rules the database enforces, known by their names.

A write never looks first and inserts after: another transaction can store the same key in
between, and the look proves nothing. It writes, and the database's unique constraint refuses
it, whenever that happens (at once, or once a concurrent insert of the same key commits). This
module is the one place that tells which constraint refused a write; call sites turn a named
refusal into their own 409 with :func:`refused_by`, and ``service/errors.py`` renders any
other with :data:`CONFLICT_DETAILS`. Where a conflict is expected rather than an error
(``on_conflict=skip|update``, a country created on first use), ``INSERT ... ON CONFLICT`` names
the same constraint's columns through :func:`unique_columns`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import Column, UniqueConstraint
from sqlalchemy.exc import IntegrityError

from service.models import Base

COUNTRY_NAME = "uq_countries_name"
RECORD_KEY = "uq_records_country_id_date"

# What a violation means to a client, when the call site has nothing more precise to say.
CONFLICT_DETAILS = {
    COUNTRY_NAME: "a country with this name exists already",
    RECORD_KEY: "a record for this country and date exists already",
}

_UNIQUE: dict[str, UniqueConstraint] = {
    constraint.name: constraint
    for table in Base.metadata.tables.values()
    for constraint in table.constraints
    if isinstance(constraint, UniqueConstraint) and isinstance(constraint.name, str)
}
# SQLite names the table and columns of a violated unique constraint, not the constraint.
_BY_COLUMNS = {
    (constraint.table.name, tuple(column.name for column in constraint.columns)): name
    for name, constraint in _UNIQUE.items()
}
_SQLITE_UNIQUE = "UNIQUE constraint failed: "


def unique_columns(name: str) -> list[Column[object]]:
    """The columns of unique constraint ``name``: the target of an ``ON CONFLICT`` clause."""
    return list(_UNIQUE[name].columns)


def violated_constraint(error: IntegrityError) -> str | None:
    """The name of the unique constraint ``error`` reports, or None for any other error."""
    driver = error.driver_exception
    # asyncpg names the constraint (the server's constraint_name field).
    if getattr(driver, "sqlstate", None) == "23505":
        name = getattr(driver, "constraint_name", None)
        return name if name in _UNIQUE else None
    message = str(driver)
    if not message.startswith(_SQLITE_UNIQUE):
        return None
    qualified = [part.strip() for part in message.removeprefix(_SQLITE_UNIQUE).split(",")]
    tables = {part.partition(".")[0] for part in qualified}
    if len(tables) != 1:
        return None
    columns = tuple(part.partition(".")[2] for part in qualified)
    return _BY_COLUMNS.get((tables.pop(), columns))


@contextmanager
def refused_by(constraint: str, problem: Callable[[], Exception]) -> Iterator[None]:
    """Raise ``problem()`` when a write in the block violates unique constraint ``constraint``."""
    try:
        yield
    except IntegrityError as error:
        if violated_constraint(error) == constraint:
            raise problem() from None
        raise
