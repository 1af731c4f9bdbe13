"""The failover drill: ingest a synthetic ABN extract across the bulk pool while taking spot
nodes away, then prove nothing was lost or done twice.

Run by playbooks/failover_drill.yml (`make drill`) against the embedded local default::

    python -m tools.drill --api-url URL --database-url URL --redis-url URL [--records N] [--files K]
                          [--preemptions P] [--notice-ratio R] [--seed S] [--result FILE] ...

Faults (tools/drill/faults.py) are paced over the work, in a random order, while capacity replaces
missing nodes (the local capacity role, as an autoscaling group would):

* `notice`: the node's metadata emulator announces a preemption, the watcher drains the worker,
  then the node shuts down;
* `hard`: `docker kill -s KILL`, no warning;
* `freeze`: `docker pause` a node holding a job for longer than the queue's visibility timeout,
  then `docker unpause` (a frozen VM: no FIN, no RST; its job must go on elsewhere, and its late
  commit must be refused);
* `postgres_restart` and `redis_restart`: the control plane's PostgreSQL restarted; Redis killed
  (SIGKILL: what it had not written is lost) and started again.

It waits for completion, checks (tools/drill/report.py), and prints as its last line one JSON
object; the exit status is non-zero unless the drill passed. The seed is printed, so a failing
drill can be replayed. Every default is in tools/drill/config.py.

This module wires the others: cluster control (cluster), the work (workload), watching it
(observer), the faults (faults) and the result (report).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import random
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from tools.drill import report, workload
from tools.drill.cluster import Cluster
from tools.drill.config import Config, placement
from tools.drill.faults import Faults
from tools.drill.observer import Observer
from tools.drill.timeline import Timeline

log = logging.getLogger(__name__)


@contextlib.contextmanager
def prefect_client(api_url: str) -> Iterator[SyncPrefectClient]:
    """Prefect's own client (it retries what the server says is retryable) on `api_url`."""
    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        yield client


def run(config: Config) -> dict[str, Any]:
    spec = placement()
    rng = random.Random(config.seed)
    stop = threading.Event()
    with prefect_client(config.api_url) as client:
        cluster = Cluster(config)
        observer = Observer(config, client, spec.work_pool)
        faults = Faults(config, cluster, observer, rng)
        log.info(f"seed {config.seed}")
        folder, manifest = workload.extract(config, config.sized_records(len(faults.plan)))
        base = workload.serve(folder)
        sources = [f"{base}/{name}" for name in manifest["sources"]]
        observer.clear()
        parent = workload.start_run(client, config, spec, sources)
        log.info(f"Prefect UI: {config.api_url.rstrip('/').removesuffix('/api')}/runs/flow-run/{parent}")
        log.info(
            f"flow run {parent}: {manifest['records']} records in {len(manifest['files'])} files"
            f" ({len(sources)} archives, {manifest['jobs']} jobs)"
        )
        started = time.monotonic()
        timeline = Timeline(started=started)
        threads = (
            (_sample, (timeline, observer, cluster, stop)),
            (cluster.keep_capacity, (stop,)),
            (observer.watch, (faults.note_recoveries, stop)),
            (observer.report_progress, (manifest, stop)),
        )
        for target, args in threads:
            threading.Thread(target=target, args=args, daemon=True).start()
        faults.make(manifest)
        log.info(f"{faults.made()} faults made; waiting for the runs to complete")
        deadline = started + config.timeout_s
        while time.monotonic() < deadline and not observer.finished(manifest, parent):
            time.sleep(5)
        time.sleep(1)
        stop.set()
        counts = observer.counts(manifest, parent)
    with faults.lock:
        _draw(timeline, config, faults)
        return report.build(
            manifest,
            counts,
            faults.preemptions,
            faults.service_faults,
            planned=len(faults.plan),
            checkpoint_every=config.checkpoint_every,
            seed=config.seed,
            seconds=time.monotonic() - started,
        )


def _sample(timeline: Timeline, observer: Observer, cluster: Cluster, stop: threading.Event) -> None:
    """Records committed and nodes alive, every 2 s, for the picture."""
    while not stop.wait(2.0):
        with contextlib.suppress(Exception):  # a picture, not a check: a sample may be missed
            timeline.sample(observer.committed(), [node.name for node in cluster.nodes()])


def _draw(timeline: Timeline, config: Config, faults: Faults) -> None:
    path = config.result.with_suffix(".png")
    try:
        timeline.render(path, faults.preemptions, faults.service_times, f"failover drill, seed {config.seed}")
    except Exception as exc:  # the drill's verdict does not depend on its picture
        log.warning(f"no timeline picture: {type(exc).__name__}: {exc}")
        return
    log.info(f"timeline: {path}")


# The command line: option -> (Config field, type, help). No option has a default of its own: one
# not given takes the Config field's default.
OPTIONS: dict[str, tuple[str, type, str]] = {
    "--records": ("records", int, "records of the extract (default: sized to the faults)"),
    "--files": ("files", int, "files of the extract"),
    "--bad-every": ("bad_every", int, "one injected bad record in this many"),
    "--preemptions": ("preemptions", int, "nodes taken away, with a notice or hard"),
    "--notice-ratio": ("notice_ratio", float, "share of preemptions with a notice"),
    "--min-each": ("min_each", int, "at least this many notices and as many hard kills"),
    "--freezes": ("freezes", int, "nodes paused past the visibility timeout"),
    "--postgres-restarts": ("postgres_restarts", int, "restarts of the control plane's PostgreSQL"),
    "--redis-restarts": ("redis_restarts", int, "kills (SIGKILL) and starts of the control plane's Redis"),
    "--seed": ("seed", int, "random seed (default: a new one, printed)"),
    "--checkpoint-every": ("checkpoint_every", int, "records between checkpoints of a file"),
    "--log-file": ("log_file", Path, "where the drill's log is also written"),
    "--chunk-mib": ("chunk_mib", float, "MiB of XML per job (files are split in chunks of about this size)"),
    "--helpers": ("helpers", int, "extra bulk_worker runs splitting the files"),
    "--nodes": ("nodes", int, "spot nodes to keep during the drill"),
    "--control": ("control", str, "the control plane container"),
    "--freeze-seconds": ("freeze_seconds", float, "how long a node stays frozen"),
    "--notice-seconds": ("notice_seconds", float, "seconds between a notice and the shutdown"),
    "--timeout": ("timeout_s", float, "seconds to wait for the runs to complete"),
    "--result": ("result", Path, "where the JSON result is written"),
}


def parser() -> argparse.ArgumentParser:
    defaults = {f.name: f.default for f in dataclasses.fields(Config)}
    p = argparse.ArgumentParser(prog="python -m tools.drill", description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--api-url", required=True, help="the Prefect API (…/api)")
    p.add_argument("--database-url", required=True, help="the drill database (its tables are recreated)")
    p.add_argument("--redis-url", required=True, help="the queue's Redis (the drill database's queue is cleared)")
    for option, (name, kind, text) in OPTIONS.items():
        shown = "" if defaults[name] is None else f" (default: {defaults[name]})"
        metavar = option.removeprefix("--").upper().replace("-", "_")
        p.add_argument(option, dest=name, type=kind, metavar=metavar, default=argparse.SUPPRESS, help=text + shown)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    config = Config(**vars(args))
    config.log_file.parent.mkdir(parents=True, exist_ok=True)
    formatter = logging.Formatter("%(asctime)s drill: %(message)s", datefmt="%H:%M:%S")
    root = logging.getLogger("tools.drill")
    for handler in (logging.StreamHandler(sys.stderr), logging.FileHandler(config.log_file, mode="w")):
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False
    result = run(config)
    config.result.parent.mkdir(parents=True, exist_ok=True)
    config.result.write_text(json.dumps(result))
    print(json.dumps(result), flush=True)
    return report.exit_status(result)
