#!/usr/bin/env python3
"""A DistriQueue-style worker for the priority-router tests: the independent client that pulls
jobs from RabbitMQ's priority queues and reports on them over HTTP, knowing only the contract.

The contract, as the existing workers consume it:
- Exchange `jobs.exchange` (direct, durable). Queues `job.high`, `job.medium` and `job.low`,
  durable, declared with `x-max-priority` 10, 5 and 1 as their only argument, each bound to the
  exchange with its own name as routing key. The worker declares them too (declaring is
  idempotent when the arguments agree, and the broker refuses it when they do not), unless
  told not to with --no-declare.
- A message's body is the job as JSON (`id`, `type`, `priority`, `payload`, ...).
- The worker pulls high first: basic.get on job.high, then job.medium, then job.low.
- It reports with `PUT {api}/api/jobs/{id}/status`: `{"status": "running", "workerId": W}`,
  then `{"status": "completed", "workerId": W, "result": {...}}` (or `"failed"` with an
  `errorMessage`); a 200 or 202 answer is success. It acknowledges the message after both.
- It heartbeats with `POST {api}/api/workers/heartbeat`, `{"worker_id": W, "worker_type": T,
  "capacity": 10, "current_load": n}`, at start and then every --heartbeat-every seconds.

With --out, it appends one JSON line per message it took: the queue, the message's `priority`
and `delivery_mode` properties, whether it was redelivered, the parsed body, the HTTP status
codes of its reports (null where no answer came) and whether the ack went through.

It exits 0 when it stops as told (--jobs, --idle-exit, SIGTERM or SIGINT), 1 when the broker
refuses it (e.g. a queue declared with other arguments) or stays unreachable for
--reconnect-for seconds. A broker that goes away is reconnected to: a message whose ack was
lost is delivered again, and shows as redelivered.

Only the standard library and pika.
"""

import argparse
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import pika
import pika.exceptions

EXCHANGE = "jobs.exchange"
# Pulled in this order; with each queue's x-max-priority.
QUEUES = [("job.high", 10), ("job.medium", 5), ("job.low", 1)]
CAPACITY = 10
# How long to wait between rounds of basic.get when all three queues are empty.
POLL_SECONDS = 0.05


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--amqp", required=True, help="AMQP URL, e.g. amqp://guest:guest@127.0.0.1:5672/%%2f")
    p.add_argument("--api", required=True, help="base URL of the HTTP API, e.g. http://127.0.0.1:8081")
    p.add_argument("--worker-id", default=f"python-worker-{uuid.uuid4().hex[:8]}")
    p.add_argument("--worker-type", default="python")
    p.add_argument("--jobs", type=int, default=0, metavar="N",
                   help="stop after handling N messages (0: no limit)")
    p.add_argument("--idle-exit", type=float, default=0, metavar="SECONDS",
                   help="stop when all three queues were empty that long (0: never)")
    p.add_argument("--heartbeat-every", type=float, default=10, metavar="SECONDS",
                   help="seconds between heartbeats (0: none at all)")
    p.add_argument("--out", metavar="FILE", help="append one JSON line per message taken")
    p.add_argument("--fail-ids", default="", metavar="ID,ID",
                   help="job ids to report failed (with an errorMessage) instead of completed")
    p.add_argument("--stop-heartbeat-after", type=int, default=0, metavar="N",
                   help="on taking the Nth message: stop heartbeating, report it running, write "
                        "its --out line, then hang without acking it (the AMQP connection kept "
                        "open, so the broker holds it unacked) until killed")
    p.add_argument("--work-seconds", type=float, default=0, metavar="SECONDS",
                   help="time a job takes between its running and completed reports")
    p.add_argument("--no-declare", action="store_true",
                   help="use the exchange and queues as they are, declaring nothing")
    p.add_argument("--declare-only", action="store_true",
                   help="declare the exchange and queues, then exit")
    p.add_argument("--reconnect-for", type=float, default=60, metavar="SECONDS",
                   help="how long to keep trying to reach the broker before giving up")
    args = p.parse_args(argv)
    args.fail_ids = {i for i in args.fail_ids.split(",") if i}
    args.api = args.api.rstrip("/")
    return args


def log(args, message):
    print(f"priority_worker[{args.worker_id}]: {message}", file=sys.stderr, flush=True)


def http(method, url, body):
    """Sends `body` as JSON; returns the answer's status code, or None when none came."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()
            return answer.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return None


class State:
    """What the main loop and the heartbeat thread share."""

    def __init__(self):
        self.lock = threading.Lock()
        self.current_load = 0
        self.stop = threading.Event()
        self.heartbeats_off = threading.Event()


def heartbeat_loop(args, state):
    url = f"{args.api}/api/workers/heartbeat"
    while not state.heartbeats_off.is_set():
        with state.lock:
            load = state.current_load
        code = http("POST", url, {
            "worker_id": args.worker_id,
            "worker_type": args.worker_type,
            "capacity": CAPACITY,
            "current_load": load,
        })
        if code not in (200, 202):
            log(args, f"heartbeat answered {code}")
        if state.heartbeats_off.wait(args.heartbeat_every):
            return


def declare(channel):
    channel.exchange_declare(exchange=EXCHANGE, exchange_type="direct", durable=True)
    for name, max_priority in QUEUES:
        channel.queue_declare(queue=name, durable=True, arguments={"x-max-priority": max_priority})
        channel.queue_bind(queue=name, exchange=EXCHANGE, routing_key=name)


# Losing the broker (stopped, restarted, unreachable): reconnect. Anything else it says is final.
CONNECTION_LOST = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.ConnectionWrongStateError,
    pika.exceptions.ChannelWrongStateError,
)


def connect(args):
    """A connection and channel, the topology declared unless --no-declare; retries while the
    broker is unreachable, for up to --reconnect-for seconds."""
    deadline = time.monotonic() + args.reconnect_for
    said = False
    while True:
        try:
            connection = pika.BlockingConnection(pika.URLParameters(args.amqp))
            channel = connection.channel()
            if not args.no_declare:
                declare(channel)
            if said:
                log(args, "reconnected")
            return connection, channel
        except CONNECTION_LOST as e:
            if time.monotonic() >= deadline:
                raise
            if not said:
                log(args, f"broker unreachable ({e!r}); retrying for up to {args.reconnect_for}s")
                said = True
            time.sleep(0.5)


def take(channel):
    """The first message of job.high, job.medium, job.low, in that order; or None."""
    for name, _ in QUEUES:
        method, properties, body = channel.basic_get(queue=name, auto_ack=False)
        if method is not None:
            return name, method, properties, body
    return None


def result_for(args, job):
    payload = job.get("payload")
    payload = payload if isinstance(payload, dict) else {}
    result = {"processed_by": args.worker_id}
    numbers = payload.get("numbers")
    if isinstance(numbers, list) and all(
        isinstance(n, (int, float)) and not isinstance(n, bool) for n in numbers
    ):
        result.update({"sum": sum(numbers), "count": len(numbers)})
    else:
        result["echo"] = payload
    return result


def write_line(args, line):
    if not args.out:
        return
    data = (json.dumps(line) + "\n").encode()
    # One write on an O_APPEND descriptor: lines of workers sharing a file do not interleave.
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def pause(connection, seconds):
    """Sleeps while serving the AMQP connection (its heartbeats); plain sleep once it is gone."""
    try:
        connection.sleep(seconds)
    except CONNECTION_LOST:
        time.sleep(seconds)


def hang(args, state, connection):
    log(args, "silent now: no heartbeats, no ack, until killed")
    while not state.stop.is_set():
        pause(connection, 1.0)
    # Stopped by a signal: exit without acking; the broker requeues the message.
    os._exit(0)


def handle(args, state, connection, channel, taken, number):
    """Reports on one message and acks it; returns its --out line."""
    queue, method, properties, body = taken
    line = {
        "worker_id": args.worker_id,
        "queue": queue,
        "priority": properties.priority,
        "delivery_mode": properties.delivery_mode,
        "redelivered": bool(method.redelivered),
        "body": None,
        "status_codes": [],
        "acked": False,
    }
    try:
        job = json.loads(body)
        line["body"] = job
    except ValueError:
        job = None
        line["body"] = body.decode(errors="replace")
        line["error"] = "body is not JSON"
    job_id = job.get("id") if isinstance(job, dict) else None
    silent = args.stop_heartbeat_after and number == args.stop_heartbeat_after
    if silent:
        state.heartbeats_off.set()
    if job_id is not None:
        url = f"{args.api}/api/jobs/{job_id}/status"
        with state.lock:
            state.current_load += 1
        try:
            line["status_codes"].append(
                http("PUT", url, {"status": "running", "workerId": args.worker_id}))
            if silent:
                write_line(args, line)
                hang(args, state, connection)
            if args.work_seconds > 0:
                pause(connection, args.work_seconds)
            if str(job_id) in args.fail_ids:
                report = {
                    "status": "failed",
                    "workerId": args.worker_id,
                    "errorMessage": f"job {job_id} failed on purpose (--fail-ids)",
                }
            else:
                report = {
                    "status": "completed",
                    "workerId": args.worker_id,
                    "result": result_for(args, job),
                }
            line["status_codes"].append(http("PUT", url, report))
        finally:
            with state.lock:
                state.current_load -= 1
        for code in line["status_codes"]:
            if code not in (200, 202):
                log(args, f"job {job_id}: status report answered {code}")
    else:
        log(args, f"message from {queue} holds no job id; acked without reports")
        if silent:
            write_line(args, line)
            hang(args, state, connection)
    try:
        channel.basic_ack(delivery_tag=method.delivery_tag)
        line["acked"] = True
    except CONNECTION_LOST as e:
        log(args, f"ack lost with the connection ({e!r}); the broker will deliver it again")
    write_line(args, line)
    return line


def work(args, state):
    connection, channel = connect(args)
    log(args, "connected")
    handled = 0
    idle_since = time.monotonic()
    try:
        while not state.stop.is_set():
            try:
                taken = take(channel)
            except CONNECTION_LOST as e:
                log(args, f"lost the broker ({e!r}); reconnecting")
                connection, channel = connect(args)
                idle_since = time.monotonic()
                continue
            if taken is None:
                if args.idle_exit and time.monotonic() - idle_since >= args.idle_exit:
                    log(args, f"queues empty for {args.idle_exit}s; stopping")
                    break
                pause(connection, POLL_SECONDS)
                continue
            handled += 1
            line = handle(args, state, connection, channel, taken, handled)
            idle_since = time.monotonic()
            if not line["acked"]:
                connection, channel = connect(args)
                idle_since = time.monotonic()
            if args.jobs and handled >= args.jobs:
                log(args, f"handled {handled} messages; stopping")
                break
    finally:
        try:
            connection.close()
        except Exception:
            pass


def main(argv):
    args = parse_args(argv)
    if args.declare_only:
        try:
            connection, _ = connect(args)
            connection.close()
        except (pika.exceptions.AMQPError, OSError) as e:
            log(args, f"declaring failed: {e!r}")
            return 1
        return 0
    state = State()

    def stop(signum, frame):
        state.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.heartbeat_every > 0:
        threading.Thread(target=heartbeat_loop, args=(args, state), daemon=True).start()
    try:
        work(args, state)
    except pika.exceptions.AMQPError as e:
        log(args, f"the broker refused or stayed unreachable: {e!r}")
        return 1
    finally:
        state.heartbeats_off.set()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
