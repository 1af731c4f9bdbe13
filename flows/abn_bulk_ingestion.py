"""`abn_bulk_ingestion`: load the ABN Bulk Extract into `abn_entity`, spot-safe.

As a Prefect flow (deployment from the catalog, pool `bulk-processing`): plan one job per XML
file (per chunk of `chunk_mib` MiB of a larger one), then either ingest them in this run (no Redis) or put them on the queue of the database
they write to (`bulk:jobs:<destination id>`), start `helpers` extra `bulk_worker` runs so several
nodes split the files, and consume jobs itself until every file is complete. Every file commits its checkpoint with its rows, so a preempted
run (rescheduled) or a dead node (its job reclaimed) resumes where the ledger says.

The same code path without orchestration is the command line `agency-os-spot ingest-abn`
(`agency_os_spot.abn.cli`).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run

import agency_os_spot.abn.handler  # noqa: F401  (registers the abn_file job type)
from agency_os_spot import settings
from agency_os_spot.abn.cli import open_database, summarize
from agency_os_spot.abn.pipeline import DEFAULT_CHECKPOINT_EVERY, ingest_file
from agency_os_spot.abn.sources import DEFAULT_CHUNK_MIB, DEFAULT_SOURCES, FileJob, plan
from agency_os_spot.catalog import flow_options
from agency_os_spot.runtime.consumer import make_context, make_queue, visibility_timeout_from_env, work_until_settled
from agency_os_spot.runtime.queue import ReliableQueue
from agency_os_spot.runtime.termination import Interrupted, termination


@task(retries=2, retry_delay_seconds=15)
def plan_files(sources: list[str] | None, chunk_mib: float) -> list[dict[str, Any]]:
    """One job per XML file of the sources, or per chunk of a large one (HEAD requests /
    downloads: retried on I/O errors)."""
    return [job.to_job() for job in plan(sources or list(DEFAULT_SOURCES), chunk_mib=chunk_mib)]


@task
def ingest_one(job: dict[str, Any], database_url: str, checkpoint_every: int) -> dict[str, Any]:
    """Ingest one file in this run (no queue): resumes from its checkpoint."""
    return ingest_file(FileJob.from_job(job), open_database(database_url), checkpoint_every=checkpoint_every)


@task
def enqueue_files(jobs: list[dict[str, Any]], redis_url: str, destination: str) -> int:
    """Put each file on its destination's queue once (a rescheduled run enqueues nothing twice)."""
    queue = ReliableQueue(redis_url, destination=destination)
    return sum(queue.enqueue(job) is not None for job in jobs)


@task
def launch_helpers(count: int, parameters: dict[str, Any]) -> list[str]:
    """Start `count` bulk_worker runs in the bulk pool (idempotent per parent run)."""
    from prefect.deployments import run_deployment  # noqa: PLC0415

    parent = flow_run.get_id() or "local"
    runs = [
        run_deployment(
            "bulk_worker/bulk_worker",
            parameters=parameters,
            timeout=0,
            idempotency_key=f"{parent}-helper-{i}",
            as_subflow=False,
            tags=[f"helper-of:{parent}"],
        )
        for i in range(count)
    ]
    return [str(run.id) for run in runs]


@flow(**flow_options("abn_bulk_ingestion"))
def abn_bulk_ingestion(
    sources: list[str] | None = None,
    database_url: str | None = None,
    redis_url: str | None = None,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    helpers: int = 0,
    visibility_timeout_s: float | None = None,
    scratch: bool = False,
    deadline_hours: float | None = 24.0,
    chunk_mib: float = DEFAULT_CHUNK_MIB,
) -> dict[str, Any]:
    """Ingest the ABN Bulk Extract (default: the data.gov.au resources) into `abn_entity`.

    The database and Redis are the node's (AGENCY_OS_DATABASE_URL, AGENCY_OS_REDIS_URL) unless
    given here without a password; `scratch` (the cutover canary) ingests into a throw-away SQLite
    file without the queue, so it can never take or write a production job. With the queue, jobs
    that Redis lost are enqueued again from the ledger, and after `deadline_hours` the run fails
    naming the jobs that are not complete."""
    term = termination.install()
    logger = get_run_logger()
    given = {"database_url": database_url, "redis_url": redis_url}
    database_url, redis_url = settings.resolve(database_url, redis_url, scratch=scratch)
    with term.guard():
        jobs = plan_files(sources, chunk_mib)
        logger.info("%d jobs to ingest (files split in chunks of %s MiB)", len(jobs), chunk_mib)
        if redis_url:
            ctx = make_context(database_url, redis_url, checkpoint_every)
            queue = make_queue(ctx, visibility_timeout_s or visibility_timeout_from_env())
            enqueue_files(jobs, redis_url, ctx.ledger.destination)
            if helpers > 0:
                # Helpers read the node's own settings; only password-less URLs given to this run
                # are passed on (a parameter is stored and shown by Prefect).
                passed = {key: value for key, value in given.items() if value}
                launch_helpers(helpers, {**passed, "checkpoint_every": checkpoint_every})
            deadline_s = None if deadline_hours is None else deadline_hours * 3600
            dead = work_until_settled(queue, ctx, jobs, deadline_s=deadline_s)
            dead_key = queue.dead_letter
        else:
            dead, dead_key = [], ""
            for job in jobs:
                if term.requested:
                    term.stop()
                try:
                    ingest_one(job, database_url, checkpoint_every)
                except Interrupted:
                    term.stop()
        file_jobs = [FileJob.from_job(job) for job in jobs]
        summary = summarize(open_database(database_url), file_jobs)
    logger.info("abn_bulk_ingestion: %s", summary)
    if dead:
        raise RuntimeError(f"{len(dead)} file(s) were dead-lettered (see {dead_key}): {', '.join(dead)}")
    return summary
