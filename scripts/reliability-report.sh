#!/usr/bin/env bash
# Run the reliability suite (tests/reliability) and write its figures to reports/reliability.md.
# The tests themselves never write the tracked report; this command asks for it explicitly.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

RELIABILITY_REPORT=reports/reliability.md exec scripts/test.sh -m reliability -v "$@"
