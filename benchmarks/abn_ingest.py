"""Benchmark of abn_bulk_ingestion (run by `make bench`; prints JSON, asserts nothing).

1. Ingest rate of N generated records (default 1M) into SQLite and into PostgreSQL, at
   checkpoint intervals 100, 1,000 and 10,000 records, with peak RSS per process.
2. SIGTERM -> checkpoint committed -> process gone: p50/p99 over T trials (default 20).
3. Records redone after SIGTERM and after SIGKILL (from the progress log the CLI writes just
   before each commit, against what the ledger committed).

`--layout compact|published|both` picks the fixture layout (agency_os_spot.abn.fixture --layout): each file
one line, or the data.gov.au layout with one record per line. Each rate result carries the CLI's
own figures (records/s over its run, peak RSS of the largest process, `stages`: start-up, waiting
for parsers, write transactions, parser and writer CPU) and the whole process's wall time as the
benchmark saw it (start-up included). `parse_only` results time the parse stage alone (cut,
parse, format for COPY) in the benchmark's own process on a fifth of the files: records per CPU
second of one parser, no database. `--trials 0` skips the kill trials.

Each line printed is one JSON result; the last line is the whole report.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agency_os_spot.abn.fixture import generate  # noqa: E402
from agency_os_spot.abn.pipeline import produce_batches  # noqa: E402
from agency_os_spot.abn.sources import plan  # noqa: E402
from agency_os_spot.runtime.ledger import normalize_url  # noqa: E402
from tests.support.services import ledger_progress, postgres_server  # noqa: E402


def ingest(sources: list[str], url: str, every: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "agency_os_spot.cli", "ingest-abn", *sources, "--database-url", url,
         "--checkpoint-every", str(every), *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip


def fresh_pg(admin_url: str, name: str) -> str:
    engine = sa.create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def logged(log: Path) -> int:
    ends: dict[str, int] = {}
    if log.exists():
        for line in log.read_text().splitlines():
            job, _first, end = line.split()
            ends[job] = max(ends.get(job, 0), int(end))
    return sum(ends.values())


def rate_runs(
    sources: list[str], pg_admin: str, work: Path, intervals: list[int], backends: list[str], layout: str
) -> list[dict]:
    results = []
    for backend in backends:
        for every in intervals:
            url = (
                fresh_pg(pg_admin, f"bench_{every}")
                if backend == "postgresql"
                else f"sqlite:///{work / f'bench_{layout}_{every}.db'}"
            )
            started = time.monotonic()
            proc = ingest(sources, url, every)
            out, _ = proc.communicate()
            wall = time.monotonic() - started
            summary = json.loads(out.strip().splitlines()[-1])
            result = {
                "bench": "ingest_rate",
                "layout": layout,
                "backend": backend,
                "checkpoint_every": every,
                "records": summary["records"],
                "rejected": summary["rejected"],
                "seconds": summary["seconds"],
                "records_per_s": summary["records_per_s"],
                "process_wall_s": round(wall, 3),
                "process_records_per_s": round(summary["records"] / wall, 1),
                "peak_rss_mb": summary["peak_rss_mb"],
                "stages": summary.get("stages"),
                "loadavg_at_end": os.getloadavg(),
            }
            print(json.dumps(result), flush=True)
            results.append(result)
    return results


def parse_only(sources: list[str], layout: str, repeat: int = 3) -> dict:
    """The parse stage alone, in this process (one core, no database): the parser processes' work
    per batch (cut, parse, format as COPY text) over the first files, best CPU time of `repeat`."""
    jobs = plan(sources[: max(1, len(sources) // 5)])
    best, records = None, 0
    for _ in range(repeat):
        cpu, records = time.process_time(), 0
        for job in jobs:
            for batch in produce_batches(job, 0, 10_000, "copy"):
                records += batch.records
        spent = time.process_time() - cpu
        best = spent if best is None else min(best, spent)
    return {
        "bench": "parse_only",
        "layout": layout,
        "records": records,
        "cpu_s": round(best, 3),
        "records_per_cpu_s": round(records / best, 1) if best else None,
    }


def kill_trials(source: str, pg_admin: str, work: Path, trials: int, every: int, how: signal.Signals) -> dict:
    rng = random.Random(7)
    latencies, redone, late = [], [], 0
    for trial in range(trials):
        url = fresh_pg(pg_admin, "bench_kill")
        log = work / f"progress-{how.name}-{trial}.log"
        proc = ingest([source], url, every, "--progress-log", str(log))
        deadline = time.monotonic() + 60
        while ledger_progress(url) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.5))  # a random moment mid-file
        sent = time.monotonic()
        proc.send_signal(how)
        out, _ = proc.communicate()
        lines = out.strip().splitlines()
        if lines and json.loads(lines[-1]).get("interrupted") is False:
            late += 1  # the file was done before the signal came (a small file): not a kill mid-file
            continue
        latencies.append(time.monotonic() - sent)
        redone.append(logged(log) - ledger_progress(url))
        if how == signal.SIGTERM:
            assert proc.returncode == 143, proc.returncode
    if not latencies:
        return {"bench": f"{how.name.lower()}_trials", "trials": trials, "finished_before_signal": late}
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
    return {
        "bench": f"{how.name.lower()}_trials",
        "trials": trials,
        "finished_before_signal": late,
        "checkpoint_every": every,
        "exit_s_p50": round(statistics.median(latencies), 3),
        "exit_s_p99": round(quantiles[98], 3),
        "exit_s_max": round(max(latencies), 3),
        "records_redone_max": max(redone),
        "records_redone_mean": round(statistics.fmean(redone), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--intervals", default="100,1000,10000")
    parser.add_argument("--backends", default="postgresql,sqlite", help="comma-separated: postgresql, sqlite")
    parser.add_argument(
        "--layout", choices=("compact", "published", "both"), default="both", help="fixture layout (default both)"
    )
    parser.add_argument("--data", type=Path, default=ROOT / "build" / "bench-data")
    args = parser.parse_args()
    layouts = ["compact", "published"] if args.layout == "both" else [args.layout]
    report: dict = {"records": args.records, "files": args.files, "cpus": os.cpu_count(), "ingest": []}
    inputs = {}
    for layout in layouts:
        data = args.data / f"{args.records}-{args.files}-{layout}"
        manifest_path = data / "manifest.json"
        if not manifest_path.exists():
            generate(args.records, 2026, data, files=args.files, bad_every=1000, layout=layout)
        manifest = json.loads(manifest_path.read_text())
        inputs[layout] = [str(data / name) for name in manifest["sources"]]
        report["valid"] = manifest["valid"]
    with postgres_server() as pg_admin, tempfile.TemporaryDirectory(prefix="abn-bench-") as tmp:
        work = Path(tmp)
        intervals = [int(x) for x in args.intervals.split(",")]
        report["parse_only"] = []
        for layout, sources in inputs.items():
            result = parse_only(sources, layout)
            print(json.dumps(result), flush=True)
            report["parse_only"].append(result)
        for layout, sources in inputs.items():
            report["ingest"] += rate_runs(sources, pg_admin, work, intervals, args.backends.split(","), layout)
        for how in (signal.SIGTERM, signal.SIGKILL) if args.trials else ():
            result = kill_trials(inputs[layouts[-1]][0], pg_admin, work, args.trials, 10_000, how)
            print(json.dumps(result), flush=True)
            report[result["bench"]] = result
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
