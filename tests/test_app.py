"""The served app's process: the cyclic garbage collector kept out of the way of requests."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from service.app import YOUNG_COLLECTION_THRESHOLD, tune_collector_for_serving

CONCURRENT_REQUESTS = 16


@pytest.fixture
def collector_threshold() -> Iterator[None]:
    """Whatever a test sets, the process gets its own threshold back."""
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


async def _young_collections_while_serving(client: Client, requests: int) -> int:
    collections = 0

    def count(phase: str, info: dict[str, Any]) -> None:
        nonlocal collections
        if phase == "start" and info["generation"] == 0:
            collections += 1

    gc.callbacks.append(count)
    try:
        for _ in range(requests // CONCURRENT_REQUESTS):
            responses = await asyncio.gather(
                *(client.get("/records?limit=5") for _ in range(CONCURRENT_REQUESTS))
            )
            assert [response.status_code for response in responses] == [200] * len(responses)
    finally:
        gc.callbacks.remove(count)
    return collections


@pytest.mark.usefixtures("collector_threshold")
async def test_requests_in_flight_set_off_few_young_collections(real_app: Quart) -> None:
    client = real_app.test_client()
    gc.set_threshold(700, *gc.get_threshold()[1:])  # CPython's default
    untuned = await _young_collections_while_serving(client, 480)

    tune_collector_for_serving()
    assert gc.get_threshold()[0] == YOUNG_COLLECTION_THRESHOLD
    tuned = await _young_collections_while_serving(client, 480)

    assert untuned >= 20, "the default threshold should collect every few requests"
    assert tuned * 10 <= untuned
