"""Concurrent bulk batches: many seeded rounds of simultaneous ``POST /records/bulk`` in every
mode (error, skip, update), with keys that overlap each other's and the stored ones, some
repeated within a batch, some linking sources, some naming a country no one has created yet.

The invariants, checked after every round against what PostgreSQL stores: the counts of the
200s add up to what changed (new records = the created; version bumps = the updated); an
``error`` batch that got 200 wrote every item, and one that did not wrote none; every stored
figure and every set of links comes from an item of a batch that got 200; no 500, ever.
Each item's ``cases`` is a tag naming its round, batch and index, so a stored row says who
wrote it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AUTH
from tests.reliability import database
from tests.reliability.rawhttp import Client
from tests.reliability.report import Section
from tests.reliability.server import hypercorn

SECTION = (9, "Concurrent bulk batches")
SEED = 17
ROUNDS = 60
BATCHES = 6  # per round, all at once
KEY_DATES = 12  # dates of a round's key space; consecutive rounds share half of them
COUNTRIES = 3  # stored countries, plus one new name per round
MODES = ("error", "skip", "update")
FIRST_DATE = dt.date(2004, 1, 1)


@dataclass
class Batch:
    round: int
    number: int
    mode: str
    items: list[dict[str, Any]]
    status: int = 0
    body: Any = None

    @property
    def tags(self) -> set[int]:
        return {item["cases"] for item in self.items}


@dataclass
class Tally:
    rounds_failed: int = 0
    problems: list[str] = field(default_factory=list)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    items: int = 0

    def fail(self, round_: int, problem: str) -> None:
        self.problems.append(f"round {round_}: {problem}")


def tag(round_: int, batch: int, index: int) -> int:
    return round_ * 100_000 + batch * 1_000 + index


def make_batches(rng: random.Random, round_: int, sources: list[int]) -> list[Batch]:
    names = [f"Bulk race {c}" for c in range(COUNTRIES)] + [f"Bulk race new {round_}"]
    first_day = round_ * KEY_DATES // 2
    days = [first_day + d for d in range(KEY_DATES)]
    keys = [(name, day) for name in names for day in days]
    batches = []
    # The second half of the dates is new to this round: error batches mostly pick from it,
    # or they would nearly all meet a stored key and never race each other.
    fresh = [(name, day) for name, day in keys if day >= first_day + KEY_DATES // 2]
    for number in range(BATCHES):
        mode = rng.choice(MODES)
        if mode == "error" and rng.random() < 0.8:
            chosen = rng.sample(fresh, rng.randint(2, 6))
        else:
            chosen = rng.sample(keys, rng.randint(4, 20))
        if rng.random() < 0.2:
            chosen.append(rng.choice(chosen))  # a key repeated within the batch
        rng.shuffle(chosen)
        items = [
            {
                "country": name,
                "date": (FIRST_DATE + dt.timedelta(days=day)).isoformat(),
                "cases": tag(round_, number, index),
                "source_ids": rng.sample(sources, rng.randint(0, 2)) if rng.random() < 0.4 else [],
            }
            for index, (name, day) in enumerate(chosen)
        ]
        batches.append(Batch(round_, number, mode, items))
    return batches


async def stored_state(pg_url: str) -> dict[int, tuple[int, int, frozenset[int]]]:
    """Every record: id -> (cases, version, linked source ids)."""
    rows = await database.fetch(
        pg_url,
        "SELECT r.id, r.cases, r.version, coalesce(array_agg(rs.source_id) FILTER "
        "(WHERE rs.source_id IS NOT NULL), '{}') AS sources FROM records r "
        "LEFT JOIN record_sources rs ON rs.record_id = r.id GROUP BY r.id",
    )
    return {row["id"]: (row["cases"], row["version"], frozenset(row["sources"])) for row in rows}


def check_round(
    round_: int,
    batches: list[Batch],
    before: dict[int, tuple[int, int, frozenset[int]]],
    after: dict[int, tuple[int, int, frozenset[int]]],
    tally: Tally,
) -> None:
    problems_before = len(tally.problems)
    ok = [b for b in batches if b.status == 200]
    for batch in batches:
        tally.statuses[(batch.mode, batch.status)] += 1
        if batch.status not in (200, 409, 503):
            tally.fail(round_, f"batch {batch.number} ({batch.mode}) answered {batch.status}")
        if batch.status == 409 and batch.mode != "error":
            tally.fail(round_, f"a {batch.mode} batch answered 409")
        if batch.status == 200:
            counts = batch.body
            if sum(counts.values()) != len(batch.items):
                tally.fail(round_, f"batch {batch.number} counts {counts} != {len(batch.items)}")
            if batch.mode == "error" and counts["created"] != len(batch.items):
                tally.fail(round_, f"error batch {batch.number} got 200 with {counts}")
    created = sum(b.body["created"] for b in ok)
    updated = sum(b.body["updated"] for b in ok)
    if len(after) - len(before) != created:
        tally.fail(round_, f"{len(after) - len(before)} new records, the 200s say {created}")
    bumps = sum(v - 1 for _, v, _ in after.values()) - sum(v - 1 for _, v, _ in before.values())
    if bumps != updated:
        tally.fail(round_, f"{bumps} version bumps, the 200s say {updated} updated")
    items_by_tag = {item["cases"]: (b, item) for b in batches for item in b.items}
    for record_id, (cases, _, links) in after.items():
        found = items_by_tag.get(cases)
        if found is None:
            continue  # written in an earlier round
        writer, item = found
        if writer.status != 200:
            tally.fail(round_, f"record {record_id} holds an item of a {writer.status} batch")
        elif links != frozenset(item["source_ids"]):
            tally.fail(round_, f"record {record_id} links {set(links)}, its item {item}")
    if len(tally.problems) > problems_before:
        tally.rounds_failed += 1


@pytest.mark.reliability
async def test_concurrent_bulk_batches_in_every_mode(
    pg_url: str, server_log: Path, section: Section
) -> None:
    section.parameters.update(
        backend="PostgreSQL",
        server="Hypercorn, 1 worker, default pool (10 + 10)",
        rounds=f"{ROUNDS} (seed {SEED}), {BATCHES} batches at once in each",
        batches="mode error/skip/update at random; 4-20 items (error: mostly 2-6 of the "
        "round's new keys); a fifth repeat one key",
        keys=f"{COUNTRIES} countries + 1 new per round x {KEY_DATES} dates; "
        "consecutive rounds share half the dates",
        sources="2 sources; 40 % of items link 0-2 of them",
    )
    rng = random.Random(SEED)
    tally = Tally()
    with hypercorn(pg_url, server_log) as server:
        async with Client.for_url(server.url, default_headers=AUTH) as setup:
            sources = []
            for n in range(2):
                made = await setup.request("POST", "/sources", json={"title": f"Race {n}"})
                assert made.status == 201, made.text()
                sources.append(made.json()["id"])

        async def send(client: Client, batch: Batch) -> None:
            response = await client.request(
                "POST", "/records/bulk", json={"records": batch.items, "on_conflict": batch.mode}
            )
            batch.status, batch.body = response.status, response.json()

        clients = [Client.for_url(server.url, default_headers=AUTH) for _ in range(BATCHES)]
        try:
            for round_ in range(ROUNDS):
                batches = make_batches(rng, round_, sources)
                tally.items += sum(len(b.items) for b in batches)
                before = await stored_state(pg_url)
                await asyncio.gather(*(send(c, b) for c, b in zip(clients, batches, strict=True)))
                check_round(round_, batches, before, await stored_state(pg_url), tally)
        finally:
            for client in clients:
                await client.close()
        problems = server.problems()

    requests = ROUNDS * BATCHES
    fives = sum(n for (_, status), n in tally.statuses.items() if status >= 500)
    for mode in MODES:
        by_status = {s: n for (m, s), n in sorted(tally.statuses.items()) if m == mode}
        section.figure(f"{mode} batches by status", by_status)
    section.figure("rounds run / failed", f"{ROUNDS} / {tally.rounds_failed}")
    section.figure("batches sent / items", f"{requests:,} / {tally.items:,}")
    section.figure("5xx answers (503 allowed, 500 never)", fives)
    section.headline = (
        f"{ROUNDS} rounds x {BATCHES} batches: {tally.rounds_failed} rounds failed, "
        f"{sum(n for (_, s), n in tally.statuses.items() if s == 500)} 500s"
    )
    for problem in tally.problems[:10]:
        section.note(problem)
    checks = [
        section.check(
            "every round's counts match the store; error batches all or nothing",
            tally.rounds_failed == 0,
            f"{tally.rounds_failed} of {ROUNDS} rounds failed",
        ),
        section.check(
            "no 500",
            not any(s == 500 for (_, s) in tally.statuses),
            dict(tally.statuses),
        ),
        section.check("server log clean", not problems, problems or "clean"),
    ]
    assert all(checks), section.checks
