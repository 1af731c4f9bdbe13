"""The worker node under real systemd: online in its pool, and preemption reaches the flow run.

`systemctl stop` during a running bulk flow: the flow observes termination, commits its
checkpoint, and the run is AwaitingRetry (not Running, not Crashed) within the stop timeout;
another worker (a host process) then finishes it from the checkpoint, redoing nothing.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa

from agency_os_spot.runtime.ledger import normalize_url
from tests.support.prefect_harness import Prefect, start_worker, stop_worker

ROOT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))

UNIT = "prefect-worker.service"
HEALTH_PORT = 18561
STOP_TIMEOUT = 60
RECORDS, BAD = 80_000, 160
SEED = int(time.time()) % 1_000_000  # a new file (job) each verify run, even against the same database
SOURCE = f"fixture://abn?records={RECORDS}&files=1&seed={SEED}&bad_every=500"
JOB_ID = f"abn:fixture:{SEED}:{RECORDS}:1:500:1"


@pytest.fixture(scope="module")
def services() -> dict:
    path = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "services" / "services.json"
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def prefect(services) -> Prefect:
    return Prefect(services["prefect_api_url"])


def ledger(url: str) -> tuple[str, int, dict | None]:
    engine = sa.create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            row = conn.exec_driver_sql(
                "SELECT status, progress, result FROM job_ledger WHERE job_id = %(id)s", {"id": JOB_ID}
            ).first()
    except sa.exc.SQLAlchemyError:
        row = None
    finally:
        engine.dispose()
    return (row[0], row[1], row[2]) if row else ("none", 0, None)


def test_worker_runs_as_its_own_user_under_systemd(host):
    unit = host.service(UNIT)
    assert unit.is_running and unit.is_enabled
    props = host.run(f"systemctl show {UNIT} -p User -p KillMode -p TimeoutStopUSec -p Restart").stdout
    assert "User=prefect" in props and "KillMode=mixed" in props and "Restart=always" in props
    assert f"TimeoutStopUSec={STOP_TIMEOUT}s" in props or "TimeoutStopUSec=1min" in props
    env = host.file("/etc/agency-os/prefect-worker.env")
    assert env.mode == 0o600 and env.user == "root"
    assert host.run("/opt/agency-os/venv/bin/prefect version").stdout.splitlines()[0].endswith("3.9.1")


def test_worker_is_online_in_its_pool_and_health_answers(prefect):
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{HEALTH_PORT}/health", timeout=5) as resp:
                assert resp.status == 200
                break
        except OSError:
            assert time.monotonic() < deadline, "the worker's /health does not answer"
            time.sleep(1)
    workers = {w["name"]: w for w in prefect.workers("bulk-processing")}
    assert workers["molecule-worker-1"]["status"] == "ONLINE"


def test_flow_code_cannot_reach_what_the_node_can(host):
    """The health endpoint listens on loopback only; the worker unit (and so every flow run in it)
    is denied the instance metadata address."""
    # the node shares the host's network namespace (network_mode host): read its listening sockets here
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port = local.rsplit(":", 1)
            if state == "0A" and int(port, 16) == HEALTH_PORT:  # 0A: LISTEN
                listening.add(address)
    assert listening == {"0100007F"}, listening  # 127.0.0.1 only: not 0.0.0.0, not ::
    props = host.run(f"systemctl show {UNIT} -p IPAddressDeny").stdout
    assert "169.254.169.254" in props


def test_systemctl_stop_reschedules_the_running_flow_and_another_worker_finishes_it(host, prefect, services, tmp_path):
    db = services["postgres_url"]
    deployment = prefect.http.get("/deployments/name/abn_bulk_ingestion/abn_bulk_ingestion").raise_for_status().json()
    run = prefect.run(deployment["id"], {"sources": [SOURCE], "database_url": db, "checkpoint_every": 40})
    deadline = time.monotonic() + 180
    while ledger(db)[1] < 2_000:
        assert time.monotonic() < deadline, prefect.logs(run)
        time.sleep(0.2)
    assert prefect.state(run) == ("RUNNING", "Running")

    started = time.monotonic()
    stop = host.run(f"systemctl stop {UNIT}")
    stop_seconds = time.monotonic() - started
    assert stop.rc == 0, stop.stderr
    print(f"\nsystemctl stop took {stop_seconds:.1f} s (TimeoutStopSec={STOP_TIMEOUT})")
    assert stop_seconds < STOP_TIMEOUT

    assert prefect.state(run) == ("SCHEDULED", "AwaitingRetry"), prefect.logs(run)
    status, checkpoint, _ = ledger(db)
    assert status == "pending", prefect.logs(run)  # the flow saw the drain, committed and released its file
    assert 0 < checkpoint < RECORDS
    journal = host.run(f"journalctl -u {UNIT} --no-pager -o cat -n 50").stdout
    drain = json.loads(next(line for line in reversed(journal.splitlines()) if line.startswith('{"main_pid"')))
    assert drain["result"] == "drained" and len(drain["drain_requested"]) == 1, drain
    assert re.search(r"termination requested \(drain: signal SIGUSR1\)", prefect.logs(run))

    other = start_worker(prefect, "bulk-processing", "bulk", "host-worker", tmp_path / "host-worker.log")
    try:
        prefect.wait_for(run, {"Completed"}, timeout=240)
    finally:
        stop_worker(other)
    status, progress, result = ledger(db)
    assert (status, progress) == ("complete", RECORDS)
    assert result["records_this_run"] == RECORDS - checkpoint  # resumed at the checkpoint: none redone
    assert (result["inserted"], result["rejected"]) == (RECORDS - BAD, BAD)  # none lost
    assert host.run(f"systemctl start {UNIT}").rc == 0


def test_unit_security_exposure(host):
    out = host.run(f"systemd-analyze security {UNIT} --no-pager").stdout
    overall = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    assert overall, out
    exposure = float(overall.group(1))
    print(f"\nsystemd-analyze security {UNIT}: exposure {exposure}")
    assert exposure <= 4.0, out
