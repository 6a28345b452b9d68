#!/usr/bin/env bash
# The whole check: formatting, lints (warnings are errors) and every test.
# Needs PostgreSQL on 127.0.0.1:5432 (started here if it is not running).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PG_HOST=127.0.0.1
PG_PORT=5432

step() { printf '\n==> %s\n' "$*"; }

step "PostgreSQL at ${PG_HOST}:${PG_PORT}"
if ! pg_isready -h "$PG_HOST" -p "$PG_PORT" >/dev/null 2>&1; then
    version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1 || true)"
    if [ -z "$version" ]; then
        echo "error: PostgreSQL is not running at ${PG_HOST}:${PG_PORT} and no cluster is configured in /etc/postgresql" >&2
        exit 1
    fi
    echo "not running; starting cluster ${version}/main"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 1 30); do
        pg_isready -h "$PG_HOST" -p "$PG_PORT" >/dev/null 2>&1 && break
        sleep 1
    done
    if ! pg_isready -h "$PG_HOST" -p "$PG_PORT"; then
        echo "error: PostgreSQL is still not ready at ${PG_HOST}:${PG_PORT} after starting cluster ${version}/main" >&2
        exit 1
    fi
fi
pg_isready -h "$PG_HOST" -p "$PG_PORT"

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "cargo test --all-targets"
cargo test --all-targets

step "WHATSTAT_TEST_BACKEND=postgres cargo test --tests"
# The whole integration and property suite again, on PostgreSQL at ${PG_HOST}:${PG_PORT}:
# each test in a fresh schema of its own (tests/common/backend.rs). An unreachable
# server fails these tests; they are never skipped.
WHATSTAT_TEST_BACKEND=postgres \
WHATSTAT_TEST_POSTGRES_URL="postgres://postgres@${PG_HOST}:${PG_PORT}/postgres" \
    cargo test --tests

step "dashboard in a real browser (Chromium, tests/browser)"
# Debian's chromium, driven by playwright-core (pinned in tests/browser/package-lock.json);
# the page is served by the debug binary built by the test steps above.
if [ ! -x /usr/bin/chromium ]; then
    echo "installing Debian's chromium"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi
cargo build --bin whatstat
(cd tests/browser && npm ci --no-audit --no-fund && npm test)

step "benchmark smoke run (quick mode, no thresholds)"
cargo run --release --bin whatstat-bench -- --quick

step "all checks passed"
