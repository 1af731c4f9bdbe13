"""Preemption watcher: drain the Prefect worker as soon as the node's interruption notice arrives.

Run by `preemption-watcher.service` (roles/preemption_watcher)::

    python -m agency_os_spot.node.watcher --mode aws|gcp|local --metadata-url URL [--interval 5]
        [--rebalance log|drain] [--drain-command "systemctl stop prefect-worker.service"] [--timeout 2]

Modes:

* **aws** — IMDSv2 at `--metadata-url` (default http://169.254.169.254): a session token from
  `PUT /latest/api/token` (renewed before it expires, fetched again on a 401), then every
  `--interval` seconds (AWS recommends 5) `GET /latest/meta-data/spot/instance-action`: 404 means
  nothing is pending, 200 `{"action": "terminate|stop|hibernate", "time": ...}` means drain now.
  `GET /latest/meta-data/events/recommendations/rebalance` (200 `{"noticeTime": ...}`) is logged,
  or drains with `--rebalance drain`.
* **gcp** — `GET {url}/computeMetadata/v1/instance/preempted` with `Metadata-Flavor: Google`
  (default url http://metadata.google.internal): one plain read, then long-polls with
  `wait_for_change=true`, the last `ETag` (a change between two polls answers at once) and
  `timeout_sec=--long-poll`; the client waits `--timeout` longer than that. `TRUE` drains.
* **local** — the AWS protocol against the node's own `agency_os_spot.node.metadata_emulator` (the embedded
  local default: each local node has an emulator on its own loopback port, which the local
  capacity role drives). `--metadata-url` is required.

What counts as a notice is strict: only a 200 with a well-formed body. Timeouts, refused
connections, 5xx and other statuses, and bodies that do not parse are logged and retried with a
capped exponential backoff (`--interval` doubling up to `--max-backoff`); they never drain.

Draining runs `--drain-command` once (default `systemctl stop prefect-worker.service`: the worker
unit's ExecStop drains its flow runs) and logs its exit code, duration and output. The watcher then
stays alive and idle (the unit stays active and shows what it did; nothing restarts it). The notice
is recorded in `--state-file` before the command starts (under /run: until the next boot); a watcher
restarted after that (a crash, a new configuration) does not drain again and idles at once.

Every event is one JSON line on stdout (with a `<N>` syslog priority prefix under journald). Under
systemd (`Type=notify`) it reports READY=1 once started and a STATUS= line per state.
SIGTERM/SIGINT: exit 0 at once, whatever it is doing.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlencode

DEFAULT_URLS = {"aws": "http://169.254.169.254", "gcp": "http://metadata.google.internal"}
TOKEN_PATH = "/latest/api/token"  # noqa: S105  a URL path, not a secret
INSTANCE_ACTION_PATH = "/latest/meta-data/spot/instance-action"
REBALANCE_PATH = "/latest/meta-data/events/recommendations/rebalance"
PREEMPTED_PATH = "/computeMetadata/v1/instance/preempted"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"  # noqa: S105  a header name, not a secret
AWS_ACTIONS = ("terminate", "stop", "hibernate")
MAX_BODY = 64 * 1024
GCP_MIN_GAP_S = 1.0  # at most one GCP request a second, even if long-polls return early
_PRIORITIES = {"error": 3, "warning": 4, "info": 6}


class Stopped(BaseException):
    """SIGTERM/SIGINT: raised from the signal handler to interrupt whatever blocks (a long-poll)."""


class MetadataError(Exception):
    """The metadata service did not give a usable answer (never a reason to drain)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


def log(event: str, level: str = "info", **fields: Any) -> None:
    """One JSON line per event; journald reads the `<N>` prefix as the priority."""
    record = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), "level": level, "event": event, **fields}
    prefix = f"<{_PRIORITIES[level]}>" if os.environ.get("JOURNAL_STREAM") else ""
    print(prefix + json.dumps(record, default=str), flush=True)


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) about readiness/status; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode())


# -- HTTP (standard library only) --------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Metadata services do not redirect; a 3xx is an answer to report, not to follow."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class Response:
    status: int
    body: bytes
    headers: Any


class Http:
    """urllib without proxies (an http_proxy in the environment must not see metadata requests)
    and without redirects; transport failures become MetadataError."""

    def __init__(self) -> None:
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())

    def request(self, method: str, url: str, headers: dict[str, str], timeout: float) -> Response:
        req = urllib.request.Request(url, method=method, headers=headers)  # noqa: S310  http(s) only: parse_args checks it
        try:
            try:
                with self._opener.open(req, timeout=timeout) as resp:
                    return Response(resp.status, resp.read(MAX_BODY), resp.headers)
            except urllib.error.HTTPError as exc:
                with contextlib.closing(exc):
                    return Response(exc.code, exc.read(MAX_BODY), exc.headers)
        except TimeoutError as exc:
            raise MetadataError("timeout", f"{method} {url}: no answer within {timeout:g} s") from exc
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                raise MetadataError("timeout", f"{method} {url}: no answer within {timeout:g} s") from exc
            kind = "refused" if isinstance(reason, ConnectionRefusedError) else "connection"
            raise MetadataError(kind, f"{method} {url}: {reason}") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise MetadataError("connection", f"{method} {url}: {type(exc).__name__}: {exc}") from exc


# -- what the metadata service says ------------------------------------------------------------


@dataclass
class Notice:
    """An interruption (or, with kind "rebalance", a rebalance recommendation) to act on."""

    kind: str  # instance-action | rebalance | preempted
    key: str  # identifies this notice (recorded in the state file: drain once per notice)
    details: dict[str, Any]


@dataclass
class Observation:
    notice: Notice | None = None
    rebalance: Notice | None = None


def _seconds_until(stamp: str) -> float | None:
    with contextlib.suppress(ValueError):
        return round((datetime.fromisoformat(stamp.replace("Z", "+00:00")) - datetime.now(UTC)).total_seconds(), 1)
    return None


def _json_object(path: str, body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise MetadataError("malformed", f"{path}: 200 with a body that is not JSON: {body[:120]!r}") from exc
    if not isinstance(data, dict):
        raise MetadataError("malformed", f"{path}: 200 with JSON that is not an object: {body[:120]!r}")
    return data


def parse_instance_action(body: bytes) -> Notice:
    """`{"action": "terminate|stop|hibernate", "time": "...Z"}` → a notice; anything else raises."""
    data = _json_object(INSTANCE_ACTION_PATH, body)
    action, when = data.get("action"), data.get("time")
    if action not in AWS_ACTIONS or not isinstance(when, str):
        raise MetadataError("malformed", f"{INSTANCE_ACTION_PATH}: unexpected instance action {data!r}")
    return Notice(
        "instance-action",
        f"instance-action:{action}:{when}",
        {"action": action, "time": when, "seconds_left": _seconds_until(when)},
    )


def parse_rebalance(body: bytes) -> Notice:
    """`{"noticeTime": "...Z"}` → a rebalance recommendation; anything else raises."""
    data = _json_object(REBALANCE_PATH, body)
    when = data.get("noticeTime")
    if not isinstance(when, str):
        raise MetadataError("malformed", f"{REBALANCE_PATH}: unexpected recommendation {data!r}")
    return Notice("rebalance", f"rebalance:{when}", {"notice_time": when})


class ImdsSource:
    """AWS IMDSv2 (and the local emulator, which speaks the same protocol)."""

    def __init__(self, base_url: str, http: Http, timeout: float, token_ttl: int) -> None:
        self.base_url, self.http, self.timeout, self.token_ttl = base_url, http, timeout, token_ttl
        self.token: str | None = None
        self.renew_at = 0.0
        self.poll_delay: float | None = None  # use the interval

    def _token(self, reason: str) -> str:
        if self.token is not None and time.monotonic() < self.renew_at:
            return self.token
        if self.token is not None:
            reason = "renew"
        resp = self.http.request("PUT", self.base_url + TOKEN_PATH, {TTL_HEADER: str(self.token_ttl)}, self.timeout)
        token = resp.body.decode(errors="replace").strip()
        if resp.status != 200 or not token or any(c.isspace() or not c.isprintable() for c in token):
            raise MetadataError(
                "token", f"PUT {TOKEN_PATH}: status {resp.status}, body {resp.body[:80]!r} (no usable token)"
            )
        # Renew well before expiry: a fifth of the TTL early, at most a minute.
        self.token, self.renew_at = token, time.monotonic() + self.token_ttl - min(60.0, self.token_ttl / 5)
        log("token_acquired", reason=reason, ttl_s=self.token_ttl)
        return token

    def _get(self, path: str) -> Response:
        resp = self.http.request("GET", self.base_url + path, {TOKEN_HEADER: self._token("initial")}, self.timeout)
        if resp.status == 401:
            log("token_rejected", level="warning", path=path, detail="401: fetching a new token")
            self.token = None
            resp = self.http.request("GET", self.base_url + path, {TOKEN_HEADER: self._token("401")}, self.timeout)
            if resp.status == 401:
                raise MetadataError("unauthorized", f"GET {path}: 401 even with a fresh token")
        return resp

    def _read(self, path: str, parse: Any) -> Notice | None:
        resp = self._get(path)
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise MetadataError("status", f"GET {path}: HTTP {resp.status} {resp.body[:80]!r}")
        return parse(resp.body)

    def check(self) -> Observation:
        notice = self._read(INSTANCE_ACTION_PATH, parse_instance_action)
        if notice is not None:
            return Observation(notice=notice)
        return Observation(rebalance=self._read(REBALANCE_PATH, parse_rebalance))


class GcpSource:
    """GCE metadata server: `instance/preempted`, long-polled with wait_for_change and last_etag."""

    def __init__(self, base_url: str, http: Http, timeout: float, long_poll: int) -> None:
        self.base_url, self.http, self.timeout, self.long_poll = base_url, http, timeout, long_poll
        self.etag: str | None = None

    @property
    def poll_delay(self) -> float | None:
        # With an ETag the server does the waiting; without one, poll at the interval.
        return 0.0 if self.etag else None

    def check(self) -> Observation:
        url, timeout = self.base_url + PREEMPTED_PATH, self.timeout
        if self.etag is not None:
            query = {"wait_for_change": "true", "last_etag": self.etag, "timeout_sec": str(self.long_poll)}
            url, timeout = f"{url}?{urlencode(query)}", self.long_poll + self.timeout
        resp = self.http.request("GET", url, {"Metadata-Flavor": "Google"}, timeout)
        if resp.status != 200:
            raise MetadataError("status", f"GET {PREEMPTED_PATH}: HTTP {resp.status} {resp.body[:80]!r}")
        value = resp.body.decode(errors="replace").strip()
        if value not in ("TRUE", "FALSE"):
            raise MetadataError("malformed", f"{PREEMPTED_PATH}: expected TRUE or FALSE, got {resp.body[:80]!r}")
        self.etag = resp.headers.get("ETag") or None
        if value == "TRUE":
            return Observation(notice=Notice("preempted", "gcp:preempted", {"preempted": True}))
        return Observation()


# -- the watcher -------------------------------------------------------------------------------


class Watcher:
    def __init__(self, args: argparse.Namespace, source: ImdsSource | GcpSource) -> None:
        self.args, self.source = args, source
        self.drained = False
        self.state_file = Path(args.state_file) if args.state_file else None
        self.previous = self._load_state()

    def _load_state(self) -> dict[str, Any] | None:
        """The drain an earlier watcher recorded (in /run: since this boot), if any."""
        if self.state_file is None:
            return None
        try:
            state = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            # A drain was at least started: better not to drain twice than to guess.
            log("state_unreadable", level="warning", path=str(self.state_file), error=str(exc))
            return {"unreadable": str(exc)}
        return state if isinstance(state, dict) else {"record": state}

    def _save_state(self, notice: Notice, reason: str) -> None:
        if self.state_file is None:
            return
        record = {"key": notice.key, "reason": reason, "at": datetime.now(UTC).isoformat(timespec="seconds")}
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        try:
            tmp.write_text(json.dumps(record) + "\n")
            tmp.replace(self.state_file)
        except OSError as exc:
            log("state_not_saved", level="warning", path=str(self.state_file), error=str(exc))

    def run(self) -> NoReturn:
        args = self.args
        log(
            "start",
            mode=args.mode,
            metadata_url=args.metadata_url,
            interval_s=args.interval,
            rebalance=args.rebalance,
            drain_command=args.drain_command,
            pid=os.getpid(),
        )
        sd_notify(f"READY=1\nSTATUS=starting: {args.mode} metadata at {args.metadata_url}")
        if self.previous is not None:
            log(
                "already_drained",
                drained=self.previous,
                detail=f"a drain is recorded in {self.state_file}: not again (delete it to watch again)",
            )
            sd_notify(
                f"STATUS=drained earlier ({self.previous.get('reason', 'see the state file')}); idle until stopped"
            )
            self.idle()
        errors, down_since, watching = 0, 0.0, False
        seen_rebalance: str | None = None
        polls, errors_total, last_heartbeat = 0, 0, time.monotonic()
        while True:
            started = time.monotonic()
            if started - last_heartbeat >= args.heartbeat:
                log("heartbeat", polls=polls, errors_total=errors_total)
                last_heartbeat = started
            polls += 1
            try:
                seen = self.source.check()
            except MetadataError as exc:
                errors, errors_total = errors + 1, errors_total + 1
                down_since = down_since or started
                delay = min(args.max_backoff, args.interval * 2 ** min(errors - 1, 20))
                log(
                    "metadata_error",
                    level="warning",
                    kind=exc.kind,
                    error=str(exc),
                    consecutive=errors,
                    retry_in_s=round(delay, 3),
                )
                sd_notify(f"STATUS=metadata error ({exc.kind}), retrying in {delay:g} s; nothing drained")
                time.sleep(delay)
                continue
            if errors:
                log("metadata_recovered", after_errors=errors, down_s=round(time.monotonic() - down_since, 3))
                errors, down_since, watching = 0, 0.0, False
            if not watching:
                watching = True
                log("watching", detail="the metadata service answers", notice_pending=seen.notice is not None)
                if seen.notice is None:
                    sd_notify(f"STATUS=watching {args.mode} metadata at {args.metadata_url}: nothing pending")
            if seen.notice is not None:
                self._act(seen.notice, f"{seen.notice.kind} notice")
            if seen.rebalance is not None and seen.rebalance.key != seen_rebalance:
                seen_rebalance = seen.rebalance.key
                log("rebalance_recommendation", level="warning", action=args.rebalance, **seen.rebalance.details)
                if args.rebalance == "drain":
                    self._act(seen.rebalance, "rebalance recommendation")
            # Long-polling (the server waited): never more than one request per GCP_MIN_GAP_S.
            delay = self.source.poll_delay
            delay = args.interval if delay is None else max(delay, GCP_MIN_GAP_S - (time.monotonic() - started))
            if delay > 0:
                time.sleep(delay)

    def _act(self, notice: Notice, reason: str) -> NoReturn:
        """Record the drain (before it starts: never twice, even after a crash), drain, idle."""
        if notice.kind != "rebalance":
            log("interruption_notice", level="warning", kind=notice.kind, **notice.details)
        self._save_state(notice, reason)
        self.drain(reason)
        self.idle()

    def drain(self, reason: str) -> None:
        """Run the drain command once; log its exit code, duration and output."""
        argv = shlex.split(self.args.drain_command)
        log("drain_start", reason=reason, command=argv)
        sd_notify(f"STATUS=draining ({reason}): {self.args.drain_command}")
        started = time.monotonic()
        self.drained = True
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        except OSError as exc:
            log("drain_failed", level="error", error=str(exc), duration_s=round(time.monotonic() - started, 3))
            sd_notify(f"STATUS=drain failed ({reason}): {exc}")
            return
        try:
            output, _ = proc.communicate(timeout=self.args.drain_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
            log(
                "drain_timeout",
                level="error",
                pid=proc.pid,
                timeout_s=self.args.drain_timeout,
                output=output.decode(errors="replace")[-2000:],
            )
            sd_notify(f"STATUS=drain command timed out after {self.args.drain_timeout:g} s ({reason})")
            return
        duration = round(time.monotonic() - started, 3)
        log(
            "drain_done",
            level="info" if proc.returncode == 0 else "error",
            exit_code=proc.returncode,
            duration_s=duration,
            output=output.decode(errors="replace")[-2000:],
        )
        sd_notify(f"STATUS=drained ({reason}): exit {proc.returncode} in {duration:g} s; idle until stopped")

    def idle(self) -> NoReturn:
        """After a drain: stay up (the unit stays active, nothing restarts it), do nothing."""
        log("idle", detail="drained once; waiting to be stopped")
        while True:
            time.sleep(3600)


def build_source(args: argparse.Namespace) -> ImdsSource | GcpSource:
    http = Http()
    if args.mode == "gcp":
        return GcpSource(args.metadata_url, http, args.timeout, args.long_poll)
    return ImdsSource(args.metadata_url, http, args.timeout, args.token_ttl)


def _positive(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return number


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="agency-os-spot watcher", description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["aws", "gcp", "local"], required=True, help="metadata protocol")
    parser.add_argument(
        "--metadata-url",
        default=None,
        help="metadata base URL (aws: http://169.254.169.254, gcp: http://metadata.google.internal; "
        "local: required, the node's emulator, e.g. http://127.0.0.1:18169)",
    )
    parser.add_argument("--interval", type=_positive, default=5.0, help="seconds between polls (AWS recommends 5)")
    parser.add_argument(
        "--rebalance", choices=["log", "drain"], default="log", help="on an AWS rebalance recommendation"
    )
    parser.add_argument(
        "--drain-command",
        default="systemctl stop prefect-worker.service",
        help="command run once on a notice (split like a shell would, not run by one)",
    )
    parser.add_argument("--timeout", type=_positive, default=2.0, help="seconds to wait for a metadata answer")
    parser.add_argument("--max-backoff", type=_positive, default=15.0, help="longest wait between retries on errors")
    parser.add_argument("--token-ttl", type=int, default=21600, help="IMDSv2 token lifetime, 1-21600 s")
    parser.add_argument("--long-poll", type=int, default=60, help="gcp: wait_for_change timeout_sec")
    parser.add_argument("--drain-timeout", type=_positive, default=600.0, help="seconds the drain command may take")
    parser.add_argument(
        "--state-file", default=None, help="records the drain; a watcher started while it exists does not drain again"
    )
    parser.add_argument("--heartbeat", type=_positive, default=3600.0, help="seconds between heartbeat log lines")
    args = parser.parse_args(argv)
    if args.metadata_url is None:
        if args.mode == "local":
            parser.error("--mode local needs --metadata-url (the node's metadata emulator)")
        args.metadata_url = DEFAULT_URLS[args.mode]
    args.metadata_url = args.metadata_url.rstrip("/")
    if not args.metadata_url.startswith(("http://", "https://")):
        parser.error(f"--metadata-url must be an http(s) URL, got {args.metadata_url!r}")
    if not 1 <= args.token_ttl <= 21600:
        parser.error("--token-ttl must be 1-21600 (IMDSv2 limits)")
    if args.long_poll < 1:
        parser.error("--long-poll must be at least 1 s")
    if not shlex.split(args.drain_command):
        parser.error("--drain-command is empty")
    return args


def _on_signal(signum: int, frame: Any) -> None:
    # A second signal must not interrupt the shutdown of the first.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise Stopped(signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    watcher: Watcher | None = None
    try:
        watcher = Watcher(args, build_source(args))
        watcher.run()
    except Stopped as stop:
        log("stopped", signal=signal.Signals(stop.args[0]).name, drained=bool(watcher and watcher.drained))
    return 0


if __name__ == "__main__":
    sys.exit(main())
