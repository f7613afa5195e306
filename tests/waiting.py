"""Waiting on what a test can observe, never on how long something should take."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

# Only a hang guard: a condition that holds is seen within a few steps of the event loop.
HANG_GUARD_SECONDS = 60.0


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
