"""A metadata server for tests and local nodes: AWS IMDSv2 spot endpoints and GCP `instance/preempted`.

Run::

    python -m agency_os_spot.node.metadata_emulator --port 18169 [--bind 127.0.0.1]

Local "spot instances" (systemd containers sharing the host's network) each get one on their own
port; their preemption watcher polls it with the AWS protocol (`--mode local`) and the local
capacity role, or a test, announces an interruption through the control endpoints.

Metadata endpoints (answered like the real services, as far as the watcher uses them):

* `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds: 1..21600` → a token
  (400 without a valid TTL). Every `GET /latest/...` needs `X-aws-ec2-metadata-token` with a
  valid, unexpired token, else **401** (IMDSv2 with `http_tokens: required`).
* `GET /latest/meta-data/spot/instance-action` → 404 (HTML body, like IMDS) while nothing is
  pending, then 200 `{"action": "terminate", "time": "2026-01-01T00:02:00Z"}`.
* `GET /latest/meta-data/events/recommendations/rebalance` → 404, then 200 `{"noticeTime": "..."}`.
* `GET /latest/meta-data/instance-id` → `i-emulator-<port>`.
* `GET /computeMetadata/v1/instance/preempted` (needs `Metadata-Flavor: Google`, else 403) →
  `FALSE` / `TRUE`, with an `ETag`. `?wait_for_change=true` long-polls: with `last_etag` it
  answers at once if the value differs from that ETag, otherwise (or without `last_etag`) when
  the value next changes or after `timeout_sec` (then with the unchanged value).

Control endpoints (JSON in, JSON out; never subject to injected failures):

* `POST /_control/notice` `{"action": "terminate", "in_s": 120}`: instance-action answers 200
  with `time` = now + in_s; `preempted` becomes TRUE (long-polls return at once).
* `POST /_control/rebalance` `{"in_s": 0}`: the rebalance recommendation appears.
* `POST /_control/fail` `{"status": 500, "count": N}` or `{"mode": "timeout"|"reset"|"malformed",
  "count": N, "delay_s": 30, "path": "/latest/api/token"}`: the next N metadata requests (all of
  them if `count` is absent; only those for `path` if given) answer that status / hang `delay_s`
  and close without an answer / close at once / answer 200 with a body no client can parse
  (notice endpoints only). `{"count": 0}` clears it.
* `POST /_control/revoke-tokens`: every issued token becomes invalid (the next GET gets 401).
* `POST /_control/reset`: no notice, no rebalance, no failure, counters at zero (tokens stay).
* `GET /_control/state`: counters (requests, token_requests, unauthorized, injected failures,
  per path) and the current notice, rebalance, preempted flag and long-polls in progress.

SIGTERM or SIGINT: stops serving, wakes every pending long-poll, exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import secrets
import signal
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN_PATH = "/latest/api/token"  # noqa: S105  a URL path, not a secret
INSTANCE_ACTION_PATH = "/latest/meta-data/spot/instance-action"
REBALANCE_PATH = "/latest/meta-data/events/recommendations/rebalance"
INSTANCE_ID_PATH = "/latest/meta-data/instance-id"
PREEMPTED_PATH = "/computeMetadata/v1/instance/preempted"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"  # noqa: S105  a header name, not a secret
MAX_TTL_S = 21600
MAX_LONG_POLL_S = 3600
NOTICE_PATHS = (INSTANCE_ACTION_PATH, REBALANCE_PATH, PREEMPTED_PATH)
AWS_ACTIONS = ("terminate", "stop", "hibernate")
IMDS_404 = (
    b'<?xml version="1.0" encoding="iso-8859-1"?>\n<!DOCTYPE html>\n<html><head><title>404 - Not Found</title>'
    b"</head><body><h1>404 - Not Found</h1></body></html>\n"
)


def aws_time(epoch: float) -> str:
    """IMDS timestamps: UTC, seconds, `Z` suffix."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


class EmulatorState:
    """Everything the handlers share; one lock, one condition for the GCP long-polls."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.closing = False
        self.tokens: dict[str, float] = {}  # token -> monotonic expiry
        self.notice: dict[str, str] | None = None
        self.rebalance: dict[str, str] | None = None
        self.preempted = False
        self.failure: dict[str, Any] | None = None
        self.long_polls = 0
        self.counts: Counter[str] = Counter()
        self.by_path: Counter[str] = Counter()

    # Called with the condition held.
    def preempted_value(self) -> str:
        return "TRUE" if self.preempted else "FALSE"

    def preempted_etag(self) -> str:
        return hashlib.sha256(self.preempted_value().encode()).hexdigest()[:16]

    def take_failure(self, path: str) -> dict[str, Any] | None:
        """The failure to inject into this metadata request, if any (consumes one of `count`)."""
        failure = self.failure
        if failure is None or (failure["path"] or path) != path:
            return None
        if failure["mode"] == "malformed" and path not in NOTICE_PATHS:
            return None
        if failure["count"] is not None:
            failure["count"] -= 1
            if failure["count"] <= 0:
                self.failure = None
        self.counts["failures_injected"] += 1
        return failure

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.counts["requests"],
            "token_requests": self.counts["token_requests"],
            "unauthorized": self.counts["unauthorized"],
            "failures_injected": self.counts["failures_injected"],
            "by_path": dict(self.by_path),
            "tokens_valid": sum(1 for expiry in self.tokens.values() if expiry > time.monotonic()),
            "notice": self.notice,
            "rebalance": self.rebalance,
            "preempted": self.preempted,
            "failure": self.failure,
            "long_polls": self.long_polls,
        }


class Handler(BaseHTTPRequestHandler):
    server: EmulatorServer
    protocol_version = "HTTP/1.1"

    # -- plumbing ------------------------------------------------------------------------------

    def version_string(self) -> str:
        return "EC2ws"  # what IMDS calls itself

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Log control requests and errors; routine 200/404 answers to polls would flood the journal."""
        status = int(code) if str(code).isdigit() else 0
        if self.path.startswith("/_control/") or status not in (200, 404):
            super().log_request(code, size)

    def log_message(self, format: str, *args: Any) -> None:
        """One JSON line per request on stdout (the journal on a node)."""
        print(
            json.dumps({"event": "request", "client": self.client_address[0], "line": format % args}),
            flush=True,
        )

    def _send(self, status: int, body: bytes = b"", content_type: str = "text/plain", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _read_json(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            return {}
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("a JSON object is expected")
        return data

    def _drop_connection(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(2)

    def _inject(self, path: str) -> bool:
        """Apply an injected failure to this metadata request; True when it was answered/dropped."""
        state = self.server.state
        with state.cond:
            failure = state.take_failure(path)
        if failure is None:
            return False
        mode = failure["mode"]
        if mode == "malformed":
            self._send(200, b'{"action": "terminate", "time": <truncated', "text/plain", Metadata_Flavor="Google")
        elif mode == "status":
            self._send(failure["status"], f"{failure['status']} - injected failure\n".encode())
        elif mode == "timeout":
            with state.cond:
                state.cond.wait_for(lambda: state.closing, timeout=failure["delay_s"])
            self._drop_connection()
        else:  # reset
            self._drop_connection()
        return True

    # -- verbs ---------------------------------------------------------------------------------

    def do_PUT(self) -> None:
        path = urlsplit(self.path).path
        if path.startswith("/_control/"):
            self._send(405)
            return
        self._count(path)
        if self._inject(path):
            return
        if path != TOKEN_PATH:
            self._send(404, IMDS_404, "text/html")
            return
        state = self.server.state
        ttl_raw = self.headers.get(TTL_HEADER, "")
        if not ttl_raw.isdigit() or not 1 <= int(ttl_raw) <= MAX_TTL_S:
            self._send(400, b"400 - Bad Request\n")
            return
        if self.headers.get("X-Forwarded-For"):  # IMDSv2 refuses tokens to proxied requests
            self._send(403, b"403 - Forbidden\n")
            return
        token = secrets.token_urlsafe(42)
        with state.cond:
            state.counts["token_requests"] += 1
            now = time.monotonic()
            state.tokens = {t: e for t, e in state.tokens.items() if e > now}
            state.tokens[token] = now + int(ttl_raw)
        self._send(200, token.encode(), **{TTL_HEADER: ttl_raw})

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path.startswith("/_control/"):
            self._control_get(url.path)
            return
        self._count(url.path)
        if self._inject(url.path):
            return
        if url.path.startswith("/computeMetadata/"):
            self._gcp(url.path, parse_qs(url.query))
        elif url.path.startswith("/latest/"):
            self._aws(url.path)
        else:
            self._send(404, IMDS_404, "text/html")

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if not path.startswith("/_control/"):
            self._count(path)
            self._send(405)
            return
        try:
            body = self._read_json()
            self._control_post(path, body)
        except (ValueError, TypeError, KeyError) as exc:
            self._json(400, {"error": str(exc)})

    def _count(self, path: str) -> None:
        with self.server.state.cond:
            self.server.state.counts["requests"] += 1
            self.server.state.by_path[path] += 1

    # -- AWS -----------------------------------------------------------------------------------

    def _aws(self, path: str) -> None:
        state = self.server.state
        token = self.headers.get(TOKEN_HEADER, "")
        with state.cond:
            valid = state.tokens.get(token, 0.0) > time.monotonic()
            if not valid:
                state.counts["unauthorized"] += 1
            notice, rebalance = state.notice, state.rebalance
        if not valid:
            self._send(401, b"401 - Unauthorized\n", "text/html")
        elif path == INSTANCE_ACTION_PATH and notice is not None:
            self._send(200, json.dumps(notice).encode())
        elif path == REBALANCE_PATH and rebalance is not None:
            self._send(200, json.dumps(rebalance).encode())
        elif path == INSTANCE_ID_PATH:
            self._send(200, f"i-emulator-{self.server.server_address[1]}".encode())
        else:
            self._send(404, IMDS_404, "text/html")

    # -- GCP -----------------------------------------------------------------------------------

    def _gcp(self, path: str, query: dict[str, list[str]]) -> None:
        if self.headers.get("Metadata-Flavor") != "Google" or self.headers.get("X-Forwarded-For"):
            self._send(403, b"Missing Metadata-Flavor:Google header.\n", "text/html")
            return
        if path != PREEMPTED_PATH:
            self._send(404, b"Not Found\n", "text/html", Metadata_Flavor="Google")
            return
        state = self.server.state
        wait = query.get("wait_for_change", ["false"])[0].lower() == "true"
        try:
            timeout = min(float(query.get("timeout_sec", [str(MAX_LONG_POLL_S)])[0]), MAX_LONG_POLL_S)
        except ValueError:
            self._send(400, b"Invalid timeout_sec\n", Metadata_Flavor="Google")
            return
        last_etag = query.get("last_etag", [None])[0]
        with state.cond:
            start_value = state.preempted_value()
            if wait and (last_etag is None or last_etag == state.preempted_etag()):
                state.long_polls += 1
                try:
                    state.cond.wait_for(
                        lambda: state.closing or state.preempted_value() != start_value, timeout=max(timeout, 0)
                    )
                finally:
                    state.long_polls -= 1
            value, etag = state.preempted_value(), state.preempted_etag()
        self._send(200, value.encode(), "application/text", Metadata_Flavor="Google", ETag=etag)

    # -- control -------------------------------------------------------------------------------

    def _control_get(self, path: str) -> None:
        if path != "/_control/state":
            self._json(404, {"error": f"unknown control endpoint {path}"})
            return
        with self.server.state.cond:
            snapshot = self.server.state.snapshot()
        self._json(200, snapshot)

    def _control_post(self, path: str, body: dict[str, Any]) -> None:
        state = self.server.state
        with state.cond:
            if path == "/_control/notice":
                action = str(body.get("action", "terminate"))
                if action not in AWS_ACTIONS:
                    raise ValueError(f"action must be one of {', '.join(AWS_ACTIONS)}")
                state.notice = {"action": action, "time": aws_time(time.time() + float(body.get("in_s", 120)))}
                state.preempted = True
            elif path == "/_control/rebalance":
                state.rebalance = {"noticeTime": aws_time(time.time() + float(body.get("in_s", 0)))}
            elif path == "/_control/fail":
                state.failure = _failure(body)
            elif path == "/_control/revoke-tokens":
                state.tokens.clear()
            elif path == "/_control/reset":
                state.notice = state.rebalance = state.failure = None
                state.preempted = False
                state.counts.clear()
                state.by_path.clear()
            else:
                self._json(404, {"error": f"unknown control endpoint {path}"})
                return
            state.cond.notify_all()
            snapshot = state.snapshot()
        print(json.dumps({"event": "control", "path": path, "body": body}), flush=True)
        self._json(200, snapshot)


def _failure(body: dict[str, Any]) -> dict[str, Any] | None:
    count = body.get("count")
    if count is not None and int(count) <= 0:
        return None
    mode = str(body.get("mode", "status"))
    if mode not in ("status", "timeout", "reset", "malformed"):
        raise ValueError("mode must be status, timeout, reset or malformed")
    status = int(body.get("status", 500))
    if mode == "status" and not 400 <= status <= 599:
        raise ValueError("status must be an HTTP error status (400-599)")
    path = body.get("path")
    if path is not None and not str(path).startswith("/"):
        raise ValueError("path must be a URL path such as /latest/api/token")
    return {
        "mode": mode,
        "path": path,
        "status": status,
        "count": None if count is None else int(count),
        "delay_s": float(body.get("delay_s", 30)),
    }


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, Handler)
        self.state = EmulatorState()

    def stop(self) -> None:
        """Wake every waiting request (long-polls, injected timeouts), then end serve_forever()."""
        with self.state.cond:
            self.state.closing = True
            self.state.cond.notify_all()
        self.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agency-os-spot metadata-emulator", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    args = parser.parse_args(argv)
    server = EmulatorServer((args.bind, args.port))
    stopping = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        if not stopping.is_set():
            stopping.set()
            # shutdown() waits for serve_forever() to return: call it from another thread.
            threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(json.dumps({"event": "listening", "bind": args.bind, "port": server.server_address[1]}), flush=True)
    server.serve_forever(poll_interval=0.1)
    server.server_close()
    print(json.dumps({"event": "stopped"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
