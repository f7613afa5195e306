"""An async client for the SARS records API, showing how to use it well.

- walks every record concurrently, one cursor walk per country, following ``next_cursor``;
- creates records with a bearer token;
- updates with ``If-Match`` and, on 412, re-reads and retries (no update is ever lost);
- honours ``Retry-After`` on 503 (database unavailable or pool exhausted);
- reads its own writes when the service reads from replicas: each write's ``Consistency-Token``
  goes with the reads that follow it (README, "Read replicas").

Run it against a running service (its one dependency, httpx, is the ``examples`` extra, which
scripts/serve.sh installs into .venv):

    .venv/bin/python examples/client.py --url http://127.0.0.1:8000 --token "$TOKEN"
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

MAX_ATTEMPTS = 5
TOKEN_HEADER = "Consistency-Token"
# The service's default READ_TOKEN_TTL: an older token would send reads to the primary.
TOKEN_TTL_SECONDS = 300.0
READS = frozenset({"GET", "HEAD"})


class SarsClient:
    """A thin, polite wrapper over httpx for this API."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        concurrency: int = 8,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.AsyncClient(
            base_url=url, headers=headers, timeout=30, transport=transport
        )
        self.limit = asyncio.Semaphore(concurrency)
        # The token of the write sent last (of those that returned one), and when it came.
        self._sent = itertools.count()
        self._token: tuple[int, str, float] | None = None

    async def __aenter__(self) -> SarsClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.http.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request; on 503 wait as long as Retry-After says, then try again."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            sent = next(self._sent)
            async with self.limit:
                headers = {**self._read_your_writes(method), **kwargs.pop("headers", {})}
                response = await self.http.request(method, path, headers=headers, **kwargs)
            self._keep_token(sent, response)
            if response.status_code != 503 or attempt == MAX_ATTEMPTS:
                return response
            await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
        raise AssertionError("unreachable")

    def _read_your_writes(self, method: str) -> dict[str, str]:
        """A read carries the latest write's token: served by a replica that has it."""
        if method not in READS or self._token is None:
            return {}
        _, token, received = self._token
        if time.monotonic() - received > TOKEN_TTL_SECONDS:
            self._token = None
            return {}
        return {TOKEN_HEADER: token}

    def _keep_token(self, sent: int, response: httpx.Response) -> None:
        # A write's token covers every write acknowledged before that write was sent, so the
        # one sent last is kept, whatever order concurrent responses arrive in.
        token = response.headers.get(TOKEN_HEADER)
        if token is not None and (self._token is None or sent > self._token[0]):
            self._token = (sent, token, time.monotonic())

    async def walk(self, path: str, **params: Any) -> AsyncIterator[dict[str, Any]]:
        """Every item of a list, page by page, following next_cursor to the end."""
        cursor: str | None = None
        while True:
            page_params = {**params, "limit": 500, **({"cursor": cursor} if cursor else {})}
            response = await self.request("GET", path, params=page_params)
            response.raise_for_status()
            page = response.json()
            for item in page["items"]:
                yield item
            cursor = page["next_cursor"]
            if cursor is None:
                return

    async def all_records(self) -> list[dict[str, Any]]:
        """Every record, fetched with one concurrent cursor walk per country."""
        countries = [country async for country in self.walk("/countries")]

        async def records_of(country: dict[str, Any]) -> list[dict[str, Any]]:
            path = f"/countries/{country['id']}/records"
            return [record async for record in self.walk(path, order="date")]

        per_country = await asyncio.gather(*(records_of(c) for c in countries))
        return [record for records in per_country for record in records]

    async def create_record(
        self, country: str, date: dt.date, cases: int, deaths: int = 0, recoveries: int = 0
    ) -> dict[str, Any]:
        body = {
            "country": country,
            "date": date.isoformat(),
            "cases": cases,
            "deaths": deaths,
            "recoveries": recoveries,
        }
        response = await self.request("POST", "/records", json=body)
        response.raise_for_status()
        created: dict[str, Any] = response.json()
        return created

    async def add_cases(self, record_id: int, more: int) -> dict[str, Any]:
        """Read-modify-write with If-Match: on 412 somebody else won; re-read and retry."""
        while True:
            current = await self.request("GET", f"/records/{record_id}")
            current.raise_for_status()
            cases = current.json()["cases"] + more
            update = await self.request(
                "PATCH",
                f"/records/{record_id}",
                json={"cases": cases},
                headers={"If-Match": current.headers["ETag"]},
            )
            if update.status_code != 412:
                update.raise_for_status()
                updated: dict[str, Any] = update.json()
                return updated


async def demo(url: str, token: str) -> None:
    """Create a record, bump it from 10 concurrent writers, then walk everything."""
    async with SarsClient(url, token) as client:
        stamp = dt.datetime.now(dt.UTC).strftime("%H%M%S%f")
        record = await client.create_record(f"Example {stamp}", dt.date(2003, 4, 1), cases=0)
        await asyncio.gather(*(client.add_cases(record["id"], 1) for _ in range(10)))
        final = (await client.request("GET", f"/records/{record['id']}")).json()
        print(f"record {record['id']}: cases {final['cases']} after 10 concurrent increments")
        records = await client.all_records()
        countries = {r["country"] for r in records}
        print(f"walked {len(records)} records of {len(countries)} countries")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("SARS_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--token", default=os.environ.get("SARS_TOKEN", ""))
    args = parser.parse_args()
    asyncio.run(demo(args.url, args.token))


if __name__ == "__main__":
    main()
