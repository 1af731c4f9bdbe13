"""`agency-os-spot ingest-abn`: the ABN extract into `abn_entity`, without Prefect::

    agency-os-spot ingest-abn SOURCE... --database-url URL [--checkpoint-every N]

The same code path as the flow `abn_bulk_ingestion` (flows/abn_bulk_ingestion.py), without
orchestration. It imports neither Prefect nor the queue's Redis client (seconds of start-up per
run on a small machine). SOURCE is a path or URL of an extract ZIP or XML file (default: the
data.gov.au resources). A line per file goes to stderr as it completes; the last line printed is
one JSON object (records, inserted, updated, unchanged, rejected, seconds, records_per_s,
peak_rss_mb, records_this_run, already_complete, stages). SIGTERM: the current batch commits with
its checkpoint and the process exits with status 143; the same command again resumes.
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

from agency_os_spot.abn.pipeline import DEFAULT_CHECKPOINT_EVERY, ingest_file
from agency_os_spot.abn.sources import (
    DEFAULT_CHUNK_MIB,
    DEFAULT_SOURCES,
    FileJob,
    SourceError,
    SourceUnavailable,
    plan,
)
from agency_os_spot.abn.store import create_tables
from agency_os_spot.runtime.ledger import Ledger
from agency_os_spot.runtime.termination import Interrupted, termination

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
    files, unfinished = {job.name for job in jobs}, set()
    for job in jobs:
        lease = ledger.get(job.id)
        if lease is None or not lease.complete:
            unfinished.add(job.name)
        if lease is None:
            continue
        source = lease.result if lease.complete else lease.state
        for key in SUMMARY_KEYS:
            totals[key] += int((source or {}).get(key, 0))
        complete += lease.complete
    return {
        **totals,
        "files": len(files),
        "files_complete": len(files - unfinished),
        "jobs": len(jobs),
        "jobs_complete": complete,
    }


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


# -- the command line -------------------------------------------------------------------------------


def _open_and_plan(args: argparse.Namespace) -> tuple[Any, list[FileJob]] | int:
    """(ledger, jobs), or the exit status after a one-line message."""
    try:
        return open_database(args.database_url), plan(
            args.sources or list(DEFAULT_SOURCES), args.cache_dir, chunk_mib=args.chunk_mib
        )
    except (SourceError, ValueError) as exc:
        print(f"abn_bulk_ingestion: {exc}", file=sys.stderr)
        return 2
    except SourceUnavailable as exc:  # the network or the publisher: the same command later resumes
        print(f"abn_bulk_ingestion: {exc}; run the same command again later", file=sys.stderr)
        return 1


def run_cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="agency-os-spot ingest-abn", description="Load the ABN Bulk Extract into abn_entity (resumable)."
    )
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
    parser.add_argument(
        "--chunk-mib",
        type=float,
        default=DEFAULT_CHUNK_MIB,
        metavar="MIB",
        help=f"split files larger than this into jobs of about this size (default {DEFAULT_CHUNK_MIB})",
    )
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
    planned = _open_and_plan(args)
    if isinstance(planned, int):
        return planned
    ledger, jobs = planned

    progress_log = args.progress_log.open("a", buffering=1) if args.progress_log else None

    def on_batch(job: FileJob, batch) -> None:
        if progress_log is not None:
            progress_log.write(f"{job.id} {batch.first} {batch.end}\n")

    processed = 0
    interrupted = False

    def after_commit(_job: FileJob, batch) -> None:
        nonlocal processed
        processed += batch.records

    complete_before = all((lease := ledger.get(job.id)) is not None and lease.complete for job in jobs)
    job = None
    try:
        for number, job in enumerate(jobs, 1):
            before = processed
            result = ingest_file(
                job,
                ledger,
                checkpoint_every=args.checkpoint_every,
                parallel=not args.no_parallel,
                cache_dir=args.cache_dir,
                on_batch=on_batch,
                after_commit=after_commit,
                timings=timings,
            )
            state = "already complete" if result.get("skipped") else f"{processed - before} records committed"
            part = "" if job.whole_file else f" bytes {job.byte_range}"
            print(
                f"job {number}/{len(jobs)} {job.name}{part}: {state} ({processed} so far)", file=sys.stderr, flush=True
            )
    except Interrupted:
        interrupted = True
    except SourceError as exc:
        print(f"abn_bulk_ingestion: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # one line that says what to do, not a traceback
        where = job.name if job is not None else "?"
        print(
            f"abn_bulk_ingestion: {where}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. "
            "Everything up to its last checkpoint is kept; fix the cause (a truncated or corrupt file: fetch it "
            "again) and run the same command: it resumes there.",
            file=sys.stderr,
        )
        return 1
    seconds = time.monotonic() - started
    summary = summarize(ledger, jobs)
    summary.update(
        seconds=round(seconds, 3),
        records_per_s=round(processed / seconds, 1) if seconds > 0 else 0.0,
        peak_rss_mb=peak_rss_mb(),
        interrupted=interrupted,
        records_this_run=processed,
        already_complete=complete_before,  # nothing to do: the counts above are the earlier run's
        stages=stage_times(startup_s, timings),
    )
    print(json.dumps(summary), flush=True)
    if interrupted:
        termination.stop()  # exits 143 outside Prefect
    return 0


if __name__ == "__main__":
    sys.exit(run_cli())
