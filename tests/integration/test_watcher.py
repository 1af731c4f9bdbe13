"""The preemption watcher against the metadata emulator, both as real processes on 127.0.0.1.

The watcher's drain command is a tiny script that appends a timestamp to a file: a test reads how
many times and how soon after the notice the node would have been drained.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agency_os_spot.node.watcher import MetadataError, parse_instance_action, parse_rebalance
from tests.support import ROOT
from tests.support.services import free_port, wait_for_port

pytestmark = pytest.mark.slow

REBALANCE = "/latest/meta-data/events/recommendations/rebalance"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never a proxy
_ENV = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "NOTIFY_SOCKET")}


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Emulator:
    """`python -m agency_os_spot.node.metadata_emulator` on a loopback port (restartable on the same port)."""

    def __init__(self, port: int, log: Path) -> None:
        self.port, self.log = port, log
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Emulator:
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agency_os_spot.node.metadata_emulator", "--port", str(self.port)],
                cwd=ROOT,
                env=_ENV,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port, timeout=10)
        return self

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=10)
        self.proc = None
        return code

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        with _OPENER.open(req, timeout=5) as resp:
            return json.load(resp)

    def control(self, name: str, **body: Any) -> dict:
        return self._call("POST", f"/_control/{name}", body)

    def state(self) -> dict:
        return self._call("GET", "/_control/state")

    def polls(self, path: str = "/latest/meta-data/spot/instance-action") -> int:
        return self.state()["by_path"].get(path, 0)


class Watcher:
    """`python -m agency_os_spot.node.watcher` with a drain command that records each call."""

    def __init__(self, tmp: Path, *args: str, name: str = "watcher", fail_with: str = "") -> None:
        self.log = tmp / f"{name}.log"
        self.record = tmp / "drained.txt"
        script = tmp / "drain.sh"
        if not script.exists():  # records the call; with a message, prints it and fails like systemctl would
            script.write_text('#!/bin/sh\ndate +%s.%N >> "$1"\n[ -z "$2" ] || { echo "$2"; exit 3; }\n')
            script.chmod(0o755)
        self.args = ["--drain-command", f"{script} {self.record} {fail_with}".strip(), *args]
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agency_os_spot.node.watcher", *self.args],
                cwd=ROOT,
                env=_ENV,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def events(self, name: str | None = None) -> list[dict]:
        found = []
        for line in self.log.read_text().splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if name is None or event.get("event") == name:
                    found.append(event)
        return found

    def wait_for(self, name: str, timeout: float = 10, count: int = 1) -> list[dict]:
        return wait_until(
            lambda: len(self.events(name)) >= count and self.events(name), timeout, f"{count} {name!r} in {self.log}"
        )

    def drains(self) -> list[float]:
        return [float(x) for x in self.record.read_text().split()] if self.record.exists() else []

    def sigterm(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=5)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    emu = Emulator(free_port(), tmp_path / "emulator.log").start()
    yield emu
    if emu.proc is not None:
        assert emu.stop() == 0, emu.log.read_text()[-2000:]


@pytest.fixture
def watcher(tmp_path: Path) -> Iterator[Callable[..., Watcher]]:
    started: list[Watcher] = []

    def start(*args: str, name: str = "watcher", fail_with: str = "") -> Watcher:
        started.append(Watcher(tmp_path, *args, name=name, fail_with=fail_with))
        return started[-1]

    yield start
    for w in started:
        w.kill()


def local_args(emulator: Emulator, *extra: str) -> list[str]:
    return ["--mode", "local", "--metadata-url", emulator.url, "--interval", "0.5", *extra]


def notice_to_drain(emulator: Emulator, w: Watcher, **notice: Any) -> float:
    """Announce an interruption; returns the seconds until the drain command ran."""
    announced = time.time()
    emulator.control("notice", **notice)
    drained = wait_until(w.drains, 10, f"the drain command ({w.log})")
    return drained[0] - announced


def test_a_notice_drains_within_10_s_exactly_once_even_across_a_restart(emulator, watcher, tmp_path):
    """With the production interval (5 s, no --interval) and the worst timing: the notice comes
    right after a poll answered 404."""
    state_file = tmp_path / "drained.json"
    w = watcher("--mode", "local", "--metadata-url", emulator.url, "--state-file", str(state_file))
    wait_until(lambda: emulator.polls(REBALANCE) >= 1, 10, "a first poll (404 for instance-action and rebalance)")
    assert w.drains() == [] and w.proc.poll() is None

    latency = notice_to_drain(emulator, w, action="terminate", in_s=120)
    print(f"notice -> drain latency, interval 5 s, notice just after a poll: {latency:.3f} s")
    assert latency < 10
    [notice] = w.wait_for("interruption_notice")
    assert notice["action"] == "terminate" and 105 < notice["seconds_left"] <= 120
    [done] = w.wait_for("drain_done")
    assert done["exit_code"] == 0 and done["duration_s"] < 5

    # It stays up, idle: no more polling, no second drain.
    w.wait_for("idle")
    polls = emulator.polls()
    time.sleep(1)
    assert emulator.polls() == polls
    assert len(w.drains()) == 1 and w.proc.poll() is None
    assert json.loads(state_file.read_text())["key"].startswith("instance-action:terminate:")

    # A restarted watcher (a crash, Ansible) finds the drain recorded: it neither polls nor drains.
    assert w.sigterm() == 0
    again = watcher(*local_args(emulator, "--state-file", str(state_file)), name="restarted")
    [already] = again.wait_for("already_drained")
    assert already["drained"]["reason"] == "instance-action notice"
    again.wait_for("idle")
    time.sleep(0.5)
    assert len(w.drains()) == 1 and again.proc.poll() is None and emulator.polls() == polls
    assert again.sigterm() == 0


def test_metadata_errors_never_drain_and_the_watcher_recovers(emulator, watcher):
    w = watcher(*local_args(emulator, "--interval", "0.1", "--timeout", "0.3", "--max-backoff", "0.4"))
    w.wait_for("watching")
    failures = [
        ({"status": 500, "count": 2}, "status"),
        ({"mode": "timeout", "count": 1, "delay_s": 5}, "timeout"),
        ({"mode": "reset", "count": 1}, "connection"),
        ({"mode": "malformed", "count": 1}, "malformed"),
        ({"status": 503, "count": 1, "path": "/latest/api/token"}, "token"),  # after the 401 below
    ]
    for recovered, (failure, kind) in enumerate(failures, start=1):
        emulator.control("fail", **failure)
        if kind == "token":
            emulator.control("revoke-tokens")
        w.wait_for("metadata_recovered", count=recovered)
        assert emulator.state()["failure"] is None
        assert w.events("metadata_error")[-1]["kind"] == kind

    # The metadata service is down for a while: connection refused, then back (new tokens).
    emulator.stop()
    down = len(w.events("metadata_error"))
    wait_until(lambda: len(w.events("metadata_error")) >= down + 4, 10, "refused connections")
    assert w.events("metadata_error")[-1]["kind"] == "refused"
    retries = [e["retry_in_s"] for e in w.events("metadata_error")[down:]]
    assert retries == sorted(retries) and retries[-1] == 0.4  # exponential backoff, capped
    emulator.start()
    w.wait_for("metadata_recovered", count=len(failures) + 1)
    assert len(w.events("token_rejected")) == 2  # revoked above; unknown to the restarted emulator

    assert w.drains() == [] and w.proc.poll() is None
    assert not w.events("interruption_notice")
    assert notice_to_drain(emulator, w) < 10
    assert len(w.drains()) == 1


def test_the_token_is_renewed_before_it_expires_and_fetched_again_after_a_401(emulator, watcher):
    w = watcher(*local_args(emulator, "--interval", "0.2", "--token-ttl", "1"))
    wait_until(lambda: emulator.state()["token_requests"] >= 3, 10, "token renewals")
    assert emulator.state()["unauthorized"] == 0
    assert {e["reason"] for e in w.events("token_acquired")} >= {"initial", "renew"}

    tokens = emulator.state()["token_requests"]
    emulator.control("revoke-tokens")
    w.wait_for("token_rejected")
    wait_until(lambda: emulator.polls() > 0 and emulator.state()["token_requests"] > tokens, 5, "a new token")
    state = emulator.state()
    assert state["unauthorized"] >= 1
    assert not w.events("metadata_error")  # a 401 is handled inside the poll, not as an outage
    assert "401" in {e["reason"] for e in w.events("token_acquired")}
    assert notice_to_drain(emulator, w) < 10


def test_a_rebalance_recommendation_is_logged_but_does_not_drain_by_default(emulator, watcher):
    w = watcher(*local_args(emulator, "--interval", "0.2"))
    w.wait_for("watching")
    emulator.control("rebalance")
    [event] = w.wait_for("rebalance_recommendation")
    assert event["action"] == "log" and event["notice_time"].endswith("Z")
    polls = emulator.polls()
    wait_until(lambda: emulator.polls() >= polls + 5, 5, "more polls")
    assert w.drains() == [] and len(w.events("rebalance_recommendation")) == 1  # logged once
    assert notice_to_drain(emulator, w) < 10  # the interruption notice still drains


def test_a_rebalance_recommendation_drains_with_rebalance_drain(emulator, watcher):
    w = watcher(*local_args(emulator, "--interval", "0.2", "--rebalance", "drain"))
    w.wait_for("watching")
    emulator.control("rebalance")
    wait_until(w.drains, 10, "the drain command")
    [done] = w.wait_for("drain_done")
    assert done["exit_code"] == 0
    assert w.events("drain_start")[0]["reason"] == "rebalance recommendation"
    emulator.control("notice")  # the interruption that may follow: already drained
    time.sleep(0.5)
    assert len(w.drains()) == 1


def test_a_failing_drain_command_is_logged_and_not_repeated(emulator, watcher):
    w = watcher(*local_args(emulator, "--interval", "0.2"), fail_with="unit-not-found")
    w.wait_for("watching")
    emulator.control("notice")
    [done] = w.wait_for("drain_done")
    assert done["exit_code"] == 3 and done["level"] == "error" and "unit-not-found" in done["output"]
    time.sleep(0.5)
    assert len(w.drains()) == 1 and w.proc.poll() is None


def test_gcp_long_poll_drains_as_soon_as_the_vm_is_preempted(emulator, watcher):
    preempted = "/computeMetadata/v1/instance/preempted"
    emulator.control("fail", mode="malformed", count=2)  # a bad start: retried, never a drain
    w = watcher(
        "--mode", "gcp", "--metadata-url", emulator.url, "--interval", "0.2", "--long-poll", "20", "--timeout", "1"
    )
    wait_until(lambda: emulator.state()["long_polls"] == 1, 10, "a long-poll in progress")
    assert len(w.events("metadata_error")) == 2 and w.drains() == []
    requests = emulator.polls(preempted)
    time.sleep(0.6)
    assert emulator.polls(preempted) == requests  # waiting in the server, not polling

    latency = notice_to_drain(emulator, w)
    print(f"gcp preempted -> drain latency (long-poll): {latency:.3f} s")
    assert latency < 2
    [notice] = w.wait_for("interruption_notice")
    assert notice["kind"] == "preempted"
    w.wait_for("idle")
    assert len(w.drains()) == 1


@pytest.mark.parametrize("mode", ["local", "gcp"])
def test_sigterm_stops_the_watcher_at_once_with_status_0(emulator, watcher, mode):
    w = watcher("--mode", mode, "--metadata-url", emulator.url, "--interval", "5", "--long-poll", "30")
    w.wait_for("watching")
    if mode == "gcp":
        wait_until(lambda: emulator.state()["long_polls"] == 1, 5, "a long-poll in progress")
    started = time.monotonic()
    assert w.sigterm() == 0
    assert time.monotonic() - started < 2
    assert w.events()[-1]["event"] == "stopped" and w.events()[-1]["signal"] == "SIGTERM"
    assert w.drains() == []


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>oops</html>",
        b'{"action": "terminate"',
        b"[]",
        b'{"action": "reboot", "time": "2026-01-01T00:00:00Z"}',
        b'{"action": "terminate"}',
        b'{"time": "2026-01-01T00:00:00Z"}',
    ],
)
def test_a_malformed_instance_action_is_an_error_not_a_notice(body):
    with pytest.raises(MetadataError):
        parse_instance_action(body)


def test_well_formed_notices_parse():
    notice = parse_instance_action(b'{"action": "stop", "time": "2026-01-01T00:02:00Z"}')
    assert notice.key == "instance-action:stop:2026-01-01T00:02:00Z" and notice.details["action"] == "stop"
    assert parse_rebalance(b'{"noticeTime": "2026-01-01T00:00:00Z"}').key == "rebalance:2026-01-01T00:00:00Z"
    with pytest.raises(MetadataError):
        parse_rebalance(b'{"notice": 1}')
