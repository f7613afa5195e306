"""Realistic users of a deployed SARS records API, for locust (https://locust.io).

Readers (most users) browse: the list of countries, a country's records, page after page
by following ``next_cursor``, single records (re-read with ``If-None-Match``, as a caching
client does), country summaries, ``/stats`` and ``/stats/daily``. Writers (only with a
token) create records for a country of their own, read them back, correct some of them with
``PATCH`` and ``If-Match``, and delete their country (``?cascade=true``) when they stop. With
read replicas, a writer's reads carry its latest write's ``Consistency-Token`` (README, "Read
replicas"): reading back its own record never misses it.

    locust -f bench/locustfile.py --host http://127.0.0.1:8000            # web UI on :8089
    LOCUST_API_TOKEN=secret locust -f bench/locustfile.py --host https://api.example.org \\
        --headless --users 200 --spawn-rate 20 --run-time 5m --csv results

Environment: ``LOCUST_API_TOKEN`` (a token of the deployment's ``API_TOKENS``; without it
there are no writers), ``LOCUST_KEEP_DATA=1`` (writers leave their records behind).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import uuid
from typing import Any
from urllib.parse import quote

from locust import HttpUser, between, task

TOKEN = os.environ.get("LOCUST_API_TOKEN", "")
KEEP_DATA = os.environ.get("LOCUST_KEEP_DATA", "") not in ("", "0")
MAX_COUNTRY_PAGES = 5
TOKEN_HEADER = "Consistency-Token"


class Reader(HttpUser):
    """Someone browsing the data: lists, pages, records, summaries and statistics."""

    weight = 10
    wait_time = between(0.5, 3)

    def on_start(self) -> None:
        self.countries: list[dict[str, Any]] = []
        self.record_ids: list[int] = []
        self.etags: dict[int, str] = {}
        cursor: str | None = None
        for _ in range(MAX_COUNTRY_PAGES):
            path = "/countries?limit=500" + (f"&cursor={quote(cursor)}" if cursor else "")
            with self.client.get(path, name="/countries", catch_response=True) as response:
                if response.status_code != 200:
                    response.failure(f"status {response.status_code}")
                    return
                page = response.json()
            self.countries.extend(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break

    def _country(self) -> dict[str, Any] | None:
        return random.choice(self.countries) if self.countries else None

    def _remember(self, items: list[dict[str, Any]]) -> None:
        self.record_ids.extend(item["id"] for item in items)
        del self.record_ids[:-1000]  # the most recent thousand are plenty

    @task(5)
    def browse_country(self) -> None:
        """A country's records by date, by name as a person types it."""
        country = self._country()
        if country is None:
            return
        path = f"/records?country={quote(country['name'])}&order=date&limit=50"
        with self.client.get(path, name="/records?country=NAME", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}")
                return
            self._remember(response.json()["items"])

    @task(3)
    def page_through(self) -> None:
        """Follow next_cursor through a country's records, a few pages deep."""
        country = self._country()
        if country is None:
            return
        path: str | None = f"/records?country_id={country['id']}&order=-date&limit=20"
        for depth in range(random.randint(1, 6)):
            assert path is not None
            name = "/records?country_id=ID" if depth == 0 else "/records?cursor=NEXT"
            with self.client.get(path, name=name, catch_response=True) as response:
                if response.status_code != 200:
                    response.failure(f"status {response.status_code}")
                    return
                page = response.json()
            self._remember(page["items"])
            if page["next_cursor"] is None:
                return
            path = (
                f"/records?country_id={country['id']}&order=-date&limit=20"
                f"&cursor={quote(page['next_cursor'])}"
            )

    @task(4)
    def read_record(self) -> None:
        """One record; a record read before is revalidated with its ETag (200 or 304)."""
        if not self.record_ids:
            return
        record_id = random.choice(self.record_ids)
        headers = {"If-None-Match": self.etags[record_id]} if record_id in self.etags else {}
        with self.client.get(
            f"/records/{record_id}", headers=headers, name="/records/ID", catch_response=True
        ) as response:
            if response.status_code == 200:
                self.etags[record_id] = response.headers.get("ETag", "")
            elif response.status_code == 404:  # deleted meanwhile by someone else
                self.record_ids.remove(record_id)
                response.success()
            elif response.status_code != 304:
                response.failure(f"status {response.status_code}")

    @task(2)
    def summary(self) -> None:
        country = self._country()
        if country is not None:
            self.client.get(f"/countries/{country['id']}/summary", name="/countries/ID/summary")

    @task(1)
    def stats(self) -> None:
        self.client.get("/stats")

    @task(1)
    def daily(self) -> None:
        country = self._country()
        if country is not None:
            self.client.get(f"/stats/daily?country_id={country['id']}", name="/stats/daily")


class Writer(HttpUser):
    """Someone reporting figures: new daily records, corrections; only with a token."""

    abstract = not TOKEN  # no token, no writers
    weight = 1
    wait_time = between(2, 10)

    def on_start(self) -> None:
        self.headers = {"Authorization": f"Bearer {TOKEN}"}
        self.country = f"Locust {uuid.uuid4().hex[:12]}"
        self.country_id: int | None = None
        self.day = 0
        self.cases = 0
        self.created: list[tuple[int, str]] = []  # (id, ETag)
        self.consistency: dict[str, str] = {}  # the latest write's token, for reads

    def _remember_token(self, response: Any) -> None:
        token = response.headers.get(TOKEN_HEADER)
        if token:
            self.consistency = {TOKEN_HEADER: token}

    @task(4)
    def create(self) -> None:
        """Today's figures for this writer's country: cumulative, one date after another."""
        date = dt.date(2003, 3, 17) + dt.timedelta(days=self.day)
        self.day += 1
        self.cases += random.randint(0, 50)
        body = {"country": self.country, "date": date.isoformat(), "cases": self.cases}
        with self.client.post(
            "/records", json=body, headers=self.headers, name="/records", catch_response=True
        ) as response:
            if response.status_code != 201:
                response.failure(f"status {response.status_code}: {response.text[:200]}")
                return
            self._remember_token(response)
            record = response.json()
            self.country_id = record["country_id"]
            self.created.append((record["id"], response.headers.get("ETag", "*")))

    @task(2)
    def read_back(self) -> None:
        """Read one of this writer's records: it must be there, whichever server answers."""
        if not self.created:
            return
        record_id, _ = random.choice(self.created)
        with self.client.get(
            f"/records/{record_id}",
            headers=self.consistency,
            name="/records/ID (own)",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"own record: status {response.status_code}")

    @task(1)
    def correct(self) -> None:
        """Correct a figure with If-Match: 412 means someone changed it first (re-read)."""
        if not self.created:
            return
        index = random.randrange(len(self.created))
        record_id, etag = self.created[index]
        with self.client.patch(
            f"/records/{record_id}",
            json={"deaths": random.randint(0, 5)},
            headers={**self.headers, "If-Match": etag},
            name="/records/ID",
            catch_response=True,
        ) as response:
            if response.status_code == 200:
                self._remember_token(response)
                self.created[index] = (record_id, response.headers.get("ETag", "*"))
            elif response.status_code == 412:
                response.success()
                self.created[index] = (record_id, "*")
            else:
                response.failure(f"status {response.status_code}: {response.text[:200]}")

    def on_stop(self) -> None:
        if KEEP_DATA or self.country_id is None:
            return
        self.client.delete(
            f"/countries/{self.country_id}?cascade=true",
            headers=self.headers,
            name="/countries/ID?cascade=true",
        )
