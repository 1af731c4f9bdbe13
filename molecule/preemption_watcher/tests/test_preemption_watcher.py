"""The watcher under systemd: metadata errors never drain; an interruption notice drains the
worker (its unit stops, which runs the drain) within 10 s, exactly once."""

from __future__ import annotations

import json
import time
import urllib.request

EMULATOR = "http://127.0.0.1:18762"
WORKER, WATCHER = "prefect-worker.service", "preemption-watcher.service"


def control(path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{EMULATOR}/_control/{path}",
        data=json.dumps(body or {}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        return json.loads(resp.read() or b"{}")


def test_watcher_and_emulator_run_hardened(host):
    assert host.service(WATCHER).is_running and host.service(WATCHER).is_enabled
    assert host.service("metadata-emulator.service").is_running
    assert host.service(WORKER).is_running
    props = host.run(f"systemctl show {WATCHER} -p NoNewPrivileges -p ProtectSystem -p Restart").stdout
    assert "NoNewPrivileges=yes" in props and "ProtectSystem=strict" in props and "Restart=on-failure" in props
    exposure = host.run(f"systemd-analyze security {WATCHER} --no-pager").stdout.strip().splitlines()[-1]
    print(f"\n{exposure}")


def recoveries(host) -> int:
    return host.run(f"journalctl -u {WATCHER} --no-pager -o cat").stdout.count('"metadata_recovered"')


def test_metadata_errors_do_not_drain(host):
    control("reset", {})
    before = recoveries(host)
    control("fail", {"status": 500, "count": 4})
    time.sleep(3)
    control("fail", {"mode": "timeout", "count": 2})
    deadline = time.monotonic() + 60
    while recoveries(host) <= before:
        assert time.monotonic() < deadline, "the watcher did not recover from the metadata errors"
        time.sleep(1)
    assert host.service(WORKER).is_running
    journal = host.run(f"journalctl -u {WATCHER} --no-pager -o cat").stdout
    assert "metadata_error" in journal and "drain_start" not in journal


def test_notice_drains_the_worker_within_10_seconds_and_only_once(host):
    sent = time.monotonic()
    control("notice", {"action": "terminate", "in_s": 120})
    while host.service(WORKER).is_running:
        assert time.monotonic() - sent < 10, host.run(f"journalctl -u {WATCHER} --no-pager -o cat -n 20").stdout
        time.sleep(0.2)
    drained_after = time.monotonic() - sent
    print(f"\nworker drained {drained_after:.1f} s after the notice")
    assert drained_after < 10
    time.sleep(3)
    journal = host.run(f"journalctl -u {WATCHER} --no-pager -o cat").stdout
    assert journal.count("drain_start") == 1
    assert host.service(WATCHER).is_running  # idle after draining, no restart loop
    assert not host.service(WORKER).is_running
    worker_journal = host.run(f"journalctl -u {WORKER} --no-pager -o cat -n 30").stdout
    assert '"result": "drained"' in worker_journal  # the unit's ExecStop drain ran
