"""The generic consumer of the bulk job queue, spot-safe.

Every bulk flow that splits its work enqueues jobs (one per ABN file, ...) on the Redis stream
of its destination, `bulk:jobs:<destination id>` (the id of the database the jobs write to, kept
in its ledger: a job can only be taken by a consumer writing to that database). A consumer runs
anywhere in the bulk pool, takes jobs one at a time and dispatches them by type to the handler
that the code defining the job type registered (`register`). A job taken by a node that is then
preempted is not lost:

* with a notice, the job's handler commits its checkpoint, the job goes straight back to the
  queue (`release`, no attempt counted) and the run ends rescheduled;
* without one (SIGKILL, power loss), the entry's heartbeat stops and another consumer reclaims
  it after the visibility timeout; the handler resumes from the ledger's checkpoint.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from agency_os_spot import settings
from agency_os_spot.runtime.ledger import Fenced, Ledger, default_owner
from agency_os_spot.runtime.queue import Delivery, ReliableQueue, connect
from agency_os_spot.runtime.retry import call_with_retries, is_transient
from agency_os_spot.runtime.termination import Interrupted, Termination, termination

log = logging.getLogger("agency_os.consumer")
ATTEMPTED_KEY = "bulk:metrics:attempted"  # + ":<destination>": records processed per job, counted before each commit


def attempted_key(destination: str) -> str:
    return f"{ATTEMPTED_KEY}:{destination}"


def database_url_from_env() -> str | None:
    return settings.current().database_url


def redis_url_from_env() -> str | None:
    return settings.current().redis_url


def visibility_timeout_from_env() -> float:
    return settings.current().queue_visibility_s


def max_strikes_from_env() -> int:
    """How many holders of a job may die without progress before it is dead-lettered as poison.
    A spot kill during a job's first checkpoint looks the same as a poison job, so the limit must
    outlast a run of bad luck: 5 with production node lifetimes (hours); the local drill, which
    takes a node every ~30 s and favours nodes holding jobs, sets more (inventories/local)."""
    return settings.current().queue_max_strikes


@dataclass
class WorkContext:
    """What job handlers need: the ledger/database, settings, and the queue's Redis."""

    ledger: Ledger
    redis: redis.Redis | None = None
    checkpoint_every: int | None = None  # None: each handler's own default
    term: Termination = termination
    owner: str = field(default_factory=default_owner)  # names its database sessions too (ledger)

    def count_attempted(self, job_id: str, records: int) -> None:
        """Out-of-band counter of records whose processing started (committed or not): attempted
        minus committed is the work preemptions made us redo."""
        if self.redis is not None:
            self.redis.hincrby(attempted_key(self.ledger.destination), job_id, records)


Handler = Callable[[Delivery, WorkContext], Any]


@dataclass(frozen=True)
class JobType:
    handler: Handler
    setup: Callable[[Ledger], None] | None = None  # e.g. create the handler's tables


HANDLERS: dict[str, JobType] = {}


def register(job_type: str, handler: Handler, setup: Callable[[Ledger], None] | None = None) -> None:
    """Make jobs of `job_type` runnable by consumers: the module that defines a job type calls
    this when it is imported (`setup(ledger)` runs once per consumer, before its first job)."""
    HANDLERS[job_type] = JobType(handler, setup)


@dataclass
class ConsumeStats:
    done: int = 0
    failed: int = 0
    dead_lettered: int = 0
    taken_over: int = 0
    reclaimed: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def consume(
    queue: ReliableQueue,
    ctx: WorkContext,
    *,
    stop_when: Callable[[], bool] | None = None,
    idle_timeout_s: float | None = 30.0,
    poll_s: float = 2.0,
) -> ConsumeStats:
    """Take and run jobs until `stop_when()` is true or no job came for `idle_timeout_s`.

    On termination (SIGTERM, drain): the job in hand commits its checkpoint, goes back to the
    queue, and `ctx.term.stop()` ends the run (rescheduled under Prefect, exit 143 outside).
    """
    stats = ConsumeStats()
    idle_since = time.monotonic()
    while True:
        if ctx.term.requested:
            ctx.term.stop()
        # a database or Redis restart between jobs is waited out too, not only inside a job
        if stop_when is not None and call_with_retries(stop_when, ctx.term, what="settled check"):
            return stats
        delivery = call_with_retries(lambda: queue.claim(block_s=poll_s), ctx.term, what="claim")
        if delivery is not None and ctx.term.requested:  # asked to drain while waiting: take nothing new
            delivery.release()
            ctx.term.stop()
        if delivery is None:
            if idle_timeout_s is not None and time.monotonic() - idle_since >= idle_timeout_s:
                return stats
            continue
        stats.reclaimed += delivery.reclaimed
        job_type = HANDLERS.get(str(delivery.job.get("type")))
        if job_type is None:
            delivery.dead_letter(
                f"unknown job type {delivery.job.get('type')!r} (known: {', '.join(sorted(HANDLERS))})"
            )
            stats.dead_lettered += 1
            continue
        if delivery.job.get("destination") != ctx.ledger.destination:
            # refused before any write: a job is only ever written where it was planned
            delivery.dead_letter(
                f"job is for destination {delivery.job.get('destination')!r}; this consumer writes to "
                f"{ctx.ledger.destination!r}"
            )
            stats.dead_lettered += 1
            continue
        _run_job(delivery, job_type.handler, ctx, stats)
        idle_since = time.monotonic()


def _run_job(
    delivery: Delivery, handler: Callable[[Delivery, WorkContext], Any], ctx: WorkContext, stats: ConsumeStats
) -> None:
    """Run one delivered job to its end: ack, release (going away), abandon (taken over) or fail."""
    tries = 0

    def attempt() -> Any:
        # A retry first checks that the job is still ours: a holder that froze past the visibility
        # timeout wakes up to an error and must not take back (acquire) a job the queue has
        # handed to another consumer.
        nonlocal tries
        if tries and not delivery.heartbeat():
            raise Fenced(f"job {delivery.job_id}: the queue handed it to another consumer while this one was away")
        tries += 1
        return handler(delivery, ctx)

    with delivery:
        try:
            # transient errors (a database restart, a Redis blip) are retried in place with
            # backoff; the handler resumes from the ledger's checkpoint each time
            call_with_retries(attempt, ctx.term, what=f"job {delivery.job_id}")
        except Exception as exc:
            if isinstance(exc, Interrupted) or (ctx.term.requested and is_transient(exc)):
                delivery.release()  # going away: no attempt counted, the next node resumes it
                log.warning("job %s released to the queue; stopping (%s)", delivery.job_id, type(exc).__name__)
                ctx.term.stop()
            elif isinstance(exc, Fenced):
                stats.taken_over += 1  # another consumer holds it now; not ours to ack or fail
                log.warning("job %s was taken over by another consumer", delivery.job_id)
                delivery.abandon()
            else:
                log.exception("job %s failed", delivery.job_id)
                _back_off(delivery, ctx)
                if delivery.fail(f"{type(exc).__name__}: {exc}"):
                    stats.dead_lettered += 1
                else:
                    stats.failed += 1
        else:
            delivery.ack()
            stats.done += 1


class JobsStuck(RuntimeError):
    """Jobs were not all complete by the deadline; the message lists them with their state."""


def work_until_settled(
    queue: ReliableQueue,
    ctx: WorkContext,
    jobs: list[dict[str, Any]],
    *,
    deadline_s: float | None = None,
    reconcile_every_s: float = 30.0,
) -> list[str]:
    """Consume jobs until every one of `jobs` is complete in the ledger or dead-lettered; return
    the dead ones. The ledger is the record of work and Redis only delivers it: every
    `reconcile_every_s` a job that is neither complete nor queued (Redis lost it) is enqueued
    again, and past `deadline_s` the wait ends with JobsStuck naming each job and its state."""
    started = time.monotonic()
    last_reconcile = started

    def open_jobs() -> list[dict[str, Any]]:
        return [
            job
            for job in jobs
            if not ((lease := ctx.ledger.get(job["id"])) is not None and lease.complete)
            and queue.status(job["id"]) != "dead"
        ]

    def settled() -> bool:
        nonlocal last_reconcile
        waiting = open_jobs()
        if not waiting:
            return True
        now = time.monotonic()
        if deadline_s is not None and now - started > deadline_s:
            states = []
            for job in waiting:
                lease = ctx.ledger.get(job["id"])
                ledger_state = f"{lease.status} at {lease.progress}" if lease else "never started"
                states.append(f"{job['id']} ({ledger_state}; queue: {queue.status(job['id']) or 'not queued'})")
            raise JobsStuck(f"{len(waiting)} job(s) not complete after {deadline_s:.0f} s: {'; '.join(states)}")
        if now - last_reconcile >= reconcile_every_s:
            last_reconcile = now
            for job in waiting:
                if queue.ensure_queued(job):
                    log.warning("job %s was neither complete nor queued (lost by Redis?): enqueued again", job["id"])
        return False

    consume(queue, ctx, stop_when=settled, idle_timeout_s=None, poll_s=min(2.0, reconcile_every_s))
    return [job["id"] for job in jobs if queue.status(job["id"]) == "dead"]


def _back_off(delivery: Delivery, ctx: WorkContext) -> None:
    """Hold a failed job (heartbeat running) before it goes back to the queue: 1, 2, 4 ... 30 s
    with jitter by its count of failures without progress, so a failing job does not spin."""
    failures = delivery.failures_without_progress()
    ctx.term.wait(min(30.0, 2.0**failures) * random.uniform(0.5, 1.0))


def make_context(database_url: str, redis_url: str | None, checkpoint_every: int | None = None) -> WorkContext:
    ledger = Ledger(database_url)
    ledger.setup()
    for job_type in HANDLERS.values():
        if job_type.setup is not None:
            job_type.setup(ledger)
    client = connect(redis_url) if redis_url else None
    return WorkContext(ledger=ledger, redis=client, checkpoint_every=checkpoint_every)


def make_queue(ctx: WorkContext, visibility_timeout_s: float, **options: Any) -> ReliableQueue:
    """The queue of the context's destination; `options` go to ReliableQueue (e.g. max_attempts)."""
    if ctx.redis is None:
        raise ValueError("bulk_worker needs a Redis URL (parameter redis_url or AGENCY_OS_REDIS_URL)")
    return ReliableQueue(
        ctx.redis,
        destination=ctx.ledger.destination,
        visibility_timeout_s=visibility_timeout_s,
        max_strikes=max_strikes_from_env(),
        **options,
    )
