#!/usr/bin/env bash
# Installs everything the tests need, then runs lint, type checks and the test suite.
# Needs only python3 (3.11+); PostgreSQL at 127.0.0.1:5432 is used when present (required when CI=true).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
# The optional semantic extra too, so that its tests run (DIGEST_TEST_SEMANTIC=0 leaves it out; its
# tests are then skipped). It needs PyTorch: pinned to 2.13.0, which these machines hold as a CPU
# build; unpinned, pip would take the newest build and several GB of CUDA packages with it.
extras=test
if [ "${DIGEST_TEST_SEMANTIC:-1}" != 0 ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check 'torch==2.13.0'
  extras=test,semantic
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]"
# Headless Chromium renders the digest for the visual checks (Debian's package).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
.venv/bin/ruff check digest tests bench
.venv/bin/ruff format --check digest tests bench
.venv/bin/mypy
.venv/bin/python -m pytest -q "$@"
