#!/usr/bin/env bash
# bench-post.sh BIN DIR [DBURL]: starts BIN serve on a fresh store, creates an organization, posts DIR/*.ndjson
# with 4 concurrent connections and prints events/s and the peak RSS.
set -euo pipefail
bin=$1; dir=$2; db=${3:-sqlite:///tmp/prof/whatstat.db}
rm -rf /tmp/prof; mkdir -p /tmp/prof
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
$bin serve --listen 127.0.0.1:$port --master-key m --database-url "$db" --compact-interval-secs 0 >/tmp/prof/server.log 2>&1 &
pid=$!; echo $pid > /tmp/prof/pid
# Up to a minute: a server under valgrind starts slowly.
for _ in $(seq 300); do curl -sf http://127.0.0.1:$port/health >/dev/null && break; sleep 0.2; done
key=$(curl -sf -H 'Authorization: Bearer m' -H 'content-type: application/json' -d '{"name":"P","timezone":"Asia/Kolkata"}' http://127.0.0.1:$port/api/admin/orgs | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["api_key"])')
echo "$port $key" > /tmp/prof/addr
[ -n "${BEFORE_POST:-}" ] && eval "$BEFORE_POST"
t0=$(date +%s.%N)
ls $dir/*.ndjson | xargs -P4 -I{} sh -c "curl -sf -o /dev/null -w '%{http_code}\n' -H 'Authorization: Bearer $key' -H 'content-type: application/x-ndjson' --data-binary @{} 'http://127.0.0.1:$port/api/events${QS:-}' | grep -qx 200 || echo FAIL {}"
t1=$(date +%s.%N)
n=$(cat $dir/*.ndjson | wc -l)
python3 -c "print(f'{$n} events in {$t1-$t0:.2f}s = {$n/($t1-$t0):.0f} events/s')"
grep VmHWM /proc/$pid/status
[ -n "${KEEP:-}" ] || { kill $pid; wait $pid 2>/dev/null || true; }
