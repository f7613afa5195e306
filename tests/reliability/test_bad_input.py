"""Bad input: schemathesis (stateless and stateful) over /openapi.json, then a hand-written
corpus sent as raw bytes (so that malformed input reaches the server as it is).

No input may produce a 5xx; every error the app answers is problem+json with the contract's
fields; and writes that are refused leave the database exactly as it was.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import urllib.parse
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AUTH, TOKEN
from tests.live import LiveServer
from tests.reliability import database, rawhttp
from tests.reliability.contract import problem_issues
from tests.reliability.rawhttp import Client, IncompleteResponseError, Response
from tests.reliability.report import Section
from tests.reliability.server import hypercorn

SECTION = (5, "Bad input")
MAX_INT32 = 2**31 - 1
EXPLAINED_FAILURES = frozenset({"ServerError", "UndefinedStatusCode"})
PAGINATED_LISTS = frozenset(
    {
        "GET /countries",
        "GET /records",
        "GET /sources",
        "GET /countries/{country_id}/records",
        "GET /sources/{source_id}/records",
    }
)
SCHEMATHESIS_EXAMPLES = 150
SCHEMATHESIS_SEED = 2003
PHASES = "examples,coverage,fuzzing,stateful"
CHECKS = ["--checks", "all", "--exclude-checks", "positive_data_acceptance"]
SLOW_BODY_SECONDS = 4.0
BIG = 10 * 1024 * 1024
LONG = 64 * 1024

INJECTIONS = [
    "' OR '1'='1",
    "'; DROP TABLE records; --",
    "1; DELETE FROM countries",
    '" OR 1=1 --',
    "1' UNION SELECT version() --",
    "' AND pg_sleep(3) IS NULL --",
    "%' OR name LIKE '%",
    "Robert'); DROP TABLE countries;--",
    "1 OR 1=1",
    "$$; SELECT 1; $$",
    "\\'; --",
    "admin'/*",
    ")) OR ((1=1",
    "_%",
]
QUERY_PARAMETERS = {
    "/records": [
        "country", "country_id", "date_from", "date_to", "min_cases", "order", "limit",
        "cursor", "page", "per_page",
    ],
    "/countries": ["q", "order", "limit", "cursor", "page", "per_page"],
    "/sources": ["order", "limit", "cursor", "page"],
    "/stats/daily": ["country_id", "date_from", "date_to"],
    "/countries/1/records": ["country", "min_cases", "order"],
    "/sources/1/records": ["date_to", "limit"],
}  # fmt: skip
HUGE_NUMBERS = [
    "18446744073709551616", "1e400", "-1e400", "-0", "1e2", "-1", "2147483648", "2147483647",
    "9223372036854775808", "1.5", "1e-400", "0.0", "100.0", "99999999999999999999999999999999",
]  # fmt: skip
NON_FINITE = ["NaN", "Infinity", "-Infinity", "nan", "inf", "0x10"]


@dataclass
class Case:
    category: str
    name: str
    method: str
    target: str | bytes
    body: bytes | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_length: bool = True  # False: send the body chunked
    trickle: float = 0.0  # seconds to spread the body over
    expected: frozenset[int] = frozenset()  # statuses the contract implies (for the report)


@dataclass
class Result:
    case: Case
    response: Response | None
    error: str | None
    elapsed: float

    @property
    def status(self) -> int | None:
        return self.response.status if self.response else None

    @property
    def from_app(self) -> bool:
        """Answered by the app (every app response carries X-Request-ID), not by h11."""
        return self.response is not None and self.response.header("x-request-id") is not None


def _json_write(
    category: str, name: str, method: str, path: str, body: bytes, *expected: int
) -> Case:
    headers = [("Authorization", f"Bearer {TOKEN}"), ("Content-Type", "application/json")]
    return Case(category, name, method, path, body, headers, expected=frozenset(expected))


def _with(template: dict[str, Any], key: str, raw_value: str) -> bytes:
    """``template`` as JSON with ``key`` set to ``raw_value`` spelled exactly as given."""
    marker = "__RAW__"
    text = json.dumps({**template, key: marker})
    return text.replace(f'"{marker}"', raw_value).encode()


# Bodies the service accepts, one per write route; fields are replaced one at a time.
def _templates(scratch: dict[str, int]) -> list[tuple[str, str, dict[str, Any]]]:
    record = {
        "country": "Corpus base",
        "date": "2003-09-01",
        "cases": 1,
        "deaths": 0,
        "recoveries": 0,
        "source_ids": [],
    }
    return [
        ("POST", "/countries", {"name": "Corpus country"}),
        ("PATCH", f"/countries/{scratch['country']}", {"name": "Corpus renamed"}),
        ("POST", "/records", record),
        ("PUT", f"/records/{scratch['record']}", {**record, "date": "2003-09-02"}),
        ("PATCH", f"/records/{scratch['record']}", {"cases": 5, "date": "2003-09-03"}),
        (
            "POST",
            "/sources",
            {
                "title": "Corpus source",
                "url": "https://example.org/x",
                "published_on": "2003-05-01",
            },
        ),
        ("PATCH", f"/sources/{scratch['source']}", {"title": "Corpus", "url": "http://a.b"}),
        (
            "POST",
            "/records/bulk",
            {
                "records": [{"country": "Corpus bulk", "date": "2003-09-04", "cases": 1}],
                "on_conflict": "error",
            },
        ),
    ]


def _corpus(scratch: dict[str, int]) -> list[Case]:
    cases: list[Case] = []
    templates = _templates(scratch)
    quote = urllib.parse.quote

    # SQL injection: every query parameter, every JSON field.
    for path, parameters in QUERY_PARAMETERS.items():
        for parameter in parameters:
            for payload in INJECTIONS:
                target = f"{path}?{parameter}={quote(payload, safe='')}"
                cases.append(
                    Case(
                        "sql injection",
                        f"GET {path}?{parameter}",
                        "GET",
                        target,
                        expected=frozenset({200, 422}),
                    )
                )
    for payload in INJECTIONS:
        target = f"/countries/1?cascade={quote(payload, safe='')}"
        cases.append(
            Case(
                "sql injection",
                "DELETE /countries/1?cascade",
                "DELETE",
                target,
                headers=list(AUTH.items()),
                expected=frozenset({422}),
            )
        )
        cases.append(
            Case(
                "sql injection",
                "DELETE /records/1 If-Match",
                "DELETE",
                "/records/1",
                headers=[*AUTH.items(), ("If-Match", payload)],
                expected=frozenset({412}),
            )
        )
        cases.append(
            Case(
                "sql injection",
                "X-Request-ID header",
                "GET",
                "/countries/1",
                headers=[("X-Request-ID", payload)],
                expected=frozenset({200}),
            )
        )
    for method, path, template in templates:
        fields = template if path != "/records/bulk" else {**template["records"][0]}
        for key in fields:
            for payload in INJECTIONS:
                raw = json.dumps(payload)
                if path == "/records/bulk":
                    body = json.dumps(
                        {"records": [json.loads(_with(fields, key, raw))], "on_conflict": "error"}
                    ).encode()
                else:
                    body = _with(template, key, raw)
                cases.append(
                    _json_write(
                        "sql injection",
                        f"{method} {path} .{key}",
                        method,
                        path,
                        body,
                        200,
                        201,
                        409,
                        422,
                    )
                )
        if path == "/records/bulk":
            for payload in INJECTIONS:
                body = _with(template, "on_conflict", json.dumps(payload))
                cases.append(
                    _json_write(
                        "sql injection", "POST /records/bulk .on_conflict", method, path, body, 422
                    )
                )

    # Huge and odd numbers: JSON number tokens, query values, path ids.
    record = templates[2][2]
    numeric_bodies = [
        ("POST", "/records", record, key) for key in ("cases", "deaths", "recoveries")
    ] + [
        ("POST", "/records", {k: v for k, v in record.items() if k != "country"}, "country_id"),
        ("PATCH", f"/records/{scratch['record']}", {"cases": 1}, "cases"),
        ("PUT", f"/records/{scratch['record']}", templates[3][2], "deaths"),
        ("POST", "/sources", {"title": "Numbers"}, "title"),
    ]
    for method, path, template, key in numeric_bodies:
        for number in HUGE_NUMBERS:
            body = _with(template, key, number)
            cases.append(
                _json_write(
                    "huge numbers",
                    f"{method} {path} .{key}={number}",
                    method,
                    path,
                    body,
                    200,
                    201,
                    409,
                    400,
                    422,
                )
            )
            bulk = (
                b'{"records": [' + _with(record, key, number) + b"]}" if key != "title" else None
            )
            if bulk is not None and method == "POST" and key != "country_id":
                cases.append(
                    _json_write(
                        "huge numbers",
                        f"POST /records/bulk .{key}={number}",
                        "POST",
                        "/records/bulk",
                        bulk,
                        200,
                        409,
                        400,
                        422,
                    )
                )
    for number in HUGE_NUMBERS:
        body = _with(
            {"date": "2003-09-05", "cases": 1, "country": "Corpus numbers"},
            "source_ids",
            f"[{number}]",
        )
        cases.append(
            _json_write(
                "huge numbers",
                f"POST /records .source_ids=[{number}]",
                "POST",
                "/records",
                body,
                400,
                422,
            )
        )
        for parameter in ("limit", "page", "min_cases", "country_id", "per_page"):
            cases.append(
                Case(
                    "huge numbers",
                    f"GET /records?{parameter}={number}",
                    "GET",
                    f"/records?{parameter}={quote(number)}",
                    expected=frozenset({200, 422}),
                )
            )
        cases.append(
            Case(
                "huge numbers",
                f"GET /records/{number}",
                "GET",
                f"/records/{quote(number)}",
                expected=frozenset({404}),
            )
        )

    # NaN, Infinity and other literals JSON does not have.
    for literal in NON_FINITE:
        for method, path, template in templates[:4]:
            body = _with(template, "cases" if "cases" in template else "name", literal)
            cases.append(
                _json_write("NaN/Infinity", f"{method} {path} {literal}", method, path, body, 400)
            )
        cases.append(
            Case(
                "NaN/Infinity",
                f"GET /records?min_cases={literal}",
                "GET",
                f"/records?min_cases={quote(literal)}",
                expected=frozenset({422}),
            )
        )

    # 10,000-deep nesting.
    deep_array = b"[" * 10_000 + b"]" * 10_000
    deep_object = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
    for label, deep in (("array", deep_array), ("object", deep_object)):
        for method, path, _ in templates:
            cases.append(
                _json_write(
                    "deep nesting", f"{method} {path} deep {label}", method, path, deep, 400
                )
            )
        inside = b'{"name": ' + deep + b"}"
        cases.append(
            _json_write(
                "deep nesting",
                f"POST /countries name=deep {label}",
                "POST",
                "/countries",
                inside,
                400,
            )
        )

    # Invalid UTF-8 in bodies, queries, paths and headers.
    for label, bad in (
        ("\\xff\\xfe", b"\xff\xfe"),
        ("overlong /", b"\xc0\xaf"),
        ("lone surrogate (bytes)", b"\xed\xa0\x80"),
        ("truncated sequence", b"\xe2\x82"),
    ):
        body = b'{"name": "bad ' + bad + b'"}'
        cases.append(
            _json_write(
                "invalid UTF-8", f"POST /countries body {label}", "POST", "/countries", body, 400
            )
        )
        body = b'{"country": "x' + bad + b'", "date": "2003-09-06", "cases": 1}'
        cases.append(
            _json_write(
                "invalid UTF-8", f"POST /records body {label}", "POST", "/records", body, 400
            )
        )
        encoded = "".join(f"%{b:02X}" for b in bad)
        for path in ("/countries?q=", "/records?country=", "/records?order=", "/sources?cursor="):
            cases.append(
                Case(
                    "invalid UTF-8",
                    f"GET {path}{label} (percent-encoded)",
                    "GET",
                    f"{path}{encoded}",
                    expected=frozenset({200, 422}),
                )
            )
        cases.append(
            Case(
                "invalid UTF-8",
                f"GET /countries?q= raw {label}",
                "GET",
                b"/countries?q=" + bad,
                expected=frozenset({200, 400, 422}),
            )
        )
        cases.append(
            Case(
                "invalid UTF-8",
                f"GET /records/{label} (path)",
                "GET",
                f"/records/{encoded}",
                expected=frozenset({404}),
            )
        )
    cases.append(
        _json_write(
            "invalid UTF-8",
            "POST /countries escaped lone surrogate",
            "POST",
            "/countries",
            b'{"name": "a\\ud800b"}',
            400,
        )
    )
    cases.append(
        _json_write(
            "invalid UTF-8",
            "POST /countries escaped NUL",
            "POST",
            "/countries",
            b'{"name": "a\\u0000b"}',
            422,
        )
    )

    # 10 MB bodies, framed by Content-Length or chunked.
    big_json = b'{"name": "' + b"a" * BIG + b'"}'
    big_bulk = (
        b'{"records": ['
        + b",".join([b'{"country": "Big", "date": "2003-01-01", "cases": 1}'] * (BIG // 50))
        + b"]}"
    )
    for method, path, body, expected in (
        ("POST", "/countries", big_json, {413}),
        ("POST", "/records", big_json, {413}),
        ("PATCH", "/records/1", big_json, {413}),
        ("POST", "/records/bulk", big_bulk, {409, 422}),
        ("POST", "/records/bulk", b"[" + b" " * BIG + b"]", {400}),
    ):
        for chunked in (False, True):
            case = _json_write(
                "10 MB body",
                f"{method} {path} {'chunked' if chunked else 'sized'}",
                method,
                path,
                body,
                *expected,
            )
            case.content_length = not chunked
            cases.append(case)

    # Wrong and missing content types.
    valid = b'{"name": "Content type"}'
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "",
        "application/json-seq",
        "text/json",
    ):
        headers = [("Authorization", f"Bearer {TOKEN}")]
        if content_type:
            headers.append(("Content-Type", content_type))
        for method, path in (
            ("POST", "/countries"),
            ("PATCH", "/records/1"),
            ("POST", "/records/bulk"),
        ):
            cases.append(
                Case(
                    "content type",
                    f"{method} {path} {content_type or 'none'}",
                    method,
                    path,
                    valid,
                    headers,
                    expected=frozenset({415}),
                )
            )
    cases.append(
        Case(
            "content type",
            "POST /countries no Content-Type header",
            "POST",
            "/countries",
            valid,
            [("Authorization", f"Bearer {TOKEN}")],
            expected=frozenset({415}),
        )
    )
    for content_type in (
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        "application/problem+json",
    ):
        name = json.dumps(f"Content type {content_type}")
        cases.append(
            Case(
                "content type",
                f"POST /countries {content_type}",
                "POST",
                "/countries",
                b'{"name": ' + name.encode() + b"}",
                [("Authorization", f"Bearer {TOKEN}"), ("Content-Type", content_type)],
                expected=frozenset({201}),
            )
        )

    # Duplicate keys (the last one wins, as in most parsers).
    for label, body in (
        ("name twice", b'{"name": "Dup first", "name": "Dup second"}'),
        ("name, then number", b'{"name": "Dup ok", "name": 5}'),
    ):
        cases.append(
            _json_write(
                "duplicate keys", f"POST /countries {label}", "POST", "/countries", body, 201, 422
            )
        )
    cases.append(
        _json_write(
            "duplicate keys",
            "PATCH /records cases twice",
            "PATCH",
            f"/records/{scratch['record']}",
            b'{"cases": 1, "cases": -1}',
            422,
        )
    )
    cases.append(
        _json_write(
            "duplicate keys",
            "POST /records country and country_id twice",
            "POST",
            "/records",
            b'{"country": "Dup c", "country_id": 1, "country_id": null, '
            b'"date": "2003-09-07", "cases": 1}',
            201,
            422,
        )
    )

    # Empty bodies, and JSON that is not an object.
    for method, path, _ in templates:
        for label, body in (
            ("empty", b""),
            ("null", b"null"),
            ("[]", b"[]"),
            ('"text"', b'"x"'),
            ("42", b"42"),
            ("true", b"true"),
            ("whitespace", b"  \n "),
        ):
            cases.append(
                _json_write(
                    "empty / null body", f"{method} {path} {label}", method, path, body, 400, 422
                )
            )

    # NUL bytes in paths and queries.
    for target in (
        "/records/%00",
        "/countries/%00/records",
        "/%00",
        "/records%00",
        "/records?country=%00",
        "/countries?q=%00",
        "/records?cursor=%00",
        "/records?order=id%00",
        "/records/1%00",
        "/stats/daily?date_from=2003-01-01%00",
    ):
        cases.append(
            Case("NUL in path", f"GET {target}", "GET", target, expected=frozenset({404, 422}))
        )

    # Very long paths, queries and headers (~64 KB).
    for label, target in (
        ("path", "/records/" + "9" * LONG),
        ("path segment", "/" + "a" * LONG),
        ("query", "/records?country=" + "a" * LONG),
        ("many parameters", "/records?" + "&".join(f"p{i}=1" for i in range(LONG // 8))),
        ("query of 12 KB", "/records?country=" + "a" * 12_000),
    ):
        cases.append(
            Case(
                "long path / query",
                f"GET {label}",
                "GET",
                target,
                expected=frozenset({200, 400, 404, 414, 422, 431}),
            )
        )
    cases.append(
        Case(
            "long path / query",
            "GET header of 64 KB",
            "GET",
            "/records",
            headers=[("X-Long", "a" * LONG)],
            expected=frozenset({400, 431}),
        )
    )

    # Methods no route has.
    for method in ("FOO", "BREW", "PROPFIND", "TRACE", "PURGE", "LOCK", "get", "SEARCH"):
        for path in ("/records", "/records/1", "/"):
            # Methods are case-sensitive (RFC 9110); "get" is served as GET all the same.
            expected = {200, 405} if method == "get" else {405}
            cases.append(
                Case(
                    "unknown method",
                    f"{method} {path}",
                    method,
                    path,
                    expected=frozenset(expected),
                )
            )
    return cases


def _slow_cases() -> list[Case]:
    """Bodies trickled over SLOW_BODY_SECONDS, run alongside the rest."""
    valid = b'{"name": "Slow body"}'
    invalid = b'{"name": "Slow body", "extra": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]'
    slow = []
    for label, body, expected in (("valid", valid, 201), ("truncated", invalid, 400)):
        case = _json_write(
            "slow body", f"POST /countries {label}", "POST", "/countries", body, expected
        )
        case.trickle = SLOW_BODY_SECONDS
        slow.append(case)
    bulk = _json_write(
        "slow body",
        "POST /records/bulk valid, chunked",
        "POST",
        "/records/bulk",
        b'{"records": [{"country": "Slow bulk", "date": "2003-09-08", "cases": 1}]}',
        200,
    )
    bulk.trickle, bulk.content_length = SLOW_BODY_SECONDS, False
    slow.append(bulk)
    return slow


async def _send(server: LiveServer, case: Case) -> Result:
    """Send ``case`` on a socket of its own and read the answer.

    Plain sockets rather than asyncio streams: a server that answers early (413) and closes
    makes the rest of the upload fail, and a stream would then hide the answer it received.
    """
    headers = list(case.headers)
    framed = case.body is not None and case.content_length
    if case.body is not None and not case.content_length:
        headers.append(("Transfer-Encoding", "chunked"))
    if framed:
        headers.append(("Content-Length", str(len(case.body or b""))))
    head = rawhttp.encode_request(case.method, case.target, host=server.host, headers=headers)
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    sock = socket.socket()
    sock.setblocking(False)
    reader = asyncio.StreamReader(limit=rawhttp.READ_LIMIT)
    try:
        await loop.sock_connect(sock, (server.host, server.port))
        pumping = asyncio.create_task(_pump(loop, sock, reader))
        sending = asyncio.create_task(_write(loop, sock, head, case))
        try:
            async with asyncio.timeout(60):
                response = await rawhttp.read_response(reader, head=case.method == "HEAD")
            return Result(case, response, None, time.monotonic() - started)
        except (IncompleteResponseError, TimeoutError) as error:
            return Result(case, None, type(error).__name__, time.monotonic() - started)
        finally:
            for task in (sending, pumping):
                task.cancel()
            await asyncio.gather(sending, pumping, return_exceptions=True)
    finally:
        sock.close()


async def _pump(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, reader: asyncio.StreamReader
) -> None:
    while True:
        try:
            data = await loop.sock_recv(sock, 65536)
        except OSError:
            data = b""
        if not data:
            reader.feed_eof()
            return
        reader.feed_data(data)


async def _write(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, head: bytes, case: Case
) -> None:
    """The head, then the body: at once, chunked, or trickled over ``case.trickle`` s."""
    try:
        await loop.sock_sendall(sock, head)
        if case.body is None:
            return
        body = case.body
        pieces = 40 if case.trickle else max(1, len(body) // (256 * 1024))
        size = max(1, -(-len(body) // pieces))
        for start in range(0, len(body), size):
            piece = body[start : start + size]
            framed = piece if case.content_length else b"%x\r\n%b\r\n" % (len(piece), piece)
            await loop.sock_sendall(sock, framed)
            if case.trickle:
                await asyncio.sleep(case.trickle / pieces)
        if not case.content_length:
            await loop.sock_sendall(sock, b"0\r\n\r\n")
    except OSError:
        pass  # the server answered (413, 400) and closed before the body was all sent


async def _run_schemathesis(server: LiveServer, workdir: Path) -> dict[str, Any]:
    report = workdir / "schemathesis.json"
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{server.url}/openapi.json",
        *CHECKS,
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--max-examples",
        str(SCHEMATHESIS_EXAMPLES),
        "--seed",
        str(SCHEMATHESIS_SEED),
        "--phases",
        PHASES,
        "--workers",
        "2",
        "--no-color",
        "--generation-database",
        "none",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    started = time.monotonic()
    result = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=600, cwd=workdir
    )
    summary: dict[str, Any] = json.loads(report.read_text()) if report.exists() else {}
    summary["returncode"] = result.returncode
    summary["seconds"] = time.monotonic() - started
    summary["output"] = result.stdout[-6000:]
    return summary


async def _scratch(client: Client) -> dict[str, int]:
    """Rows of the corpus' own for the writes it expects to be accepted."""
    country = await client.request("POST", "/countries", json={"name": "Corpus scratch"})
    source = await client.request("POST", "/sources", json={"title": "Corpus scratch"})
    record = await client.request(
        "POST", "/records", json={"country": "Corpus scratch", "date": "2003-09-09", "cases": 1}
    )
    assert (country.status, source.status, record.status) == (201, 201, 201)
    return {
        "country": country.json()["id"],
        "source": source.json()["id"],
        "record": record.json()["id"],
    }


async def _max_ids(pg_url: str) -> dict[str, int]:
    return {
        table: await database.fetchval(pg_url, f"SELECT coalesce(max(id), 0) FROM {table}")
        for table in ("countries", "records", "sources")
    }


def _explained(results: list[Result], scratch: dict[str, int]) -> dict[str, set[Any]]:
    """Ids (and bulk country names) created by the writes that were answered 2xx."""
    found: dict[str, set[Any]] = defaultdict(set)
    found["countries"].add(scratch["country"])
    found["records"].add(scratch["record"])
    found["sources"].add(scratch["source"])
    for result in results:
        response = result.response
        if result.case.method not in ("POST", "PUT", "PATCH"):
            continue
        if response is None or not 200 <= response.status < 300 or not response.body:
            continue
        body = response.json()
        path = str(result.case.target)
        if path.startswith("/records/bulk"):
            sent = json.loads(result.case.body or b"{}")
            found["bulk countries"].update(item.get("country") for item in sent["records"])
        elif path.startswith("/records"):
            found["records"].add(body["id"])
            found["countries"].add(body["country_id"])
        elif path.startswith("/countries"):
            found["countries"].add(body["id"])
        elif path.startswith("/sources"):
            found["sources"].add(body["id"])
    return found


async def _residue(pg_url: str, before: dict[str, int], found: dict[str, set[Any]]) -> list[str]:
    """Rows created during the corpus that no accepted write accounts for."""
    bulk = sorted(name for name in found["bulk countries"] if name)
    residue = []
    rows = await database.fetch(
        pg_url, "SELECT id, name FROM countries WHERE id > $1", before["countries"]
    )
    residue += [
        f"country {r['id']} {r['name']!r}"
        for r in rows
        if r["id"] not in found["countries"] and r["name"] not in bulk
    ]
    rows = await database.fetch(
        pg_url,
        "SELECT r.id, c.name FROM records r JOIN countries c ON c.id = r.country_id"
        " WHERE r.id > $1",
        before["records"],
    )
    residue += [
        f"record {r['id']} of {r['name']!r}"
        for r in rows
        if r["id"] not in found["records"] and r["name"] not in bulk
    ]
    rows = await database.fetch(pg_url, "SELECT id FROM sources WHERE id > $1", before["sources"])
    residue += [f"source {r['id']}" for r in rows if r["id"] not in found["sources"]]
    return residue


async def _clean_up(client: Client, pg_url: str, before: dict[str, int]) -> Counter[int]:
    """Delete, through the API, everything created since ``before``."""
    statuses: Counter[int] = Counter()
    for table, suffix in (("records", ""), ("sources", ""), ("countries", "?cascade=true")):
        rows = await database.fetch(pg_url, f"SELECT id FROM {table} WHERE id > $1", before[table])
        for row in rows:
            response = await client.request("DELETE", f"/{table}/{row['id']}{suffix}")
            statuses[response.status] += 1
    return statuses


@pytest.mark.reliability
async def test_bad_input_never_gets_a_5xx_nor_changes_the_database(
    pg_url: str, server_log: Path, section: Section, tmp_path: Path
) -> None:
    await database.seed(pg_url, countries=20, days=30)
    with hypercorn(pg_url, server_log) as server:
        checksums_before = await database.checksums(pg_url)
        ids_before = await _max_ids(pg_url)
        async with Client.for_url(server.url, default_headers=AUTH) as client:
            scratch = await _scratch(client)
            corpus = _corpus(scratch)
            slow = [asyncio.create_task(_send(server, case)) for case in _slow_cases()]
            started = time.monotonic()
            results = [await _send(server, case) for case in corpus]
            results += await asyncio.gather(*slow)
            corpus_seconds = time.monotonic() - started
            residue = await _residue(pg_url, ids_before, _explained(results, scratch))
            cleanup = await _clean_up(client, pg_url, ids_before)
        checksums_after = await database.checksums(pg_url)
        # Schemathesis last: its stateful phase deletes and rewrites what it finds.
        st = await _run_schemathesis(server, tmp_path)
        log = server.output()
        problems = server.problems()

    _report(section, st, results, corpus_seconds, residue, cleanup)
    verbatim, altered = _round_trips(results)
    section.figure("injection strings stored and returned verbatim", verbatim)
    five_xx = [r for r in results if r.status is not None and r.status >= 500]
    unexplained_5xx = [r for r in five_xx if not _offset_overflows(r.case)]
    unhandled = log.count("unhandled error")
    overflowed = log.count("OverflowError: value out of int32 range")
    not_problem_json = [
        r
        for r in results
        if r.response is not None
        and r.from_app
        and r.response.status >= 400
        and problem_issues(r.response)
    ]
    section.check(
        "schemathesis: no failure",
        st.get("returncode") == 0,
        f"exit {st.get('returncode')}, {st.get('test_cases', {})}",
    )
    section.check(
        "schemathesis: no failure but 500s on paginated lists (the known defect)",
        _schemathesis_failures_explained(st),
        json.dumps(st.get("failures", []))[:300] or "none",
    )
    section.check("corpus: zero 5xx", not five_xx, len(five_xx))
    section.check(
        "corpus: no 5xx but those of page x per_page beyond int32 (the known defect)",
        not unexplained_5xx,
        len(unexplained_5xx),
    )
    section.check(
        "every error answered by the app is contract problem+json",
        not not_problem_json,
        len(not_problem_json),
    )
    section.check(
        "accepted injection strings come back verbatim", not altered, altered or verbatim
    )
    section.check("no row left by a refused write", not residue, len(residue))
    section.check(
        "database unchanged (checksums of every table, after removing what "
        "accepted writes created)",
        checksums_before == checksums_after,
        {t: (checksums_before[t][0], checksums_after[t][0]) for t in checksums_before},
    )
    section.check("server log has no traceback", "Traceback" not in log, problems or "clean")
    section.check(
        "server log: no unhandled error but int32 overflows (the known defect)",
        unhandled == overflowed and not {k: n for k, n in problems.items() if k != "Traceback"},
        f"{unhandled} unhandled, {overflowed} int32 overflows",
    )
    for result in five_xx[:10]:
        section.note(f"5xx: {result.case.category} / {result.case.name}: {result.status}")
    for result in not_problem_json[:10]:
        assert result.response is not None
        section.note(f"not problem+json: {result.case.name}: {problem_issues(result.response)}")
    for line in residue[:10]:
        section.note(f"residue: {line}")
    section.assert_checks()


def _offset_overflows(case: Case) -> bool:
    """Whether ``case`` asks for a numbered page whose OFFSET exceeds a 32-bit integer."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(str(case.target)).query)
    try:
        page = int(query.get("page", ["1"])[0])
        per_page = int(query.get("per_page", ["50"])[0])
    except ValueError:
        return False
    return (page - 1) * per_page > MAX_INT32


def _schemathesis_failures_explained(st: dict[str, Any]) -> bool:
    """Schemathesis failed only with 500s (and their undocumented status) on list routes."""
    if st.get("returncode") == 0:
        return True
    failures = st.get("failures", [])
    kinds = {failure.get("type") for failure in failures}
    operations = {op for failure in failures for op in failure.get("operations", [])}
    return bool(failures) and kinds <= EXPLAINED_FAILURES and operations <= PAGINATED_LISTS


def _round_trips(results: list[Result]) -> tuple[int, list[str]]:
    """Injection strings that writes stored: each must come back exactly as it was sent."""
    verbatim, altered = 0, []
    for result in results:
        response = result.response
        if result.case.category != "sql injection" or response is None:
            continue
        if result.case.method == "GET" or not 200 <= response.status < 300 or not response.body:
            continue
        sent, answered = json.loads(result.case.body or b"{}"), response.json()
        for key, value in sent.items():
            if value in INJECTIONS and key in answered:
                if answered[key] == value.strip():
                    verbatim += 1
                else:
                    altered.append(f"{result.case.name}: {value!r} -> {answered[key]!r}")
    return verbatim, altered


def _answer(result: Result) -> str | int | None:
    """The status, marked when Hypercorn (h11) answered before the app saw the request."""
    if result.response is None:
        return result.error
    if result.from_app:
        return result.status
    return f"{result.status} from h11, {result.response.content_type or 'no body'}"


def _report(
    section: Section,
    st: dict[str, Any],
    results: list[Result],
    corpus_seconds: float,
    residue: list[str],
    cleanup: Counter[int],
) -> None:
    cases = st.get("test_cases", {})
    section.parameters.update(
        backend="PostgreSQL (600 generated records)",
        schemathesis=f"`schemathesis run /openapi.json --checks all --exclude-checks "
        f"positive_data_acceptance --max-examples {SCHEMATHESIS_EXAMPLES} --seed "
        f"{SCHEMATHESIS_SEED} --phases {PHASES} --workers 2`",
        corpus="raw HTTP/1.1 bytes, one connection per case, sequential (slow bodies alongside)",
        injection_strings=" · ".join(f"`{s}`" for s in INJECTIONS),
        numbers=", ".join(HUGE_NUMBERS),
    )
    section.figure("schemathesis test cases", cases.get("generated", "?"))
    section.figure("schemathesis failures", cases.get("with_failures", "?"))
    section.figure(
        "schemathesis phases",
        {name: phase.get("status") for name, phase in st.get("phases", {}).items()},
    )
    section.figure("schemathesis time (s)", round(st.get("seconds", 0), 1))
    section.figure("corpus cases", len(results))
    section.figure("cases in all", cases.get("generated", 0) + len(results))
    section.figure("corpus time (s)", round(corpus_seconds, 1))
    by_category: dict[str, list[Result]] = defaultdict(list)
    for result in results:
        by_category[result.case.category].append(result)
    for category, found in by_category.items():
        statuses = Counter(_answer(r) for r in found)
        unexpected = sum(
            1 for r in found if r.case.expected and r.from_app and r.status not in r.case.expected
        )
        slowest = max(r.elapsed for r in found)
        section.figure(
            f"{category} ({len(found)})",
            f"{dict(statuses)}; slowest {slowest:.2f} s"
            + (f"; {unexpected} outside the expected statuses" if unexpected else ""),
        )
    for result in results:
        if result.case.expected and result.from_app and result.status not in result.case.expected:
            section.note(
                f"unexpected (not a failure): {result.case.category} / {result.case.name}: "
                f"{result.status}, expected {sorted(result.case.expected)}"
            )
    by_layer = Counter(
        "app" if r.from_app else ("h11" if r.response else "no answer") for r in results
    )
    section.figure("answered by", dict(by_layer))
    section.figure("accepted writes removed afterwards", dict(cleanup))
    section.figure("rows left by refused writes", len(residue))
    warnings = st.get("warnings", {})
    if warnings:
        section.note(f"schemathesis warnings: {json.dumps(warnings)[:400]}")
    five_xx = sum(1 for r in results if r.status is not None and r.status >= 500)
    section.headline = (
        f"{cases.get('generated', 0):,} schemathesis + {len(results)} corpus cases: "
        f"{cases.get('with_failures', '?')} failures, {five_xx} x 5xx, database unchanged"
    )
