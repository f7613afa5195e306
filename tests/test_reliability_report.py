"""Running the reliability tests never rewrites the tracked reports/reliability.md; only
scripts/reliability-report.sh (which sets RELIABILITY_REPORT) does."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live import REPO_ROOT
from tests.reliability.report import REPORT_VARIABLE, report_path

TRACKED_REPORT = REPO_ROOT / "reports" / "reliability.md"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_without_the_variable_the_report_goes_to_the_runs_scratch_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(REPORT_VARIABLE, raising=False)

    assert report_path(tmp_path) == tmp_path / "reliability.md"


def test_the_variable_names_the_report_relative_to_the_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REPORT_VARIABLE, "reports/reliability.md")

    assert report_path(tmp_path) == TRACKED_REPORT


def test_the_script_asks_for_the_tracked_report() -> None:
    script = (REPO_ROOT / "scripts" / "reliability-report.sh").read_text()

    assert f"{REPORT_VARIABLE}=reports/reliability.md" in script


@pytest.mark.e2e
@pytest.mark.postgresql_only
def test_a_reliability_test_run_leaves_the_tracked_report_alone(
    tmp_path: Path, backend: str
) -> None:
    before = _digest(TRACKED_REPORT)
    env = {key: value for key, value in os.environ.items() if key != REPORT_VARIABLE}
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"),
            *("--basetemp", str(tmp_path / "run"), "tests/reliability/test_auth.py"),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    assert result.returncode == 0, result.stdout[-3000:]
    assert _digest(TRACKED_REPORT) == before
    written = list((tmp_path / "run").glob("reliability[0-9]*/reliability.md"))
    assert len(written) == 1 and "## 6. Auth" in written[0].read_text()
