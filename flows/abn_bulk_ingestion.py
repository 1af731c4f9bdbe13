"""`abn_bulk_ingestion`: load the ABN Bulk Extract into `abn_entity`, spot-safe.

As a Prefect flow (deployment from the catalog, pool `bulk-processing`): plan one job per XML
file, then either ingest them in this run (no Redis) or put them on the `bulk:jobs` queue, start
`helpers` extra `bulk_worker` runs so several nodes split the files, and consume jobs itself
until every file is complete. Every file commits its checkpoint with its rows, so a preempted
run (rescheduled) or a dead node (its job reclaimed) resumes where the ledger says.

Command line (the same code path, without orchestration)::

    python -m flows.abn_bulk_ingestion SOURCE... --database-url URL [--checkpoint-every N]

SOURCE is a path or URL of an extract ZIP or XML file (default: the data.gov.au resources).
The last line printed is one JSON object: records, inserted, updated, unchanged, rejected,
seconds, records_per_s, peak_rss_mb, and `stages` (where the time went, see `stage_times`). SIGTERM: the current batch commits with its checkpoint and
the process exits with status 143; running the same command again resumes and finishes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run

from flows.abn.pipeline import DEFAULT_CHECKPOINT_EVERY, Interrupted, ingest_file
from flows.abn.sources import DEFAULT_SOURCES, FileJob, SourceError, plan
from flows.abn.store import create_tables
from flows.bulk_worker import consume, make_context, make_queue, visibility_timeout_from_env
from flows.catalog import flow_options
from flows.runtime import settings
from flows.runtime.ledger import Ledger
from flows.runtime.queue import ReliableQueue
from flows.runtime.termination import termination

SUMMARY_KEYS = ("records", "inserted", "updated", "unchanged", "rejected")


def open_database(database_url: str) -> Ledger:
    """The ledger on `database_url`, with the ledger and ABN tables created if missing."""
    ledger = Ledger(database_url)
    ledger.setup()
    create_tables(ledger.engine)
    return ledger


def summarize(ledger: Ledger, jobs: list[FileJob]) -> dict[str, Any]:
    """Totals over the jobs, from what the ledger has committed (exact after any resume)."""
    totals = dict.fromkeys(SUMMARY_KEYS, 0)
    complete = 0
    for job in jobs:
        lease = ledger.get(job.id)
        if lease is None:
            continue
        source = lease.result if lease.complete else lease.state
        for key in SUMMARY_KEYS:
            totals[key] += int((source or {}).get(key, 0))
        complete += lease.complete
    return {**totals, "files": len(jobs), "files_complete": complete}


def peak_rss_mb() -> float:
    """Peak resident memory of this process or any parser process it waited for (MiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) / 1024, 1)


def _seconds_since_process_start() -> float | None:
    """Wall seconds since this process started (Linux), i.e. including interpreter start-up and imports."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def stage_times(startup_s: float | None, timings: dict[str, float]) -> dict[str, float | None]:
    """Where an ingest's time went (cheap to measure): `startup_s` wall seconds from process start to
    the first file (interpreter, imports); the writer's wall seconds waiting for parsed batches
    (`wait_s`) and inside its write transactions (`write_s`: COPY/upsert, checkpoint, commit, the
    database's work included); CPU seconds of the parser processes (`parse_cpu_s`, their start-up
    included) and of this process (`writer_cpu_s`)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "startup_s": None if startup_s is None else round(startup_s, 3),
        "wait_s": round(timings.get("wait_s", 0.0), 3),
        "write_s": round(timings.get("write_s", 0.0), 3),
        "parse_cpu_s": round(children.ru_utime + children.ru_stime, 3),
        "writer_cpu_s": round(own.ru_utime + own.ru_stime, 3),
    }


# -- the Prefect flow --------------------------------------------------------------------------------


@task(retries=2, retry_delay_seconds=15)
def plan_files(sources: list[str] | None) -> list[dict[str, Any]]:
    """One job per XML file of the sources (HEAD requests / downloads: retried on I/O errors)."""
    return [job.to_job() for job in plan(sources or list(DEFAULT_SOURCES))]


@task
def ingest_one(job: dict[str, Any], database_url: str, checkpoint_every: int) -> dict[str, Any]:
    """Ingest one file in this run (no queue): resumes from its checkpoint."""
    return ingest_file(FileJob.from_job(job), open_database(database_url), checkpoint_every=checkpoint_every)


@task
def enqueue_files(jobs: list[dict[str, Any]], redis_url: str) -> int:
    """Put each file on `bulk:jobs` once (a rescheduled run enqueues nothing twice)."""
    queue = ReliableQueue(redis_url)
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
) -> dict[str, Any]:
    """Ingest the ABN Bulk Extract (default: the data.gov.au resources) into `abn_entity`.

    The database and Redis are the node's (AGENCY_OS_DATABASE_URL, AGENCY_OS_REDIS_URL) unless
    given here without a password; `scratch` (the cutover canary) ingests into a throw-away SQLite
    file without the queue, so it can never take or write a production job."""
    term = termination.install()
    logger = get_run_logger()
    given = {"database_url": database_url, "redis_url": redis_url}
    database_url, redis_url = settings.resolve(database_url, redis_url, scratch=scratch)
    with term.guard():
        jobs = plan_files(sources)
        logger.info("%d files to ingest", len(jobs))
        if redis_url:
            enqueue_files(jobs, redis_url)
            if helpers > 0:
                # Helpers read the node's own settings; only password-less URLs given to this run
                # are passed on (a parameter is stored and shown by Prefect).
                passed = {key: value for key, value in given.items() if value}
                launch_helpers(helpers, {**passed, "checkpoint_every": checkpoint_every})
            ctx = make_context(database_url, redis_url, checkpoint_every)
            queue = make_queue(ctx, visibility_timeout_s or visibility_timeout_from_env())
            ids = [job["id"] for job in jobs]

            def settled() -> bool:
                return all(
                    ((lease := ctx.ledger.get(job_id)) is not None and lease.complete) or queue.status(job_id) == "dead"
                    for job_id in ids
                )

            consume(queue, ctx, stop_when=settled, idle_timeout_s=None)
            dead = [job_id for job_id in ids if queue.status(job_id) == "dead"]
        else:
            dead = []
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
        raise RuntimeError(f"{len(dead)} file(s) were dead-lettered (see bulk:jobs:dead): {', '.join(dead)}")
    return summary


# -- the command line -------------------------------------------------------------------------------


def run_cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.abn_bulk_ingestion", description=__doc__.splitlines()[0])
    parser.add_argument(
        "sources", nargs="*", metavar="SOURCE", help="extract ZIP/XML paths or URLs (default: data.gov.au)"
    )
    parser.add_argument("--database-url", required=True, help="sqlite:///path.db or postgresql://user@host/db")
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=DEFAULT_CHECKPOINT_EVERY,
        metavar="N",
        help=f"records per transaction/checkpoint (default {DEFAULT_CHECKPOINT_EVERY})",
    )
    parser.add_argument("--cache-dir", type=Path, help="where downloaded ZIPs are kept")
    parser.add_argument("--no-parallel", action="store_true", help="parse in this process instead of a helper process")
    parser.add_argument(
        "--progress-log",
        type=Path,
        help="append 'job_id end' before each commit (used by the benchmark to count redone records)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.checkpoint_every < 1:
        parser.error("--checkpoint-every must be >= 1")

    termination.install()
    started = time.monotonic()
    startup_s = _seconds_since_process_start()
    timings: dict[str, float] = {}
    try:
        ledger = open_database(args.database_url)
        jobs = plan(args.sources or list(DEFAULT_SOURCES), args.cache_dir)
    except (SourceError, ValueError) as exc:
        print(f"abn_bulk_ingestion: {exc}", file=sys.stderr)
        return 2

    progress_log = args.progress_log.open("a", buffering=1) if args.progress_log else None

    def on_batch(job: FileJob, batch) -> None:
        if progress_log is not None:
            progress_log.write(f"{job.id} {batch.first} {batch.end}\n")

    processed = 0
    interrupted = False

    def after_commit(_job: FileJob, batch) -> None:
        nonlocal processed
        processed += batch.records

    try:
        for job in jobs:
            ingest_file(
                job,
                ledger,
                checkpoint_every=args.checkpoint_every,
                parallel=not args.no_parallel,
                cache_dir=args.cache_dir,
                on_batch=on_batch,
                after_commit=after_commit,
                timings=timings,
            )
    except Interrupted:
        interrupted = True
    except SourceError as exc:
        print(f"abn_bulk_ingestion: {exc}", file=sys.stderr)
        return 1
    seconds = time.monotonic() - started
    summary = summarize(ledger, jobs)
    summary.update(
        seconds=round(seconds, 3),
        records_per_s=round(processed / seconds, 1) if seconds > 0 else 0.0,
        peak_rss_mb=peak_rss_mb(),
        interrupted=interrupted,
        stages=stage_times(startup_s, timings),
    )
    print(json.dumps(summary), flush=True)
    if interrupted:
        termination.stop()  # exits 143 outside Prefect
    return 0


if __name__ == "__main__":
    sys.exit(run_cli())
