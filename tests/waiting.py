"""Waiting on what a test can observe, never on how long something should take."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

# Only a hang guard: a condition that holds is seen within a few steps of the event loop.
HANG_GUARD_SECONDS = 60.0

_T = TypeVar("_T")


async def until(
    condition: Callable[[], bool | Awaitable[bool]],
    what: str,
    *,
    guard: float = HANG_GUARD_SECONDS,
) -> None:
    """Return as soon as ``condition()`` holds; fail naming ``what`` if it never does."""
    try:
        async with asyncio.timeout(guard):
            while True:
                held = condition()
                if inspect.isawaitable(held):
                    held = await held
                if held:
                    return
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"never happened: {what}") from None


async def polled(
    read: Callable[[], Awaitable[_T]],
    done: Callable[[_T], bool],
    *,
    every: float = 0.1,
    guard: float = HANG_GUARD_SECONDS,
) -> tuple[_T, float]:
    """Read until ``done`` holds; the last reading and how long it took.

    For a figure as well as a check: how long is reported, never compared with a deadline.
    Only the hang guard ends the wait early, and the caller's checks then fail on the last
    reading.
    """
    started = time.monotonic()
    while True:
        reading = await read()
        if done(reading) or time.monotonic() - started > guard:
            return reading, time.monotonic() - started
        await asyncio.sleep(every)
