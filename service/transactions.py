"""Write transactions that lose a race with another one run again, a bounded number of times.

PostgreSQL ends one of two transactions that wait for each other (a deadlock) and, under
stricter isolation, one whose reads another invalidated (a serialization failure); a row a
transaction checked can also be deleted by a concurrent one before the write that refers to
it. Each time, running the whole transaction again is the remedy (its checks then see what
the other committed): :func:`run_transaction` does it for any unit of work, and
:func:`retried` for a route handler. What still fails after ``DB_WRITE_ATTEMPTS`` runs is
answered 503 with ``Retry-After`` (``service/errors.py``), never 500. SQLite runs one writer
at a time (``BEGIN IMMEDIATE``), so it never gets here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from service.db import get_database
from service.errors import lost_a_race

_T = TypeVar("_T")
_P = ParamSpec("_P")
# Between runs: a pause of up to this many seconds times the run's number, at random, so
# that two transactions that collided do not collide again in lockstep.
BACKOFF_SECONDS = 0.01
RETRIED_MARK = "__retries_its_transaction__"

logger = logging.getLogger(__name__)


async def run_transaction(
    session: AsyncSession, work: Callable[[], Awaitable[_T]], *, attempts: int
) -> _T:
    """Run ``work`` (a whole transaction on ``session``, committed by it) up to ``attempts``
    times while it loses races; the last failure propagates."""
    for attempt in range(1, attempts + 1):
        try:
            return await work()
        except DBAPIError as error:
            if attempt == attempts or not lost_a_race(error):
                raise
            logger.info(
                "a write transaction lost a race (SQLSTATE %s); running it again (%d of %d)",
                getattr(error.orig, "sqlstate", None),
                attempt + 1,
                attempts,
            )
        await session.rollback()
        await asyncio.sleep(random.uniform(0, BACKOFF_SECONDS * attempt))
    raise AssertionError("unreachable: the last attempt returns or raises")


def retried(
    handler: Callable[_P, Awaitable[_T]],
) -> Callable[_P, Awaitable[_T]]:
    """Run a write route's handler (it commits) again while its transaction loses races.

    Put it right above the handler, under the validation decorators: the body is validated
    once, and every run gets the same arguments and the request's session, rolled back in
    between.
    """

    @functools.wraps(handler)
    async def run(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        database = get_database()
        return await run_transaction(
            database.session(),
            lambda: handler(*args, **kwargs),
            attempts=database.settings.DB_WRITE_ATTEMPTS,
        )

    setattr(run, RETRIED_MARK, True)
    return run
