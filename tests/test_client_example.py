"""The example client works against a live service, and honours Retry-After."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from tests.conftest import TOKEN
from tests.live import REPO_ROOT, live_server


def _example_client() -> ModuleType:
    spec = importlib.util.spec_from_file_location("client", REPO_ROOT / "examples" / "client.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.e2e
def test_example_client_against_a_live_service(database_url: str, tmp_path: Path) -> None:
    with live_server(database_url, tmp_path / "server.log", API_TOKENS=TOKEN) as server:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        for day in range(1, 4):
            body = {"country": "Seeded", "date": f"2003-03-{day:02d}", "cases": day}
            assert (
                httpx.post(f"{server.url}/records", json=body, headers=headers).status_code == 201
            )
        result = subprocess.run(
            [
                sys.executable,
                str(REPO_ROOT / "examples" / "client.py"),
                "--url",
                server.url,
                "--token",
                TOKEN,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr
    assert "cases 10 after 10 concurrent increments" in result.stdout
    assert "walked 4 records of 2 countries" in result.stdout


async def test_retry_after_is_honoured() -> None:
    client_module = _example_client()
    calls: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return httpx.Response(503, headers={"Retry-After": "0.3"})
        return httpx.Response(200, json={"items": [], "next_cursor": None})

    async with client_module.SarsClient(
        "http://test", transport=httpx.MockTransport(answer)
    ) as client:
        response = await client.request("GET", "/records")
    assert response.status_code == 200
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.3


async def test_reads_carry_the_token_of_the_write_sent_last() -> None:
    client_module = _example_client()
    header = client_module.TOKEN_HEADER
    seen: list[str | None] = []
    first_write_may_answer = asyncio.Event()

    async def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            seen.append(request.headers.get(header))
            return httpx.Response(200, json={})
        body = json.loads(request.content)
        if body["n"] == 1:
            # The first write's answer arrives after the second's.
            await first_write_may_answer.wait()
        else:
            first_write_may_answer.set()
        return httpx.Response(201, json={}, headers={header: f"token-{body['n']}"})

    async with client_module.SarsClient(
        "http://test", transport=httpx.MockTransport(answer)
    ) as client:
        await client.request("GET", "/records")
        await asyncio.gather(
            client.request("POST", "/records", json={"n": 1}),
            client.request("POST", "/records", json={"n": 2}),
        )
        await client.request("GET", "/records", headers={"X-Other": "kept"})
        vars(client_module)["TOKEN_TTL_SECONDS"] = 0.0  # every token is now too old to send
        await client.request("GET", "/records")
    assert seen == [None, "token-2", None]
