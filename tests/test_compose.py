"""docker-compose.yml refuses to start without the secrets that have no safe default."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.live import REPO_ROOT, needs_commands


def _compose_config(**environment: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CURSOR_SECRET"}
    return subprocess.run(
        ["docker-compose", "config", "-q"],
        cwd=REPO_ROOT,
        env={**env, **environment},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.e2e
@needs_commands("docker-compose")
def test_the_stack_refuses_to_start_without_a_cursor_secret() -> None:
    for missing in ({}, {"CURSOR_SECRET": ""}):
        refused = _compose_config(**missing)
        assert refused.returncode != 0
        assert "CURSOR_SECRET" in refused.stderr
    assert _compose_config(CURSOR_SECRET="a-secret-of-our-own").returncode == 0


@pytest.mark.e2e
@needs_commands("docker-compose")
def test_the_example_env_file_must_be_completed() -> None:
    example = str(REPO_ROOT / "deploy" / "compose.env.example")
    done = subprocess.run(
        ["docker-compose", "--env-file", example, "config", "-q"],
        cwd=REPO_ROOT,
        env={k: v for k, v in os.environ.items() if k != "CURSOR_SECRET"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "CURSOR_SECRET" in done.stderr
