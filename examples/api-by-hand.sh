#!/usr/bin/env bash
# drover's native API by hand, with curl and jq: what the agent and the CLI do, one call at a time.
# A client creates a job; a spot says hello, heartbeats, claims two tasks, completes one and
# fails the other; the client reads the job, its results (JSON and CSV) and the spots.
#
# Run it against a server with no agents of its own (they would claim the tasks first):
#
#   drover server --db "$(mktemp -d)/drover.db" --port 8090 &
#   BASE=http://127.0.0.1:8090 examples/api-by-hand.sh
#
# BASE is the server (default http://127.0.0.1:8080); AGENT_KEY and API_KEY are sent when set,
# as X-Orhestra-Key and Authorization: Bearer. Every step checks its answer, so the script stops at the first
# one that is not what drover promises, with the step's name (it is also drover's smoke test).
set -euo pipefail

BASE="${BASE:-http://127.0.0.1:8080}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

step() { printf '\n=== %s\n' "$*"; }
# A client call (API key when set) and a spot's call (agent key when set); both print the body.
api() {
    curl -sS --fail-with-body -H 'Content-Type: application/json' \
        ${API_KEY:+-H "Authorization: Bearer $API_KEY"} "$@"
}
internal() {
    curl -sS --fail-with-body -H 'Content-Type: application/json' \
        ${AGENT_KEY:+-H "X-Orhestra-Key: $AGENT_KEY"} "$@"
}
# Fails the script with the step's answer unless the jq filter holds for it.
expect() { jq -e "$1" "$2" >/dev/null || { echo "unexpected answer: $(cat "$2")" >&2; exit 1; }; }

step "health"
api "$BASE/api/v1/health" | tee "$work/health.json" | jq .
expect '.status == "healthy" and .database == "connected"' "$work/health.json"

step "create a job: 2 algorithms x 2 iteration counts = 4 tasks"
api -X POST "$BASE/api/v1/jobs" -d '{
  "name": "by hand",
  "jarPath": "/opt/optimizer.jar",
  "mainClass": "com.example.OptRunner",
  "algorithms": ["PSO", "GA"],
  "iterations": {"min": 100, "max": 200, "step": 100}
}' | tee "$work/job.json" | jq .
expect '.success == true and .totalTasks == 4' "$work/job.json"
JOB_ID="$(jq -r .jobId "$work/job.json")"

step "a spot says hello"
internal -X POST "$BASE/internal/v1/hello" -d '{"ipAddress": "127.0.0.1", "totalCores": 4}' |
    tee "$work/hello.json" | jq .
expect '.spotId | startswith("spot-")' "$work/hello.json"
SPOT_ID="$(jq -r .spotId "$work/hello.json")"

step "heartbeat"
internal -X POST "$BASE/internal/v1/heartbeat" \
    -d "{\"spotId\": \"$SPOT_ID\", \"ipAddress\": \"127.0.0.1\", \"cpuLoad\": 10.5, \"runningTasks\": 0, \"totalCores\": 4}" |
    tee "$work/heartbeat.json" | jq .
expect '.success == true' "$work/heartbeat.json"

step "claim two tasks"
internal -X POST "$BASE/internal/v1/tasks/claim" -d "{\"spotId\": \"$SPOT_ID\", \"maxTasks\": 2}" |
    tee "$work/claim.json" | jq .
expect '.tasks | length == 2' "$work/claim.json"
FIRST="$(jq -r '.tasks[0].id' "$work/claim.json")"
SECOND="$(jq -r '.tasks[1].id' "$work/claim.json")"

step "complete the first; the same report again changes nothing"
internal -X POST "$BASE/internal/v1/tasks/$FIRST/complete" \
    -d "{\"spotId\": \"$SPOT_ID\", \"runtimeMs\": 1500, \"iter\": 100, \"fopt\": 0.00123, \"resultJson\": \"{\\\"converged\\\": true}\"}" |
    tee "$work/complete.json" | jq .
expect '.success == true' "$work/complete.json"
internal -X POST "$BASE/internal/v1/tasks/$FIRST/complete" -d "{\"spotId\": \"$SPOT_ID\", \"fopt\": 0.5}" |
    tee "$work/again.json" | jq .
expect '.success == true and .message == "already completed"' "$work/again.json"

step "fail the second: it goes back to the queue for another attempt"
internal -X POST "$BASE/internal/v1/tasks/$SECOND/fail" \
    -d "{\"spotId\": \"$SPOT_ID\", \"error\": \"out of memory\"}" | tee "$work/fail.json" | jq .
expect '.success == true' "$work/fail.json"

step "the job"
api "$BASE/api/v1/jobs/$JOB_ID" | tee "$work/status.json" | jq .
expect '.status == "RUNNING" and .completedTasks == 1 and .pendingTasks == 3 and .runningTasks == 0' \
    "$work/status.json"

step "its results, as JSON and as CSV"
api "$BASE/api/v1/jobs/$JOB_ID/results" | tee "$work/results.json" | jq .
expect ".totalCompleted == 1 and .results[0].taskId == \"$FIRST\" and .results[0].fopt == 0.00123" \
    "$work/results.json"
api "$BASE/api/v1/jobs/$JOB_ID/results?format=csv" | tee "$work/results.csv"
[[ $(wc -l <"$work/results.csv") -eq 2 ]] || { echo "the CSV is not a header and one row" >&2; exit 1; }

step "the spots"
api "$BASE/api/v1/spots" | tee "$work/spots.json" | jq .
expect "any(.spots[]; .id == \"$SPOT_ID\" and .status == \"UP\")" "$work/spots.json"

printf '\nall steps answered as expected\n'
