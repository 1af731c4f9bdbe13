"""Watching the work: the drill database (rows, rejects, the job ledger), the queue in Redis, the
Prefect runs and workers, and how long the jobs of a node taken away took to go on elsewhere.

The observer reads; the only thing it writes is the clean start (`clear`) of the drill's own
database and queue.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import redis
import sqlalchemy as sa
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags, WorkerFilter, WorkerFilterStatus
from prefect.client.schemas.objects import TERMINAL_STATES, WorkerStatus

from agency_os_spot.runtime.consumer import attempted_key
from agency_os_spot.runtime.ledger import Ledger, normalize_url
from agency_os_spot.runtime.queue import destination_stream
from tools.drill.config import HELPER_TAG, Config

log = logging.getLogger(__name__)

Rows = dict[str, dict[str, Any]]  # job id -> its ledger row (job_id, status, owner, progress, result)


@dataclass
class Preemption:
    """A node taken away (notice, hard or freeze), the jobs it held, and when each went on elsewhere."""

    node: str
    mode: str
    at: float
    held: dict[str, int]  # job id -> progress when the node went away
    recovered_at: dict[str, float] = field(default_factory=dict)

    def note(self, rows: Rows, now: float) -> None:
        """A held job has recovered once it is complete, or has progressed under another owner."""
        for job, progress in self.held.items():
            row = rows.get(job)
            if job in self.recovered_at or row is None:
                continue
            elsewhere = row["owner"] and not row["owner"].startswith(self.node + ":")
            if row["status"] == "complete" or (elsewhere and row["progress"] > progress):
                self.recovered_at[job] = now

    @property
    def recovery_s(self) -> float | None:
        """Seconds until the last held job recovered; None without a held job, inf if one never did."""
        if not self.held:
            return None
        if len(self.recovered_at) < len(self.held):
            return float("inf")
        return max(self.recovered_at.values()) - self.at


@dataclass(frozen=True)
class Counts:
    """What the drill found at the end, for the report."""

    rows: int  # abn_entity rows from the extract's files
    distinct: int  # distinct ABNs among them
    rejects: int  # abn_reject rows from the extract's files
    results: list[dict[str, Any]]  # the results of the complete jobs of the ledger
    attempted: int  # records the consumers attempted, over every try
    dead_letters: int
    run_states: list[str]  # the parent run's state type, then its helpers'


class Observer:
    def __init__(self, config: Config, client: SyncPrefectClient, work_pool: str):
        self.c = config
        self.client = client
        self.work_pool = work_pool
        self.engine = sa.create_engine(normalize_url(config.database_url), pool_pre_ping=True)
        self.redis = redis.Redis.from_url(config.redis_url, decode_responses=True)
        ledger = Ledger(self.engine)
        ledger.setup()
        self.destination = ledger.destination  # the drill database's own queue namespace
        self.stream = destination_stream(self.destination)

    def clear(self) -> None:
        """A clean drill database and queue (this is the embedded default's drill database)."""
        with self.engine.begin() as conn:
            for table in ("abn_entity", "abn_reject", "job_ledger"):
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        # only this database's queue and counters: production jobs live under another destination
        keys = [*self.redis.scan_iter(f"{self.stream}*"), attempted_key(self.destination)]
        self.redis.delete(*keys)

    # -- the ledger --------------------------------------------------------------------------------

    def ledger(self) -> list[dict[str, Any]]:
        with contextlib.suppress(sa.exc.SQLAlchemyError), self.engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT job_id, status, owner, progress, state, result FROM job_ledger")
            return [dict(r._mapping) for r in rows]
        return []

    def held_by(self, node: str) -> dict[str, int]:
        """The running jobs a node holds: job id -> progress."""
        return {
            r["job_id"]: r["progress"]
            for r in self.ledger()
            if r["status"] == "running" and (r["owner"] or "").startswith(node + ":")
        }

    def committed(self, rows: list[dict[str, Any]] | None = None) -> int:
        """Records committed over every job (of `rows`, else of the ledger now): each job's own count
        (a job's progress is the index in its file of its next record, which for a byte range of a
        file does not start at 0)."""
        total = 0
        for r in self.ledger() if rows is None else rows:
            counts = r["result"] if r["status"] == "complete" else r["state"]
            counts = json.loads(counts) if isinstance(counts, str) else counts
            total += int((counts or {}).get("records", 0))
        return total

    def complete(self, rows: list[dict[str, Any]] | None = None) -> int:
        """Jobs complete (of `rows`, else of the ledger now)."""
        return sum(r["status"] == "complete" for r in (self.ledger() if rows is None else rows))

    def all_done(self, manifest: dict) -> bool:
        return self.complete() >= manifest["jobs"]

    def report_progress(self, manifest: dict, stop: threading.Event) -> None:
        """Log the records committed, the jobs complete and the workers online every progress_every_s."""
        while not stop.wait(self.c.progress_every_s):
            rows = self.ledger()
            online = "?"
            with contextlib.suppress(Exception):  # a report, not a check: the API may be restarting
                online = str(len(self.online_workers()))
            log.info(
                f"progress: {self.committed(rows):,} of {manifest['records']:,} records committed, "
                f"{self.complete(rows)} of {manifest['jobs']} jobs complete, {online} workers online"
            )

    def watch(self, notify: Callable[[Rows, float], None], stop: threading.Event) -> None:
        """Give `notify` the ledger twice a second (job id -> row, and when it was read) until `stop`."""
        while not stop.wait(0.5):
            notify({r["job_id"]: r for r in self.ledger()}, time.monotonic())

    # -- Prefect -----------------------------------------------------------------------------------

    def online_workers(self) -> set[str]:
        online = WorkerFilter(status=WorkerFilterStatus(any_=[WorkerStatus.ONLINE.value]))
        return {w.name for w in self.client.read_workers_for_work_pool(self.work_pool, worker_filter=online)}

    def runs(self, parent: UUID) -> list[Any]:
        """The parent flow run, then its helper runs."""
        helpers = FlowRunFilter(tags=FlowRunFilterTags(all_=[HELPER_TAG.format(parent=parent)]))
        return [self.client.read_flow_run(parent), *self.client.read_flow_runs(flow_run_filter=helpers, limit=50)]

    def finished(self, manifest: dict, parent: UUID) -> bool:
        """Every file complete, and the parent and all its helpers in a final state."""
        runs = self.runs(parent)
        return (
            self.all_done(manifest)
            and all(r.state_type in TERMINAL_STATES for r in runs)
            and len(runs) > self.c.helpers
        )

    # -- the end -----------------------------------------------------------------------------------

    def counts(self, manifest: dict, parent: UUID) -> Counts:
        files = [f["name"] for f in manifest["files"]]
        with self.engine.connect() as conn:
            rows, distinct = conn.exec_driver_sql(
                "SELECT COUNT(*), COUNT(DISTINCT abn) FROM abn_entity WHERE source_file = ANY(%(f)s)", {"f": files}
            ).one()
            rejects = conn.exec_driver_sql(
                "SELECT COUNT(*) FROM abn_reject WHERE source_file = ANY(%(f)s)", {"f": files}
            ).scalar_one()
        return Counts(
            rows=rows,
            distinct=distinct,
            rejects=rejects,
            results=[r["result"] or {} for r in self.ledger() if r["status"] == "complete"],
            attempted=sum(int(v) for v in self.redis.hgetall(attempted_key(self.destination)).values()),
            dead_letters=self.redis.llen(f"{self.stream}:dead"),
            run_states=[r.state_type.value if r.state_type else "NONE" for r in self.runs(parent)],
        )
