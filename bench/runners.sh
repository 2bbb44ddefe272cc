#!/usr/bin/env bash
# Latency of session runners on the Docker driver, through the real server: N sequential
# provisions of new sessions, N provisions of the same (existing) sessions, N deprovisions.
#
#   bench/runners.sh [N] [IMAGE]      (defaults: 20, drover-test-runner:latest)
#
# Needs a release build (cargo build --release -p drover) and a Docker engine; builds the test
# image with scripts/runner-test-image if it is missing. Starts its own server on a free
# loopback port with a temporary database, and removes every container it started.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
n="${1:-20}"
image="${2:-drover-test-runner:latest}"
drover="${DROVER:-$root/target/release/drover}"
[[ -x $drover ]] || { echo "build first: cargo build --release -p drover" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }
"$root/scripts/runner-test-image" "$image" 3000 >/dev/null

dir="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$drover" server --port "$port" --grpc-port 0 --db "$dir/drover.db" --runner-driver docker \
    --runner-image "$image" --max-runners "$((n + 10))" >"$dir/server.log" 2>&1 &
server=$!
cleanup() {
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
base="http://127.0.0.1:$port"
for _ in $(seq 100); do curl -sf "$base/api/v1/health" >/dev/null && break; sleep 0.1; done

each() { # each PATH EXPECTED_STATUS: N calls, one session each; prints ms per call
    local path=$1 expected=$2 start end code
    start=$(date +%s%N)
    for i in $(seq "$n"); do
        code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$base$path" -H "X-Session-Id: bench-$i")
        [[ $code == "$expected" ]] || { echo "$path for bench-$i answered $code" >&2; exit 1; }
    done
    end=$(date +%s%N)
    echo $(( (end - start) / n / 1000000 ))
}
new=$(each /api/runner/provision 201)
existing=$(each /api/runner/provision 200)
gone=$(each /api/runner/deprovision 200)
left=$(docker ps -aq --filter label=io.drover.managed-by=drover | wc -l)
echo "runners n=$n provision_new_ms=$new provision_existing_ms=$existing deprovision_ms=$gone containers_left=$left"
