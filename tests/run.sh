#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh machine, then run it.
# Extra arguments go to pytest, e.g. `bash tests/run.sh -k http -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash setup.sh --test
.venv/bin/python -m ruff check .
exec .venv/bin/python -m pytest "$@"
