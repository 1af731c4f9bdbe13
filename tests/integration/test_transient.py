"""Transient failures are not poison: a database that goes away and comes back costs no attempt
and dead-letters nothing; an attempt that advanced the job starts its failure count again."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from agency_os_spot.abn.cli import open_database
from agency_os_spot.abn.fixture import generate
from agency_os_spot.abn.sources import plan
from agency_os_spot.runtime.queue import ReliableQueue
from agency_os_spot.runtime.retry import call_with_retries, is_transient
from agency_os_spot.runtime.termination import Termination
from tests.support.services import (
    consumer_process,
    free_port,
    ledger_progress,
    restart_postgres,
    start_postgres,
    stop_postgres,
    wait_for_port,
)


@pytest.fixture
def own_postgres():
    """A PostgreSQL cluster of this test alone (it is restarted under the worker)."""
    url, root = start_postgres()
    try:
        yield url, root
    finally:
        stop_postgres(root)


def test_postgres_down_for_10_s_mid_ingestion_costs_no_attempt_and_loses_nothing(own_postgres, redis_url, tmp_path):
    database_url, root = own_postgres
    manifest = generate(150_000, 8, tmp_path, files=1, bad_every=250)
    [job] = plan([str(tmp_path / manifest["sources"][0])])
    queue = ReliableQueue(redis_url, destination=open_database(database_url).destination)
    queue.enqueue(job.to_job())
    worker = consumer_process(
        redis_url, database_url, "--checkpoint-every", "500", "--visibility-timeout", "5", "--idle-timeout", "3",
        "--max-attempts", "1",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while ledger_progress(database_url, over="max") < 2_000:
            assert worker.poll() is None, worker.communicate()
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.02)
        restart_postgres(root, down_s=10)  # connections cut like a crash; back after 10 s
        out, err = worker.communicate(timeout=300)
    finally:
        worker.kill()
    assert worker.returncode == 0, err[-3000:]
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats == {**stats, "done": 1, "failed": 0, "dead_lettered": 0}, err[-3000:]
    assert "transient error" in err  # it did meet the outage (max-attempts 1: any failure would be fatal)
    assert queue.dead_letters() == []
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        rows, distinct = conn.exec_driver_sql("SELECT COUNT(*), COUNT(DISTINCT abn) FROM abn_entity").one()
    engine.dispose()
    assert rows == distinct == manifest["valid"]  # every record once
    lease = open_database(database_url).get(job.id)
    assert lease.complete and lease.result["inserted"] == manifest["valid"]


def test_an_attempt_that_made_progress_starts_the_failure_count_again(redis_url):
    queue = ReliableQueue(redis_url, consumer="c1", max_attempts=2)
    queue.enqueue({"id": "j", "type": "t"})
    first = queue.claim(block_s=1)
    assert first.fail("boom") is False  # 1 failure without progress
    second = queue.claim(block_s=1)
    second.progress(500)
    assert second.failures_without_progress() == 0
    assert second.fail("boom after progress") is False  # counted from 0 again: 1
    third = queue.claim(block_s=1)
    assert third.fail("boom again") is True  # 2 in a row without progress: dead
    assert queue.dead_letters()[0]["reason"] == "failed 2 times"


def test_queue_settings_are_checked_with_a_clear_message(redis_url):
    with pytest.raises(ValueError, match=r"visibility_timeout_s must be > 0 seconds, not 0.*max_strikes must be >= 1"):
        ReliableQueue(redis_url, visibility_timeout_s=0, max_strikes=0)


def _operational(orig: Exception) -> sa_exc.OperationalError:
    return sa_exc.OperationalError("SELECT 1", {}, orig)


class _PgError(Exception):
    def __init__(self, sqlstate: str | None) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (_operational(_PgError("57P01")), True),  # admin shutdown (a restart)
        (_operational(_PgError("40001")), True),  # serialization failure
        (_operational(_PgError("08006")), True),  # connection failure
        (_operational(_PgError(None)), True),  # could not connect at all
        (_operational(_PgError("42P01")), False),  # undefined table: a bug, not a blip
        (sa_exc.IntegrityError("INSERT", {}, _PgError("23505")), False),
        (redis.ConnectionError("reset"), True),
        (FileNotFoundError("x.xml"), False),
        (ValueError("bad"), False),
    ],
)
def test_what_counts_as_transient(exc, transient):
    assert is_transient(exc) is transient


def test_retries_stop_at_once_when_the_node_is_going_away():
    term = Termination()
    calls = []

    def flaky():
        calls.append(time.monotonic())
        if len(calls) == 2:
            threading.Timer(0.2, lambda: term._record("test")).start()
        raise redis.ConnectionError("down")

    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        call_with_retries(flaky, term, budget_s=60, initial_s=5, max_wait_s=5)
    assert time.monotonic() - started < 10 and len(calls) == 2


def _own_redis(port: int, folder: Path) -> subprocess.Popen:
    """Redis as the role configures it: AOF with fsync every second."""
    return subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", "",
         "--appendonly", "yes", "--appendfsync", "everysec"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def test_redis_killed_and_restarted_between_jobs_costs_no_attempt_and_loses_nothing(postgres_url, tmp_path):
    # Inside a job a Redis error is retried with the job; here Redis dies while the worker waits
    # for its next job (claim) and comes back with what it had written (AOF).
    port = free_port()
    server = _own_redis(port, tmp_path)
    wait_for_port(port)
    redis_url = f"redis://127.0.0.1:{port}/0"
    manifest = generate(40_000, 9, tmp_path, files=2, bad_every=250)
    first, second = plan([str(tmp_path / name) for name in manifest["sources"]])
    ledger = open_database(postgres_url)
    ReliableQueue(redis_url, destination=ledger.destination).enqueue(first.to_job())
    worker = consumer_process(
        redis_url, postgres_url, "--checkpoint-every", "500", "--visibility-timeout", "5", "--idle-timeout", "15",
        "--max-attempts", "1",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not ((lease := ledger.get(first.id)) is not None and lease.complete):
            assert worker.poll() is None, worker.communicate()
            assert time.monotonic() < deadline, "the first job did not complete"
            time.sleep(0.05)
        time.sleep(0.5)  # acked; the worker waits for the next job
        server.kill()  # SIGKILL: no shutdown save
        server.wait()
        time.sleep(6)
        server = _own_redis(port, tmp_path)
        wait_for_port(port)
        queue = ReliableQueue(redis_url, destination=ledger.destination)
        queue.enqueue(second.to_job())
        out, err = worker.communicate(timeout=300)
    finally:
        worker.kill()
        server.terminate()
    assert worker.returncode == 0, err[-3000:]
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats == {**stats, "done": 2, "failed": 0, "dead_lettered": 0}, err[-3000:]
    assert queue.dead_letters() == []
    engine = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        rows, distinct = conn.exec_driver_sql("SELECT COUNT(*), COUNT(DISTINCT abn) FROM abn_entity").one()
    engine.dispose()
    assert rows == distinct == manifest["valid"]  # every record once
