"""An async client for the SARS records API, showing how to use it well.

- walks every record concurrently, one cursor walk per country, following ``next_cursor``;
- creates records with a bearer token;
- updates with ``If-Match`` and, on 412, re-reads and retries (no update is ever lost);
- honours ``Retry-After`` on 503 (database unavailable or pool exhausted).

Run it against a running service (its one dependency, httpx, is the ``examples`` extra, which
scripts/serve.sh installs into .venv):

    .venv/bin/python examples/client.py --url http://127.0.0.1:8000 --token "$TOKEN"
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx

MAX_ATTEMPTS = 5


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

    async def __aenter__(self) -> SarsClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.http.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request; on 503 wait as long as Retry-After says, then try again."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            async with self.limit:
                response = await self.http.request(method, path, **kwargs)
            if response.status_code != 503 or attempt == MAX_ATTEMPTS:
                return response
            await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
        raise AssertionError("unreachable")

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
