"""A frozen holder blocks its job for a bounded time.

A spot VM that freezes, or loses its network, sends no FIN/RST: its PostgreSQL backend keeps the
job's row locked, and before this test the next holder waited on `SELECT ... FOR UPDATE` until TCP
gave up (two hours). Here a worker is stopped with SIGSTOP in the middle of a batch transaction
(its row lock held, its socket open: the kernel keeps answering TCP, as for a paused container);
another worker must complete the job while the first is still frozen; when the first wakes up its
commit is refused and it lets the job go; every record is stored once and nothing is dead-lettered.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

import pytest
import sqlalchemy as sa

from agency_os_spot.abn.cli import open_database
from agency_os_spot.abn.fixture import generate
from agency_os_spot.abn.sources import plan
from agency_os_spot.runtime.ledger import postgres_connect_args, session_name
from agency_os_spot.runtime.queue import ReliableQueue
from agency_os_spot.settings import SettingError
from tests.support.services import consumer_process, ledger_progress

pytestmark = pytest.mark.slow

VISIBILITY_S = 5
LOCK_TIMEOUT_S = 2


def _worker(redis_url: str, database_url: str, idle_timeout: int) -> subprocess.Popen:
    return consumer_process(
        redis_url, database_url, "--checkpoint-every", "500", "--visibility-timeout", str(VISIBILITY_S),
        "--idle-timeout", str(idle_timeout), "--max-attempts", "1",
        env={
            "AGENCY_OS_PG_LOCK_TIMEOUT_S": str(LOCK_TIMEOUT_S),
            # far beyond the test: the takeover, not PostgreSQL's idle timeout, must free the row
            "AGENCY_OS_PG_IDLE_IN_TRANSACTION_S": "3600",
        },
    )  # fmt: skip


def _in_transaction_with_the_row(engine: sa.Engine, pid: int) -> bool:
    """The worker's session is inside a transaction that wrote the ledger (its row lock held)."""
    name = session_name(f"{socket.gethostname()}:{pid}")
    with engine.connect() as conn:
        return bool(
            conn.execute(
                sa.text(
                    "SELECT 1 FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                    "WHERE a.application_name = :name AND l.relation = 'job_ledger'::regclass "
                    "AND l.mode = 'RowExclusiveLock' AND l.granted"
                ),
                {"name": name},
            ).first()
        )


def _freeze_inside_a_batch(engine: sa.Engine, worker: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert worker.poll() is None, worker.communicate()
        assert time.monotonic() < deadline, "never caught the worker inside a batch transaction"
        os.kill(worker.pid, signal.SIGSTOP)
        if _in_transaction_with_the_row(engine, worker.pid):
            return
        os.kill(worker.pid, signal.SIGCONT)
        time.sleep(0.01)


def test_a_holder_frozen_mid_batch_is_taken_over_and_its_late_commit_refused(postgres_url, redis_url, tmp_path):
    manifest = generate(80_000, 8, tmp_path, files=1, bad_every=250)
    [job] = plan([str(tmp_path / manifest["sources"][0])])
    queue = ReliableQueue(redis_url, destination=open_database(postgres_url).destination)
    queue.enqueue(job.to_job())
    engine = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    frozen = _worker(redis_url, postgres_url, idle_timeout=3)
    successor = None
    try:
        deadline = time.monotonic() + 120
        while ledger_progress(postgres_url, over="max") < 2_000:
            assert frozen.poll() is None, frozen.communicate()
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.02)
        _freeze_inside_a_batch(engine, frozen)
        stopped = time.monotonic()
        successor = _worker(redis_url, postgres_url, idle_timeout=20)
        while not (lease := open_database(postgres_url).get(job.id)).complete:
            assert successor.poll() is None, successor.communicate()
            # bound: visibility timeout + lock_timeout, plus the retry's backoff and the rest of the job
            assert time.monotonic() - stopped < 120, "the frozen holder still blocks the job"
            time.sleep(0.2)
        taken_over_after = time.monotonic() - stopped
        assert frozen.poll() is None  # still frozen: the job was completed without it
        out, err = successor.communicate(timeout=60)
        assert successor.returncode == 0, err[-3000:]
        assert json.loads(out.strip().splitlines()[-1])["done"] == 1
        assert "kept the row locked past lock_timeout" in err, err[-3000:]

        os.kill(frozen.pid, signal.SIGCONT)  # it wakes up inside its transaction
        out, err = frozen.communicate(timeout=120)
    finally:
        for proc in (frozen, successor):
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
    assert frozen.returncode == 0, err[-3000:]
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats == {**stats, "done": 0, "taken_over": 1, "dead_lettered": 0}, err[-3000:]
    assert queue.dead_letters() == []
    with engine.connect() as conn:
        rows, distinct = conn.exec_driver_sql("SELECT COUNT(*), COUNT(DISTINCT abn) FROM abn_entity").one()
    engine.dispose()
    assert rows == distinct == manifest["valid"]  # every record once
    assert lease.result["inserted"] == manifest["valid"]
    print(f"job completed by the successor {taken_over_after:.1f} s after its holder froze")


def test_every_ledger_session_bounds_its_waits_and_is_named_after_its_holder(postgres_url, monkeypatch):
    monkeypatch.setenv("AGENCY_OS_PG_IDLE_IN_TRANSACTION_S", "45")
    ledger = open_database(postgres_url)
    with ledger.engine.connect() as conn:
        shown = {
            name: conn.exec_driver_sql(f"SHOW {name}").scalar_one()
            for name in ("lock_timeout", "idle_in_transaction_session_timeout", "tcp_keepalives_idle",
                         "tcp_keepalives_interval", "tcp_keepalives_count", "application_name")
        }  # fmt: skip
    ledger.engine.dispose()
    assert shown == {
        "lock_timeout": "10s",
        "idle_in_transaction_session_timeout": "45s",
        "tcp_keepalives_idle": "30",
        "tcp_keepalives_interval": "10",
        "tcp_keepalives_count": "3",
        "application_name": session_name(f"{socket.gethostname()}:{os.getpid()}"),
    }


def test_a_bad_timeout_setting_is_refused_with_its_name(monkeypatch):
    monkeypatch.setenv("AGENCY_OS_PG_LOCK_TIMEOUT_S", "soon")
    with pytest.raises(SettingError, match="AGENCY_OS_PG_LOCK_TIMEOUT_S: Input should be a valid number"):
        postgres_connect_args()
