#!/usr/bin/env bash
# Fuzzes the parsers behind the HTTP edge with cargo-fuzz (the targets are in fuzz/, see
# docs/reliability.md): builds every target, then runs each for SECONDS (default 60) from
# the committed seed corpus, copied to a work directory so that a run leaves the tree as
# it was. Prints per target the inputs run, the corpus size and the crashes; fails if any
# target crashed (a panic, an input slower than FUZZ_TIMEOUT, running out of memory).
# The corpus size is libFuzzer's (the inputs it keeps, superseded ones left out) and the
# files of the work directory's corpus (every input that ever added coverage).
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]      (targets: events webhook query csv)
#
# Environment:
#   FUZZ_WORK     the work directory (corpus, crash inputs, logs, progress). Given, it is
#                 kept, and a run with the same one resumes: each target goes on from its
#                 grown corpus for what is left of its SECONDS. Default: a temporary one,
#                 removed at the end unless a target crashed.
#   FUZZ_TIMEOUT  seconds one input may take before it counts as a crash (default 25).
#   FUZZ_SESSION  the longest single libFuzzer run, in seconds (default 600): progress is
#                 recorded after each, and every 10 seconds in between.
#
# Time counts only while the fuzzer runs: a fuzzer paused with `kill -STOP` (and resumed
# with `kill -CONT`) gets its full SECONDS. Needs nightly Rust (`rustup toolchain list`),
# else runs stable with RUSTC_BOOTSTRAP=1; installs cargo-fuzz when it is missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO_FUZZ_VERSION=0.13.2
ALL_TARGETS=(events webhook query csv)

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "error: SECONDS is \`$seconds\`; allowed: a whole number of seconds above 0" >&2
    echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]  (targets: ${ALL_TARGETS[*]})" >&2
    exit 2
fi
shift || true
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=("${ALL_TARGETS[@]}")
for t in "${targets[@]}"; do
    if [[ ! " ${ALL_TARGETS[*]} " =~ [[:space:]]${t}[[:space:]] ]]; then
        echo "error: unknown target \`$t\`; allowed: ${ALL_TARGETS[*]}" >&2
        exit 2
    fi
done
timeout_secs="${FUZZ_TIMEOUT:-25}"
session_secs="${FUZZ_SESSION:-600}"

step() { printf '\n==> %s\n' "$*"; }

installed="$(cargo fuzz --version 2>/dev/null || true)"
if [[ "$installed" != *"$CARGO_FUZZ_VERSION"* ]]; then
    step "installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

# cargo-fuzz needs a nightly compiler's options: nightly when installed, else stable told
# to accept them.
toolchains="$(rustup toolchain list 2>/dev/null || true)"
if grep -q '^nightly' <<<"$toolchains"; then
    fuzz=(cargo +nightly fuzz)
    rustc_vv="$(rustc +nightly -vV)"
else
    fuzz=(env RUSTC_BOOTSTRAP=1 cargo fuzz)
    rustc_vv="$(rustc -vV)"
fi
host="$(sed -n 's/^host: //p' <<<"$rustc_vv")"

step "building the fuzz targets (${fuzz[*]} build, no sanitizer; output in fuzz/target)"
# Safe Rust needs no address sanitizer; debug assertions (and overflow checks) stay on.
"${fuzz[@]}" build --sanitizer none
bin_dir="fuzz/target/${host}/release"

if [ -n "${FUZZ_WORK:-}" ]; then
    work="$FUZZ_WORK"
    keep_work=1
else
    work="$(mktemp -d "${TMPDIR:-/tmp}/whatstat-fuzz.XXXXXX")"
    keep_work=0
fi
mkdir -p "$work"
work="$(cd "$work" && pwd)"

# A process's state letter from /proc (T: stopped), empty once it is gone.
proc_state() {
    local stat=""
    { read -r stat <"/proc/$1/stat"; } 2>/dev/null || true
    stat="${stat##*) }"
    echo "${stat%% *}"
}

# The inputs run in a libFuzzer log: the final count, else the last status line's.
execs_in() {
    local n
    n="$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$1" | tail -n 1)"
    if [ -z "$n" ]; then
        n="$(sed -n 's/^#\([0-9][0-9]*\)[[:space:]].*/\1/p' "$1" | tail -n 1)"
    fi
    echo "${n:-0}"
}

# libFuzzer's last word on its corpus: "cov: N ft: N corp: N/SIZE".
corpus_in() { grep -o 'cov: [0-9]* ft: [0-9]* corp: [0-9]*/[0-9]*[a-zA-Z]*' "$1" | tail -n 1 || true; }

crash_files() { find "$1" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | sort; }

failed=0
summary=()
for target in "${targets[@]}"; do
    step "fuzzing \`$target\` for ${seconds} s"
    corpus="$work/corpus/$target"
    artifacts="$work/artifacts/$target"
    logs="$work/logs/$target"
    progress="$work/$target.progress"
    mkdir -p "$artifacts" "$logs" "$work/tmp"
    if [ ! -d "$corpus" ]; then
        mkdir -p "$corpus"
        cp fuzz/corpus/"$target"/* "$corpus"/
    fi
    # Progress: seconds fuzzed, inputs run, libFuzzer runs, over every earlier run.
    done_secs=0 execs=0 sessions=0
    if [ -s "$progress" ]; then
        read -r done_secs execs sessions <"$progress"
    fi
    dict=()
    [ -f "fuzz/dict/$target.dict" ] && dict=("-dict=fuzz/dict/$target.dict")
    crashed=0
    while [ "$done_secs" -lt "$seconds" ] && [ "$crashed" -eq 0 ]; do
        chunk=$((seconds - done_secs))
        [ "$chunk" -gt "$session_secs" ] && chunk="$session_secs"
        sessions=$((sessions + 1))
        log="$logs/run-${sessions}.log"
        # TMPDIR: the query target's store, removed with the work directory.
        TMPDIR="$work/tmp" "$bin_dir/$target" "$corpus" "${dict[@]}" \
            -artifact_prefix="$artifacts/" -timeout="$timeout_secs" -rss_limit_mb=2048 \
            -print_final_stats=1 >"$log" 2>&1 &
        pid=$!
        # Seconds the fuzzer ran: wall time while it is not stopped. A gap longer than
        # 30 s between two looks is this script having been stopped too, and not counted.
        ran=0 last="$(date +%s)" looks=0
        while :; do
            sleep 1
            state="$(proc_state "$pid")"
            [ -z "$state" ] || [ "$state" = Z ] && break
            now="$(date +%s)"
            gap=$((now - last))
            last="$now"
            if [ "$state" != T ] && [ "$gap" -le 30 ]; then
                ran=$((ran + gap))
            fi
            if [ "$ran" -ge "$chunk" ]; then
                kill -INT "$pid" 2>/dev/null || true
                break
            fi
            looks=$((looks + 1))
            if [ $((looks % 10)) -eq 0 ]; then
                echo "$((done_secs + ran)) $((execs + $(execs_in "$log"))) $sessions" >"$progress"
            fi
        done
        rc=0
        wait "$pid" || rc=$?
        done_secs=$((done_secs + ran))
        execs=$((execs + $(execs_in "$log")))
        echo "$done_secs $execs $sessions" >"$progress"
        # 0: done; 72: stopped by the interrupt above. Anything else is a finding.
        if [ -n "$(crash_files "$artifacts")" ] || { [ "$rc" -ne 0 ] && [ "$rc" -ne 72 ]; }; then
            crashed=1
            echo "libFuzzer stopped with status $rc; the end of its log ($log):"
            tail -n 40 "$log"
        fi
    done
    last="$(corpus_in "$logs/run-${sessions}.log" 2>/dev/null || true)"
    kept="${last##*corp: }"
    cov="${last%% ft:*}"
    units="$(find "$corpus" -type f | wc -l)"
    bytes="$(du -sb "$corpus" | cut -f1)"
    crashes="$(crash_files "$artifacts" | wc -l)"
    if [ "$crashed" -ne 0 ] || [ "$crashes" -gt 0 ]; then
        failed=1
        [ "$crashes" -gt 0 ] || crashes=1
        echo "crash inputs in $artifacts:"
        crash_files "$artifacts" | sed 's/^/  /'
        echo "replay one with: $bin_dir/$target <file>"
    fi
    line="$(printf '%-8s %6s s %11s runs %3s crashes; corpus %s inputs (%s) in memory, %s files (%s bytes) on disk; %s' \
        "$target" "$done_secs" "$execs" "$crashes" "${kept%%/*}" "${kept#*/}" "$units" "$bytes" "${cov:-cov: ?}")"
    echo "$line"
    summary+=("$line")
done

step "fuzzing summary (work directory: $work)"
printf '%s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
    echo "error: a fuzz target crashed; its inputs are kept in $work/artifacts" >&2
    exit 1
fi
if [ "$keep_work" -eq 0 ]; then
    rm -rf "$work"
fi
