"""The set-up scripts as a newcomer meets them: installs that take turns, quiet unless they
fail, the example client installed by scripts/serve.sh, and test tiers that cover the suite."""

from __future__ import annotations

import ast
import os
import re
import select
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.live import REPO_ROOT

BOOTSTRAP = REPO_ROOT / "scripts" / "bootstrap.sh"
WAITING = "waiting for another install"
# Stands in for python3 (``-m venv``) and for the virtualenv's python (``-m pip``): it logs
# each call; creating a virtualenv waits for a file the test creates; pip prints noise.
FAKE_PYTHON = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >>"$FAKE_LOG"
if [ "$1 $2" = "-m venv" ]; then
  while [ ! -e "$FAKE_RELEASE" ]; do sleep 0.05; done
  mkdir -p "$3/bin" && cp "$0" "$3/bin/python"
  exit 0
fi
echo "pip noise on stdout"
echo "pip noise on stderr" >&2
exit "${FAKE_PIP_STATUS:-0}"
"""


class FakeInstall:
    """A virtualenv path in tmp_path and the environment that makes bootstrap.sh use fakes."""

    def __init__(self, tmp_path: Path) -> None:
        self.venv = tmp_path / "venv"
        self.log = tmp_path / "calls.log"
        self.release = tmp_path / "release"
        fake = tmp_path / "fakepython"
        fake.write_text(FAKE_PYTHON)
        fake.chmod(0o755)
        self.env = {
            **os.environ,
            "VENV": str(self.venv),
            "CONSTRAINTS": "constraints.txt",
            "PYTHON": str(fake),
            "FAKE_LOG": str(self.log),
            "FAKE_RELEASE": str(self.release),
        }

    def start(self, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(BOOTSTRAP), "dev"],
            env={**self.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def fake_install(tmp_path: Path) -> Iterator[FakeInstall]:
    install = FakeInstall(tmp_path)
    yield install
    install.release.touch()  # whatever the test did, nothing stays blocked


def _wait_for_line(process: subprocess.Popen[str], timeout: float = 60) -> str:
    """The first line ``process`` writes to stderr, or "" if it writes none in ``timeout``."""
    assert process.stderr is not None
    ready, _, _ = select.select([process.stderr], [], [], timeout)
    return process.stderr.readline() if ready else ""


def _finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=60)
    return process.returncode, out, err


def test_two_installs_at_once_take_turns(fake_install: FakeInstall) -> None:
    first = fake_install.start()
    try:
        # The first holds the lock once it is creating the virtualenv.
        deadline = time.monotonic() + 60
        while not any("-m venv" in call for call in fake_install.calls()):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first install never created the venv"
            time.sleep(0.05)
        second = fake_install.start()
        try:
            assert WAITING in _wait_for_line(second)
            assert [c for c in fake_install.calls() if "-m venv" in c] == [
                f"fakepython -m venv {fake_install.venv}"
            ]
        finally:
            fake_install.release.touch()
            second_status, _, _ = _finish(second)
    finally:
        fake_install.release.touch()
        first_status, _, _ = _finish(first)

    assert (first_status, second_status) == (0, 0)
    calls = fake_install.calls()
    assert sum("-m venv" in call for call in calls) == 1
    installs = [call for call in calls if "--editable" in call]
    assert installs == [
        "python -m pip install --quiet --constraint constraints.txt --editable .[dev]"
    ]


def test_an_install_is_quiet_when_it_succeeds(fake_install: FakeInstall) -> None:
    fake_install.release.touch()

    status, out, err = _finish(fake_install.start())

    assert (status, out, err) == (0, "", "")


def test_a_failed_install_shows_what_pip_said(fake_install: FakeInstall) -> None:
    fake_install.release.touch()

    status, _, err = _finish(fake_install.start(FAKE_PIP_STATUS="1"))

    assert status == 1
    assert "failed" in err and "pip noise on stdout" in err and "pip noise on stderr" in err
    assert not list(fake_install.venv.glob(".installed-*"))


def _requirement_names(requirements: list[str]) -> set[str]:
    names = (re.match(r"[A-Za-z0-9._-]+", requirement) for requirement in requirements)
    return {_normalized(name.group()) for name in names if name}


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_example_client_needs_only_what_serve_sh_installs() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    serve = (REPO_ROOT / "scripts" / "serve.sh").read_text()
    extra = re.search(r"scripts/bootstrap\.sh (\w+)", serve)
    assert extra is not None, "scripts/serve.sh should install the example's extra"
    installed = _requirement_names(
        project["dependencies"] + project["optional-dependencies"][extra.group(1)]
    )

    tree = ast.parse((REPO_ROOT / "examples" / "client.py").read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
    }
    third_party = imported - set(sys.stdlib_module_names) - {"__future__"}
    distributions = packages_distributions()
    needed = {_normalized(dist) for module in third_party for dist in distributions[module]}

    assert needed and needed <= installed, needed - installed


def test_constraints_pin_every_dependency_within_its_bounds() -> None:
    """constraints.txt (written by scripts/lock.sh) agrees with pyproject.toml's bounds."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pinned = {}
    for line in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pinned[canonicalize_name(name)] = Version(version)
    requirements = [Requirement(text) for text in project["dependencies"]] + [
        Requirement(text) for extra in project["optional-dependencies"].values() for text in extra
    ]

    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is not in constraints.txt: run scripts/lock.sh"
        assert requirement.specifier.contains(pinned[name]), (
            f"constraints.txt pins {name} {pinned[name]}, outside {requirement.specifier}: "
            "run scripts/lock.sh"
        )


def _collected(*markers: str) -> int:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            *markers,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if "no tests collected" in result.stdout:
        return 0
    found = re.search(r"(\d+)(?:/\d+)? tests? collected", result.stdout)
    assert found, result.stdout[-2000:] + result.stderr[-2000:]
    return int(found.group(1))


@pytest.mark.e2e
def test_every_test_is_in_exactly_one_tier() -> None:
    tiers = ["unit", "integration", "e2e", "reliability"]
    pairs = " or ".join(f"({a} and {b})" for a in tiers for b in tiers if a < b)

    assert _collected("-m", pairs) == 0
    assert _collected("-m", " or ".join(tiers)) == _collected() > 0
