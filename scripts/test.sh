#!/usr/bin/env bash
# The whole check: formatting, lints (warnings are errors), every test, schemathesis
# against the generated API description, the fuzz targets for a minute each, and the
# benchmark's smoke run.
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

step "schemathesis against a real server (${SCHEMATHESIS_SECONDS:-90} s)"
# The generated description (docs/openapi.json, served at /api/openapi.json) against the
# server: a fresh SQLite store with the demo organization's 30 days of traffic, every
# check but ignored_auth, failing on any finding.
SCHEMATHESIS_VERSION=4.32.5
venv=.venv-schemathesis
if [ ! -x "$venv/bin/schemathesis" ] || ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet "schemathesis==${SCHEMATHESIS_VERSION}"
fi
cargo build --release --bin whatstat
work="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
target/release/whatstat serve --listen "127.0.0.1:${port}" --master-key schemathesis-master \
    --database-url "sqlite://${work}/whatstat.db" --compact-interval-secs 0 --demo \
    >"${work}/server.log" 2>&1 &
server_pid=$!
stop_server() { kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; rm -rf "$work"; }
trap stop_server EXIT
for _ in $(seq 1 120); do
    [ -s "${work}/demo-api-key" ] && curl -sf "http://127.0.0.1:${port}/health" >/dev/null && break
    sleep 1
done
if [ ! -s "${work}/demo-api-key" ]; then
    echo "error: the server did not come up with demo data; its log:" >&2
    cat "${work}/server.log" >&2
    exit 1
fi
# The demo organization's key and address, for the accounts the hook names in keys.
WHATSTAT_TEST_KEY="$(cat "${work}/demo-api-key")"
WHATSTAT_TEST_URL="http://127.0.0.1:${port}"
export WHATSTAT_TEST_KEY WHATSTAT_TEST_URL
"$venv/bin/schemathesis" run "http://127.0.0.1:${port}/api/openapi.json" \
    --checks all --exclude-checks ignored_auth \
    --header "Authorization: Bearer $(cat "${work}/demo-api-key")" \
    --max-time "${SCHEMATHESIS_SECONDS:-90}" --workers 2 --seed 1
stop_server
trap - EXIT
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

step "fuzz targets, ${FUZZ_SECONDS:-60} s each (scripts/fuzz.sh)"
# cargo-fuzz (installed when missing) on nightly, else stable with RUSTC_BOOTSTRAP=1; each
# target from its seed corpus in fuzz/corpus, failing on any crash.
scripts/fuzz.sh "${FUZZ_SECONDS:-60}"

step "benchmark smoke run (quick mode, no thresholds)"
cargo run --release --bin whatstat-bench -- --quick

step "all checks passed"
