"""`abn_bulk_ingestion`: load the ABN Bulk Extract into `abn_entity`, spot-safe.

Command line (the same code path, without orchestration)::

    python -m flows.abn_bulk_ingestion SOURCE... --database-url URL [--checkpoint-every N]

SOURCE is a path or URL of an extract ZIP or XML file (default: the data.gov.au resources).
The last line printed is one JSON object: records, inserted, updated, unchanged, rejected,
seconds, records_per_s, peak_rss_mb. SIGTERM: the current batch commits with its checkpoint and
the process exits with status 143; running the same command again resumes and finishes.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path
from typing import Any

from flows.abn.pipeline import DEFAULT_CHECKPOINT_EVERY, Interrupted, ingest_file
from flows.abn.sources import DEFAULT_SOURCES, FileJob, SourceError, plan
from flows.abn.store import create_tables
from flows.runtime.ledger import Ledger
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
    try:
        ledger = open_database(args.database_url)
        jobs = plan(args.sources or list(DEFAULT_SOURCES), args.cache_dir)
    except (SourceError, ValueError) as exc:
        print(f"abn_bulk_ingestion: {exc}", file=sys.stderr)
        return 2

    progress_log = args.progress_log.open("a", buffering=1) if args.progress_log else None

    def before_commit(job: FileJob, batch) -> None:
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
                before_commit=before_commit,
                after_commit=after_commit,
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
    )
    print(json.dumps(summary), flush=True)
    if interrupted:
        termination.stop()  # exits 143 outside Prefect
    return 0


if __name__ == "__main__":
    sys.exit(run_cli())
