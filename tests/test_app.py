"""The served process: the cyclic garbage collector kept out of the way of requests, and no
other process (tests, the CLI, a user's script) touched by importing the service."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from service.collector import SERVING_YOUNG_THRESHOLD, tune_collector_for_serving
from tests.live import REPO_ROOT

CONCURRENT_REQUESTS = 16


# What a module could change in the process that imports it: the collector and logging.
_PROCESS_STATE = """
import gc, json, logging
def process_state():
    root = logging.getLogger()
    return {
        "threshold": gc.get_threshold(),
        "frozen": gc.get_freeze_count(),
        "enabled": gc.isenabled(),
        "root_logger": [root.level, [type(handler).__name__ for handler in root.handlers]],
    }
"""
_IMPORT_EVERY_MODULE = (
    _PROCESS_STATE
    + """
import importlib, pkgutil, service
before = process_state()
imported = []
for module in pkgutil.walk_packages(service.__path__, "service."):
    if module.name != "service.serve" and not module.name.endswith(".__main__"):
        importlib.import_module(module.name)
        imported.append(module.name)
print(json.dumps({"before": before, "after": process_state(), "imported": imported}))
"""
)
_IMPORT_ENTRY_POINT = (
    _PROCESS_STATE
    + """
before = process_state()
import service.serve
print(json.dumps({"before": before, "after": process_state()}))
"""
)


def _run_python(code: str, tmp_path: Path) -> dict[str, Any]:
    env = {**os.environ, "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/never-created.db"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def test_importing_any_service_module_leaves_the_process_alone(tmp_path: Path) -> None:
    found = _run_python(_IMPORT_EVERY_MODULE, tmp_path)

    assert {"service.app", "service.cli", "service.db", "service.load"} <= set(found["imported"])
    assert found["after"] == found["before"]
    assert not (tmp_path / "never-created.db").exists()


def test_the_served_entry_point_tunes_the_collector(tmp_path: Path) -> None:
    found = _run_python(_IMPORT_ENTRY_POINT, tmp_path)

    assert found["after"]["threshold"][0] == SERVING_YOUNG_THRESHOLD
    assert found["after"]["frozen"] > found["before"]["frozen"]


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
    assert gc.get_threshold()[0] == SERVING_YOUNG_THRESHOLD
    tuned = await _young_collections_while_serving(client, 480)

    assert untuned >= 20, "the default threshold should collect every few requests"
    assert tuned * 10 <= untuned
