"""The README cannot rot: its data-loading and tour commands run here against a live service and
must print what the README shows, and every other command it gives is run by a named test or
by .ci/run."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.databases import migrate
from tests.live import REPO_ROOT, live_server

README = REPO_ROOT / "README.md"
SARS_CSV = REPO_ROOT.parent / "shared" / "data" / "sars_2003.csv"
TOKEN = "dev-token"
_BLOCK = re.compile(r"```(\w*)\n(.*?)```", re.DOTALL)
_TIMESTAMP = re.compile(r'"(created_at|updated_at)":"[^"]+"')

# Commands the README gives that this file does not run: where they run for real, and a
# marker that shows it there.
RUN_ELSEWHERE = {
    "scripts/serve.sh": ("tests/test_first_hour.py", '"scripts/serve.sh"'),
    "scripts/test.sh": (".ci/run", "scripts/test.sh"),
    "scripts/test.sh --fast": ("scripts/test-lowest.sh", "scripts/test.sh --fast"),
    "scripts/test-lowest.sh": (".ci/run", "scripts/test-lowest.sh"),
    "scripts/test-replicas.sh": (".ci/run", "scripts/test-replicas.sh"),
    # The suite takes minutes; the test checks the script asks for the tracked report.
    "scripts/reliability-report.sh": ("tests/test_reliability_report.py", "reliability-report.sh"),
    # It resolves from the package index; the test checks what it wrote agrees with the bounds.
    "scripts/lock.sh": ("tests/test_scripts.py", "scripts/lock.sh"),
    "TEST_BACKENDS=sqlite scripts/test.sh": ("tests/conftest.py", "TEST_BACKENDS"),
    "scripts/lint.sh": (".ci/run", "scripts/lint.sh"),
    "scripts/stack.sh": ("tests/test_stack.py", "stack.sh"),
    # "Run the stack", with Docker: tests/test_compose.py runs each, in the README's order.
    "cp deploy/compose.env.example .env": ("tests/test_compose.py", "compose.env.example"),
    "docker compose up -d --build": ("tests/test_compose.py", '"up", "-d", "--build"'),
    "curl localhost:8080/ready": ("tests/test_compose.py", '"/ready"'),
    # The replicas profile: the profile, and DATABASE_REPLICA_URLS, as the README's .env says.
    "docker compose --profile replicas up -d": (
        "tests/test_compose.py",
        '"--profile", "replicas"',
    ),
    "COMPOSE_PROFILES=replicas": ("tests/test_compose.py", '"--profile", "replicas"'),
    "DATABASE_REPLICA_URLS=": ("tests/test_compose.py", '"DATABASE_REPLICA_URLS"'),
    "docker compose --profile load run --rm loader": (
        "tests/test_compose.py",
        '"--profile", "load", "run", "--rm", "loader"',
    ),
    "docker compose up -d --scale api=3": ("tests/test_compose.py", '"--scale", "api=3"'),
    "docker compose -f docker-compose.yml -f docker-compose.pgbouncer.yml up -d": (
        "tests/test_compose.py",
        '"up", "-d", files=PGBOUNCER',
    ),
    "docker compose -f docker-compose.yml -f docker-compose.pgbouncer.yml --profile replicas "
    "down -v": (
        "tests/test_compose.py",
        '*REPLICAS, "down", "-v", files=PGBOUNCER',
    ),
    "scripts/wheelhouse.sh": ("tests/test_compose.py", "scripts/wheelhouse.sh"),
    "WHEELHOUSE=wheelhouse docker compose up -d --build": (
        "tests/test_compose.py",
        '"WHEELHOUSE": "wheelhouse"',
    ),
    ".venv/bin/quart --app service.app db migrate": ("tests/test_cli.py", '"migrate"'),
    ".venv/bin/quart --app service.app db upgrade": ("tests/test_cli.py", '"upgrade"'),
    ".venv/bin/quart --app service.app db check": ("tests/test_cli.py", '"check"'),
}


@dataclass
class Block:
    language: str
    text: str


def _blocks(section: str) -> list[Block]:
    readme = README.read_text()
    start = readme.index(f"## {section}\n")
    end = readme.find("\n## ", start + 1)
    body = readme[start : end if end != -1 else None]
    return [Block(language, text) for language, text in _BLOCK.findall(body)]


def _examples(section: str) -> list[tuple[str, str | None]]:
    """(command, expected output or None) for each shell block of a README section."""
    blocks = _blocks(section)
    pairs: list[tuple[str, str | None]] = []
    for index, block in enumerate(blocks):
        if block.language != "sh":
            continue
        following = blocks[index + 1] if index + 1 < len(blocks) else None
        output = following.text if following and following.language in {"json", "text"} else None
        pairs.append((block.text.strip(), output))
    return pairs


def _mask(text: str) -> str:
    return _TIMESTAMP.sub(r'"\1":"<timestamp>"', text.strip())


def _run(command: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        ["bash", "-c", command],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode in (0, 1), f"{command}\n{result.stderr}"
    return result.stdout


@pytest.mark.e2e
@pytest.mark.sqlite_only
def test_loading_and_the_tour_print_what_the_readme_shows(tmp_path: Path, backend: str) -> None:
    if not SARS_CSV.exists():
        pytest.skip(f"the SARS data set is not at {SARS_CSV} (it lives in ../shared)")
    database_url = f"sqlite+aiosqlite:///{tmp_path}/sars.db"
    migrate(database_url)
    env = {**os.environ, "DATABASE_URL": database_url, "API_TOKENS": TOKEN}
    loading = _examples("Load the real data")
    assert len(loading) == 2
    for command, expected in loading:
        assert expected is not None
        assert _run(command, env).strip() == expected.strip(), command

    with live_server(database_url, tmp_path / "server.log", API_TOKENS=TOKEN) as server:
        tour = _examples("A tour")
        variables, *steps = tour
        assert variables[0] == "API=http://127.0.0.1:8000 TOKEN=dev-token"
        env = {**env, "API": server.url, "TOKEN": TOKEN}
        for command, expected in steps:
            output = _run(command, env)
            if expected is not None:
                assert _mask(output) == _mask(expected), command
        assert len(steps) >= 9


def _readme_commands() -> list[str]:
    readme = README.read_text()
    commands = []
    for language, text in _BLOCK.findall(readme):
        if language == "sh":
            commands += [
                line.split("  #")[0].strip() for line in text.splitlines() if line.strip()
            ]
    return commands


def test_every_readme_command_is_run_somewhere() -> None:
    run_here = {
        command
        for section in ("Load the real data", "A tour")
        for command, _ in _examples(section)
    }
    for command in _readme_commands():
        if command in run_here:
            continue
        prefixes = [prefix for prefix in RUN_ELSEWHERE if command.startswith(prefix)]
        assert prefixes, f"no test runs this README command: {command}"
        where, marker = RUN_ELSEWHERE[max(prefixes, key=len)]
        assert marker in (REPO_ROOT / where).read_text(), (command, where, marker)
