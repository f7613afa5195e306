"""Settings: a bad value stops every entry point with one line and a non-zero status, and no
message shows a database password or a secret."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from service.app import create_app
from service.settings import (
    DEVELOPMENT_CURSOR_SECRET,
    ConfigError,
    load_settings,
    masked_url,
)
from tests.conftest import TOKEN
from tests.live import REPO_ROOT, free_port

PASSWORD = "pw-Zq81s3cret"
# Database URLs that do not parse or are refused, each with PASSWORD in it.
MALFORMED_URLS = [
    f"::://user:{PASSWORD}@db/sars",
    f"postgresql://user:{PASSWORD}@db:notaport/sars",
    f"postgres ql://user:{PASSWORD}@db/sars",
    f"postgresql://user:pw@{PASSWORD}@db:port/sars",
    f"mysql://user:{PASSWORD}@db/sars",
    f"postgresql+psycopg2://user:{PASSWORD}@db/sars",
]


def _entry_points() -> dict[str, list[str]]:
    python = sys.executable
    hypercorn = [
        *(python, "-m", "hypercorn", "--config", "hypercorn.toml"),
        *("--bind", f"127.0.0.1:{free_port()}"),
    ]
    return {
        "server": [*hypercorn, "service.serve:app"],
        # Several workers: one line still, and no semaphore of the main process left behind.
        "server, 3 workers": [*hypercorn, "--workers", "3", "service.serve:app"],
        # No worker: Hypercorn loads the app in its main process.
        "server, no worker": [*hypercorn, "--workers", "0", "service.app:app"],
        "cli": [python, "-m", "quart", "--app", "service.app", "db", "current"],
        "migrations": [python, "-m", "alembic", "upgrade", "head"],
        "loader": [python, "-m", "service.load", "README.md"],
    }


def _run(command: list[str], **environment: str) -> tuple[int, list[str]]:
    env = {**os.environ, "API_TOKENS": TOKEN, **environment}
    done = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    output = (done.stdout + done.stderr).splitlines()
    return done.returncode, [line for line in output if line.strip()]


@pytest.mark.e2e
@pytest.mark.parametrize(
    "entry_point",
    ["server", "server, 3 workers", "server, no worker", "cli", "migrations", "loader"],
)
@pytest.mark.parametrize(
    "setting",
    [("DB_POOL_SIZE", "abc"), ("LOG_FORMAT", "xml"), ("DATABASE_URL", MALFORMED_URLS[0])],
)
def test_a_bad_setting_stops_every_entry_point_with_one_line(
    entry_point: str, setting: tuple[str, str]
) -> None:
    name, value = setting
    extra = {} if name == "DATABASE_URL" else {"DATABASE_URL": "sqlite+aiosqlite:///unused.db"}
    status, lines = _run(_entry_points()[entry_point], **extra, **{name: value})
    assert status != 0, lines
    assert len(lines) == 1, lines
    assert "configuration error" in lines[0] and name in lines[0], lines
    assert PASSWORD not in lines[0]


@pytest.mark.parametrize("url", MALFORMED_URLS)
def test_a_malformed_database_url_is_refused_without_its_password(url: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings({"DATABASE_URL": url})
    assert "DATABASE_URL" in str(refused.value)
    assert PASSWORD not in str(refused.value)
    assert PASSWORD not in masked_url(url)


def test_settings_never_show_their_secrets() -> None:
    settings = load_settings(
        {
            "DATABASE_URL": f"postgresql://user:{PASSWORD}@db/sars",
            "API_TOKENS": "token-Zq81",
            "CURSOR_SECRET": "cursor-Zq81-secret",
        }
    )
    shown = f"{settings!r} {settings!s}"
    for secret in (PASSWORD, "token-Zq81", "cursor-Zq81-secret"):
        assert secret not in shown


def test_masked_url_keeps_what_locates_the_database() -> None:
    assert masked_url(f"postgresql://user:{PASSWORD}@db:5432/sars") == (
        "postgresql://user:***@db:5432/sars"
    )
    assert masked_url("sqlite+aiosqlite:///sars.db") == "sqlite+aiosqlite:///sars.db"


@pytest.mark.parametrize(
    ("database_url", "secret", "warned"),
    [
        ("postgresql+asyncpg://user:pw@db/sars", DEVELOPMENT_CURSOR_SECRET, True),
        ("postgresql+asyncpg://user:pw@db/sars", "a-secret-of-our-own", False),
        ("sqlite+aiosqlite:///sars.db", DEVELOPMENT_CURSOR_SECRET, False),
    ],
)
def test_the_development_cursor_secret_is_a_warning_outside_sqlite(
    caplog: pytest.LogCaptureFixture, database_url: str, secret: str, warned: bool
) -> None:
    with caplog.at_level(logging.WARNING, logger="service.app"):
        create_app({"DATABASE_URL": database_url, "CURSOR_SECRET": secret})
    warnings = [r for r in caplog.records if r.name == "service.app" and "CURSOR_SECRET" in r.msg]
    assert bool(warnings) == warned
    assert all(r.levelno == logging.WARNING for r in warnings)
