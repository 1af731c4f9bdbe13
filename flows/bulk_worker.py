"""`bulk_worker`: the generic consumer of the bulk job queue, made spot-safe.

Every bulk flow that splits its work enqueues jobs (one per ABN file, ...) on the Redis stream
of its destination, `bulk:jobs:<destination id>` (the id of the database the jobs write to, kept
in its ledger: a job can only be taken by a consumer writing to that database); `bulk_worker`
runs anywhere in the bulk pool, takes jobs one at a time and dispatches them by type. A job taken by a node that is then preempted is not lost:

* with a notice, the job's handler commits its checkpoint, the job goes straight back to the
  queue (`release`, no attempt counted) and the run ends rescheduled;
* without one (SIGKILL, power loss), the entry's heartbeat stops and another consumer reclaims
  it after the visibility timeout; the handler resumes from the ledger's checkpoint.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from prefect import flow, get_run_logger

from flows.abn.pipeline import DEFAULT_CHECKPOINT_EVERY, Interrupted, ingest_file
from flows.abn.sources import JOB_TYPE as ABN_FILE
from flows.abn.sources import FileJob
from flows.abn.store import Batch, create_tables
from flows.catalog import flow_options
from flows.runtime import settings
from flows.runtime.ledger import Fenced, Ledger
from flows.runtime.queue import Delivery, ReliableQueue, connect
from flows.runtime.retry import call_with_retries, is_transient
from flows.runtime.termination import Termination, termination

log = logging.getLogger("agency_os.bulk_worker")
ATTEMPTED_KEY = "bulk:metrics:attempted"  # + ":<destination>": records processed per job, counted before each commit


def attempted_key(destination: str) -> str:
    return f"{ATTEMPTED_KEY}:{destination}"


def database_url_from_env() -> str | None:
    return os.environ.get(settings.DATABASE_ENV) or None


def redis_url_from_env() -> str | None:
    return os.environ.get(settings.REDIS_ENV) or None


def visibility_timeout_from_env() -> float:
    return float(os.environ.get("AGENCY_OS_QUEUE_VISIBILITY_S", "60"))


def max_strikes_from_env() -> int:
    """How many holders of a job may die without progress before it is dead-lettered as poison.
    A spot kill during a job's first checkpoint looks the same as a poison job, so the limit must
    outlast a run of bad luck: 5 with production node lifetimes (hours); the local drill, which
    takes a node every ~30 s and favours nodes holding jobs, sets more (inventories/local)."""
    value = int(os.environ.get("AGENCY_OS_QUEUE_MAX_STRIKES", "5"))
    if value < 1:
        raise ValueError(f"AGENCY_OS_QUEUE_MAX_STRIKES must be >= 1, not {value}")
    return value


@dataclass
class WorkContext:
    """What job handlers need: the ledger/database, settings, and the queue's Redis."""

    ledger: Ledger
    redis: redis.Redis | None = None
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY
    term: Termination = termination
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")

    def count_attempted(self, job: FileJob, batch: Batch) -> None:
        """Out-of-band counter of records whose processing started (committed or not): attempted
        minus committed is the work preemptions made us redo."""
        if self.redis is not None:
            self.redis.hincrby(attempted_key(self.ledger.destination), job.id, batch.records)


def handle_abn_file(delivery: Delivery, ctx: WorkContext) -> dict[str, Any]:
    job = FileJob.from_job(delivery.job)
    return ingest_file(
        job,
        ctx.ledger,
        checkpoint_every=ctx.checkpoint_every,
        owner=ctx.owner,
        term=ctx.term,
        on_batch=ctx.count_attempted,
        after_commit=lambda _job, batch: delivery.progress(batch.end),
    )


HANDLERS: dict[str, Callable[[Delivery, WorkContext], Any]] = {ABN_FILE: handle_abn_file}


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
        handler = HANDLERS.get(str(delivery.job.get("type")))
        if handler is None:
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
        _run_job(delivery, handler, ctx, stats)
        idle_since = time.monotonic()


def _attempt(handler: Callable[[Delivery, WorkContext], Any], delivery: Delivery, ctx: WorkContext) -> Any:
    """One try of the handler. A retry after a transient error first checks that the job is still
    ours: a holder that froze past the visibility timeout wakes up to an error and must not take
    back (acquire) a job the queue has handed to another consumer."""
    if delivery.attempts_here and not delivery.heartbeat():
        raise Fenced(f"job {delivery.job_id}: the queue handed it to another consumer while this one was away")
    delivery.attempts_here += 1
    return handler(delivery, ctx)


def _run_job(
    delivery: Delivery, handler: Callable[[Delivery, WorkContext], Any], ctx: WorkContext, stats: ConsumeStats
) -> None:
    """Run one delivered job to its end: ack, release (going away), abandon (taken over) or fail."""
    with delivery:
        try:
            # transient errors (a database restart, a Redis blip) are retried in place with
            # backoff; the handler resumes from the ledger's checkpoint each time
            call_with_retries(
                functools.partial(_attempt, handler, delivery, ctx), ctx.term, what=f"job {delivery.job_id}"
            )
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


def make_context(database_url: str, redis_url: str | None, checkpoint_every: int) -> WorkContext:
    ledger = Ledger(database_url)
    ledger.setup()
    create_tables(ledger.engine)
    client = connect(redis_url) if redis_url else None
    return WorkContext(ledger=ledger, redis=client, checkpoint_every=checkpoint_every)


def make_queue(ctx: WorkContext, visibility_timeout_s: float) -> ReliableQueue:
    if ctx.redis is None:
        raise ValueError("bulk_worker needs a Redis URL (parameter redis_url or AGENCY_OS_REDIS_URL)")
    return ReliableQueue(
        ctx.redis,
        destination=ctx.ledger.destination,
        visibility_timeout_s=visibility_timeout_s,
        max_strikes=max_strikes_from_env(),
    )


@flow(**flow_options("bulk_worker"))
def bulk_worker(
    redis_url: str | None = None,
    database_url: str | None = None,
    idle_timeout_s: float = 30.0,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    visibility_timeout_s: float | None = None,
) -> dict[str, int]:
    """Consume the jobs of this node's database until the queue has been idle for `idle_timeout_s`."""
    term = termination.install()
    logger = get_run_logger()
    database_url, redis_url = settings.resolve(database_url, redis_url, redis_required=True)
    with term.guard():
        ctx = make_context(database_url, redis_url, checkpoint_every)
        queue = make_queue(ctx, visibility_timeout_s or visibility_timeout_from_env())
        stats = consume(queue, ctx, idle_timeout_s=idle_timeout_s)
    logger.info("bulk_worker done: %s", stats.as_dict())
    return stats.as_dict()


def main(argv: list[str] | None = None) -> int:
    """`python -m flows.bulk_worker`: the same consumer loop without orchestration."""
    import argparse  # noqa: PLC0415
    import json  # noqa: PLC0415
    import sys  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m flows.bulk_worker", description=main.__doc__)
    parser.add_argument("--redis-url", default=redis_url_from_env(), help="default: AGENCY_OS_REDIS_URL")
    parser.add_argument("--database-url", default=database_url_from_env(), help="default: AGENCY_OS_DATABASE_URL")
    parser.add_argument("--idle-timeout", type=float, default=30.0, help="stop after this many seconds without a job")
    parser.add_argument(
        "--visibility-timeout",
        type=float,
        default=visibility_timeout_from_env(),
        help="seconds without a heartbeat before another consumer reclaims a job",
    )
    parser.add_argument("--checkpoint-every", type=int, default=DEFAULT_CHECKPOINT_EVERY)
    parser.add_argument("--max-attempts", type=int, default=5, help="failures before a job is dead-lettered")
    args = parser.parse_args(argv)
    if not args.redis_url:
        parser.error("--redis-url (or AGENCY_OS_REDIS_URL) is required")
    if not args.database_url:
        parser.error("--database-url (or AGENCY_OS_DATABASE_URL) is required")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    termination.install()
    ctx = make_context(args.database_url, args.redis_url, args.checkpoint_every)
    queue = ReliableQueue(
        ctx.redis,
        destination=ctx.ledger.destination,
        visibility_timeout_s=args.visibility_timeout,
        max_attempts=args.max_attempts,
        max_strikes=max_strikes_from_env(),
    )
    stats = consume(queue, ctx, idle_timeout_s=args.idle_timeout)
    print(json.dumps(stats.as_dict()), file=sys.stdout, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
