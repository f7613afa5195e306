"""Log injection: a seeded fuzz of everything a client controls that reaches a log line.

Real Hypercorn with the project's hypercorn.toml (its logging configuration included), the
service logging every request at INFO, in the text and in the JSON format. Hypercorn's access
log, off in hypercorn.toml, is turned on as a deployment may, and its format is widened to
every field a client controls (request line with the query, user agent, referer, the
X-Request-ID sent): a deployment may log any of them. Each request
carries a token of its own in its path; afterwards every line of the log must be a line the
service or Hypercorn wrote (no line starts with a client's text), and every request the app
answered is on exactly two lines (the service's line and the access line), no more. Requests
that h11 refuses (400: control characters in a header value or the request line) are logged
by neither.
"""

from __future__ import annotations

import json
import random
import re
import urllib.parse
from collections import Counter
from pathlib import Path

import pytest

from tests.live import live_server
from tests.reliability.rawhttp import Client, IncompleteResponseError
from tests.reliability.report import Section

SECTION = ("5c", "Log injection")
SEED = 2003
CASES = 400
ACCESS_LOG_FORMAT = (
    '%(h)s "%(R)s" %(s)s %(b)s ua="%(a)s" referer="%(f)s" sent_id=%({x-request-id}i)s '
    "id=%({x-request-id}o)s"
)
# Characters that end or rewrite a line somewhere (terminals, log shippers, viewers).
BREAKERS = ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x1b[2K", "\x00", "\x7f", "\x85", "\u2028"]
HYPERCORN_LINE = re.compile(
    r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] \[(DEBUG|INFO|WARNING|ERROR)\] "
)
TEXT_LINE = re.compile(r"(DEBUG|INFO|WARNING|ERROR|CRITICAL) [A-Za-z_][\w.]*: ")


def _forged(rng: random.Random, index: int) -> str:
    """Text that would start a forged line: a line break, then what an attacker wants read."""
    line = rng.choice(
        [
            f"ERROR service.request: forged-{index}",
            f"[2003-04-01 00:00:00 +0000] [1] [INFO] forged-{index}",
            f'{{"level":"ERROR","message":"forged-{index}"}}',
        ]
    )
    return rng.choice(BREAKERS) + line


def _percent(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _raw_header(text: str) -> str:
    """A header value as raw bytes (latin-1 on the wire); CR and LF would end the header, so
    they go as the UTF-8 of the line separators instead."""
    text = text.replace("\r", "\u2028").replace("\n", "\u2029")
    return text.encode().decode("latin-1")


def _case(rng: random.Random, index: int) -> tuple[str, str, list[tuple[str, str]]]:
    """(field, target, headers) of case ``index``: one field carries the forgery."""
    token = f"fz{index}x"
    forged = _forged(rng, index)
    field = rng.choice(["path", "query", "user-agent", "referer", "x-request-id", "raw path"])
    path, query, headers = f"/{token}/probe", "", []
    if field == "path":
        path = f"/{token}/{_percent(forged)}"
    elif field == "raw path":  # bytes above 0x7f as they are; h11 refuses controls
        path = f"/{token}/" + "".join(c for c in _raw_header(forged) if ord(c) > 0x20)
    elif field == "query":
        query = "?q=" + rng.choice([_percent(forged), _percent(forged).replace("%20", "+")])
    else:
        headers = [(field, _raw_header(forged))]
    return field, path + query, headers


def _unexpected_lines(text: str, log_format: str) -> list[str]:
    unexpected = []
    for line in text.splitlines():
        if HYPERCORN_LINE.match(line):
            continue
        if log_format == "text" and TEXT_LINE.match(line):
            continue
        if log_format == "json" and _is_json_entry(line):
            continue
        unexpected.append(line)
    return unexpected


def _is_json_entry(line: str) -> bool:
    try:
        entry = json.loads(line)
    except ValueError:
        return False
    return isinstance(entry, dict) and "level" in entry and "message" in entry


async def _fuzz(url: str, log: Path, log_format: str, section: Section) -> None:
    rng = random.Random(SEED)
    fields: Counter[str] = Counter()
    statuses: Counter[int | str] = Counter()
    answered: list[str] = []  # tokens of the requests the app answered (h11 refuses some)
    with live_server(
        url,
        log,
        options=(
            *("--config", "hypercorn.toml", "--access-logfile", "-"),
            *("--access-logformat", ACCESS_LOG_FORMAT),
        ),
        LOG_LEVEL="INFO",
        LOG_FORMAT=log_format,
    ) as server:
        async with Client.for_url(server.url) as client:
            for index in range(CASES):
                field, target, headers = _case(rng, index)
                fields[field] += 1
                try:
                    response = await client.request("GET", target, headers=headers)
                    statuses[response.status] += 1
                    if response.header("x-request-id") is not None:
                        answered.append(f"fz{index}x")
                except IncompleteResponseError:
                    statuses["closed by the server"] += 1
                    await client.close()
    # Read once the server has stopped: Hypercorn writes an access line after the response.
    text = server.output()
    unexpected = _unexpected_lines(text, log_format)
    tokens_logged = set(re.findall(r"fz\d+x", text))
    lines_per_token = Counter(
        token for line in text.splitlines() for token in set(re.findall(r"fz\d+x", line))
    )
    over_logged = [f"{token}: {n} lines" for token, n in lines_per_token.items() if n > 2]
    not_on_two_lines = [
        f"{t}: {lines_per_token[t]} lines" for t in answered if lines_per_token[t] != 2
    ]
    # Forged text may only appear inside the line of the request that sent it.
    orphans = [
        line
        for line in text.splitlines()
        for number in re.findall(r"forged-(\d+)", line)
        if f"fz{number}x" not in line
    ]
    failed = len(unexpected) + len(over_logged) + len(not_on_two_lines) + len(orphans)
    section.figure(f"{log_format}: cases run", CASES)
    section.figure(f"{log_format}: cases by field", dict(fields))
    section.figure(f"{log_format}: statuses", dict(statuses))
    section.figure(f"{log_format}: log lines", len(text.splitlines()))
    section.figure(f"{log_format}: requests answered by the app", len(answered))
    section.figure(f"{log_format}: requests found in the log", len(tokens_logged))
    section.figure(f"{log_format}: lines not written by the service or Hypercorn", len(unexpected))
    section.figure(f"{log_format}: cases failed", failed)
    section.check(f"{log_format}: every line is the service's or Hypercorn's", not unexpected,
                  unexpected[:3])  # fmt: skip
    section.check(f"{log_format}: no request on more than its two lines", not over_logged,
                  over_logged[:3])  # fmt: skip
    section.check(f"{log_format}: each answered request on exactly two lines",
                  not not_on_two_lines, not_on_two_lines[:3])  # fmt: skip
    section.check(f"{log_format}: forged text only on its own request's line", not orphans,
                  orphans[:3])  # fmt: skip
    section.headline += f"{log_format}: {CASES} cases, {failed} failed; "


@pytest.mark.reliability
async def test_no_client_input_forges_a_log_line(
    sqlite_url: str, tmp_path: Path, section: Section
) -> None:
    section.parameters.update(
        seed=SEED,
        server="hypercorn --config hypercorn.toml, LOG_LEVEL=INFO",
        access_log_format=ACCESS_LOG_FORMAT,
        fields="path (percent-encoded and raw bytes), query, User-Agent, Referer, X-Request-ID",
        breakers=", ".join(repr(b) for b in BREAKERS),
    )
    for log_format in ("text", "json"):
        await _fuzz(sqlite_url, tmp_path / f"{log_format}.log", log_format, section)
    section.headline = section.headline.removesuffix("; ")
    section.assert_checks()
