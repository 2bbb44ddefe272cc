#!/usr/bin/env python3
"""A tiny session runner for drover: serves HTTP for one session and heartbeats to drover.

drover starts one of these per user session (the process driver runs it as a child process,
the Docker driver as the command of a container built from the Dockerfile beside it). Python's
standard library only.

What it reads from its environment, as drover's drivers set it:

    LISTEN_FDS=1             the process driver hands over a listening socket as fd 3: serve on it
    PORT                     otherwise bind this port on every address (inside a container)
    DROVER_RUNNER_SESSION_ID the session this runner serves; its heartbeats name it
    DROVER_RUNNER_TOKEN      the session token, sent as X-Runner-Token (needed with --api-key)
    DROVER_URL               drover's base URL; without it the runner sends no heartbeats
    HEARTBEAT_SECONDS        how often to heartbeat [default: 20, a third of drover's 60s timeout]

What it serves: GET / answers JSON naming the session and how many heartbeats drover took;
GET /health answers "ok". Every heartbeat is `POST $DROVER_URL/api/runner/heartbeat` with
{"sessionId": ...}. When drover answers 404 the runner is no longer known (deprovisioned, or
reaped), so it exits. It exits on SIGTERM, which is how drover stops it.
"""
import http.server
import json
import os
import signal
import socket
import sys
import threading
import urllib.error
import urllib.request

SESSION = os.environ.get("DROVER_RUNNER_SESSION_ID", "")
TOKEN = os.environ.get("DROVER_RUNNER_TOKEN", "")
DROVER_URL = os.environ.get("DROVER_URL", "").rstrip("/")
EVERY = float(os.environ.get("HEARTBEAT_SECONDS", "20"))

state = {"heartbeats": 0}
stopping = threading.Event()


def log(message):
    print(f"runner {SESSION}: {message}", file=sys.stderr, flush=True)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            self.answer(200, "text/plain", b"ok\n")
        elif self.path == "/":
            body = {"session": SESSION, "heartbeats": state["heartbeats"]}
            self.answer(200, "application/json", json.dumps(body).encode() + b"\n")
        else:
            self.answer(404, "text/plain", b"not found\n")

    def answer(self, status, kind, body):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def heartbeat():
    """One heartbeat; True while drover still knows this runner."""
    request = urllib.request.Request(
        f"{DROVER_URL}/api/runner/heartbeat",
        data=json.dumps({"sessionId": SESSION}).encode(),
        headers={"Content-Type": "application/json", "X-Session-Id": SESSION},
        method="POST",
    )
    if TOKEN:
        request.add_header("X-Runner-Token", TOKEN)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()
        state["heartbeats"] += 1
        return True
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return False
        log(f"heartbeat refused: {e.code} {e.read()[:200]!r}")
    except OSError as e:
        # drover may be restarting: try again at the next beat.
        log(f"heartbeat failed: {e}")
    return True


def beat(server):
    while True:
        if not heartbeat():
            log("drover no longer knows this runner; exiting")
            stopping.set()
            server.shutdown()
            return
        if stopping.wait(EVERY):
            return


def listening_server():
    if os.environ.get("LISTEN_FDS") == "1":
        inherited = socket.socket(fileno=3)
        server = http.server.ThreadingHTTPServer(
            inherited.getsockname()[:2], Handler, bind_and_activate=False
        )
        server.socket.close()
        server.socket = inherited
        return server
    return http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "3000"))), Handler)


def main():
    server = listening_server()

    def stop(*_):
        stopping.set()
        # shutdown() waits for serve_forever to return: not from the thread that runs it.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(f"serving on port {server.socket.getsockname()[1]}")
    if DROVER_URL and SESSION:
        threading.Thread(target=beat, args=(server,), daemon=True).start()
    else:
        log("no DROVER_URL or session id: sending no heartbeats")
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
