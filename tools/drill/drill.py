"""The failover drill: ingest a synthetic ABN extract across the bulk pool while taking spot
nodes away, then prove nothing was lost or done twice.

Run by playbooks/failover_drill.yml (`make drill`) against the embedded local default::

    python -m tools.drill --api-url URL --database-url URL --redis-url URL [--records N] [--files K]
                          [--preemptions P] [--notice-ratio R] [--seed S] [--result FILE]

Faults are paced over the work (fault k of N once k/N of three quarters of the records are
committed), in a random order, while capacity replaces missing nodes (the local capacity role,
as an autoscaling group would):

* `notice`: the node's metadata emulator announces a preemption, the watcher drains the worker,
  then the node shuts down;
* `hard`: `docker kill -s KILL`, no warning;
* `freeze`: `docker pause` a node holding a job for longer than the queue's visibility timeout,
  then `docker unpause` (a frozen VM: no FIN, no RST; its job must go on elsewhere, and its late
  commit must be refused);
* `postgres_restart` and `redis_restart`: the control plane's PostgreSQL restarted; Redis killed
  (SIGKILL: what it had not written is lost) and started again.

It waits for completion, checks, and prints as its last line one JSON object. The exit status is
non-zero unless every valid record is in the database exactly once, the rejects are the injected
bad records, no job was lost or dead-lettered, every run completed, and every planned fault was
made; the JSON says which (`work_ok`, `faults_missing`). The seed is printed, so a failing drill
can be replayed.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import json
import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
import sqlalchemy as sa

from agency_os_spot.abn.fixture import generate
from agency_os_spot.runtime.consumer import attempted_key
from agency_os_spot.runtime.ledger import Ledger, normalize_url
from agency_os_spot.runtime.prefect_rest import prefect_http
from agency_os_spot.runtime.queue import destination_stream

ROOT = Path(__file__).resolve().parents[2]
NODE_LABEL = "agency-os.role=spot-node"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
FAULT_SPAN = 0.75  # faults are spread over the first three quarters of the records
# Records of work per planned fault when the size is not given: the work must outlast the faults.
# Measured here: 7,000-12,000 records/s with four nodes, and a fault takes 1-50 s (a notice and shutdown
# ~45 s, a freeze 35 s, a restart ~5 s; notices and freezes go on in the background).
RECORDS_PER_FAULT = 500_000
MIN_RECORDS = 1_000_000


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} drill: {message}", file=sys.stderr, flush=True)


@dataclass
class Preemption:
    node: str
    mode: str
    at: float
    held: dict[str, int]  # job id -> progress when the node went away
    recovered_at: dict[str, float] = field(default_factory=dict)

    @property
    def recovery_s(self) -> float | None:
        if not self.held:
            return None
        if len(self.recovered_at) < len(self.held):
            return float("inf")
        return max(self.recovered_at.values()) - self.at


@dataclass
class Config:
    api_url: str
    database_url: str
    redis_url: str
    records: int | None = None  # None: sized to the faults (RECORDS_PER_FAULT each)
    files: int = 20
    bad_every: int = 997
    preemptions: int = 20
    freezes: int = 2
    postgres_restarts: int = 2
    redis_restarts: int = 2
    freeze_seconds: float = 35.0  # longer than the local queue visibility timeout (20 s)
    control: str = "agency-os-control"  # the control plane container (PostgreSQL, Redis)
    notice_ratio: float = 0.5
    seed: int = 0
    checkpoint_every: int = 2_000
    helpers: int = 5
    notice_seconds: float = 10.0
    shutdown_grace: float = 40.0
    min_each: int = 0
    timeout_s: float = 3_600.0
    nodes: int = 4
    metadata_port_base: int = 18_700
    inventory: str = "inventories/local"
    data_dir: Path = ROOT / "build" / "drill-data"
    result: Path = ROOT / "reports" / "drill" / "result.json"


class Docker:
    @staticmethod
    def nodes() -> list[dict[str, Any]]:
        out = subprocess.run(
            ["docker", "ps", "--filter", f"label={NODE_LABEL}", "--format", "{{json .}}"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        nodes = []
        for line in out.splitlines():
            info = json.loads(line)
            labels = dict(kv.split("=", 1) for kv in info["Labels"].split(",") if "=" in kv)
            nodes.append({"name": info["Names"], "slot": int(labels.get("agency-os.slot", "0"))})
        return nodes

    @staticmethod
    def kill(name: str) -> None:
        subprocess.run(["docker", "kill", "-s", "KILL", name], capture_output=True, check=False)
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)

    @staticmethod
    def freeze(name: str, seconds: float) -> None:
        subprocess.run(["docker", "pause", name], capture_output=True, check=False)
        time.sleep(seconds)
        subprocess.run(["docker", "unpause", name], capture_output=True, check=False)

    @staticmethod
    def restart_service(container: str, kind: str) -> bool:
        """Restart PostgreSQL, or kill Redis (SIGKILL) and start it again, in the control plane."""
        steps = (
            [["systemctl", "restart", "postgresql.service"]]
            if kind == "postgres_restart"
            else [["systemctl", "kill", "--signal=SIGKILL", "redis-server.service"],
                  ["systemctl", "restart", "redis-server.service"]]
        )  # fmt: skip
        ok = True
        for step in steps:
            proc = subprocess.run(["docker", "exec", container, *step], capture_output=True, text=True, check=False)
            ok = ok and (proc.returncode == 0 or step[1] == "kill")
            if proc.returncode and step[1] != "kill":
                log(f"{kind}: {' '.join(step)} failed: {proc.stderr.strip()}")
        return ok

    @staticmethod
    def shutdown(name: str, grace: float) -> None:
        # The node's stop signal is SIGRTMIN+3: systemd stops every unit (the worker drains).
        subprocess.run(["docker", "stop", "-t", str(int(grace)), name], capture_output=True, check=False)
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


class Drill:
    def __init__(self, config: Config):
        self.c = config
        self.rng = random.Random(config.seed)
        self.faults = self.plan_faults()
        if config.records is None:
            config.records = max(MIN_RECORDS, RECORDS_PER_FAULT * len(self.faults))
        self.http = prefect_http(config.api_url)
        self.engine = sa.create_engine(normalize_url(config.database_url), pool_pre_ping=True)
        self.redis = redis.Redis.from_url(config.redis_url, decode_responses=True)
        ledger = Ledger(self.engine)
        ledger.setup()
        self.destination = ledger.destination  # the drill database's own queue namespace
        self.stream = destination_stream(self.destination)
        self.preemptions: list[Preemption] = []
        self.service_faults: list[str] = []  # postgres_restart / redis_restart, as made
        self.busy: set[str] = set()  # nodes in the middle of a notice or a freeze
        self.fault_threads: list[threading.Thread] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()

    # -- setup ---------------------------------------------------------------------------------

    def data(self) -> tuple[Path, dict]:
        folder = self.c.data_dir / f"{self.c.records}-{self.c.files}-{self.c.bad_every}-{self.c.seed}"
        manifest = folder / "manifest.json"
        if not manifest.exists():
            log(f"generating {self.c.records} records in {self.c.files} files into {folder}")
            generate(self.c.records, self.c.seed, folder, files=self.c.files, bad_every=self.c.bad_every)
        return folder, json.loads(manifest.read_text())

    def serve(self, folder: Path) -> str:
        """The extract over HTTP on the host loopback, where every node can read it."""
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}"

    def reset_state(self) -> None:
        """A clean drill database and queue (this is the embedded default's drill database)."""
        with self.engine.begin() as conn:
            for table in ("abn_entity", "abn_reject", "job_ledger"):
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        # only this database's queue and counters: production jobs live under another destination
        keys = [*self.redis.scan_iter(f"{self.stream}*"), attempted_key(self.destination)]
        self.redis.delete(*keys)

    def start_run(self, sources: list[str]) -> str:
        dep = self.http.get("/deployments/name/abn_bulk_ingestion/abn_bulk_ingestion").raise_for_status().json()
        if dep["work_pool_name"] != "bulk-processing":
            raise SystemExit(
                "abn_bulk_ingestion is not on the bulk pool: ansible-playbook cutover.yml -e flow=abn_bulk_ingestion"
            )
        params = {
            "sources": sources,
            # without its password: parameters are stored and shown by Prefect; the nodes' libpq
            # takes the password from their own configuration (PGPASSWORD, inventories/local)
            "database_url": sa.engine.make_url(self.c.database_url)._replace(password=None).render_as_string(False),
            "redis_url": self.c.redis_url,
            "checkpoint_every": self.c.checkpoint_every,
            "helpers": self.c.helpers,
        }
        run = self.http.post(
            f"/deployments/{dep['id']}/create_flow_run", json={"parameters": params, "tags": ["drill"]}
        ).raise_for_status()
        return run.json()["id"]

    # -- observation ----------------------------------------------------------------------------

    def ledger(self) -> list[dict[str, Any]]:
        with contextlib.suppress(sa.exc.SQLAlchemyError), self.engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT job_id, status, owner, progress, result FROM job_ledger")
            return [dict(r._mapping) for r in rows]
        return []

    def runs(self, parent: str) -> list[dict[str, Any]]:
        body = {"flow_runs": {"tags": {"all_": [f"helper-of:{parent}"]}}, "limit": 50}
        helpers = self.http.post("/flow_runs/filter", json=body).raise_for_status().json()
        return [self.http.get(f"/flow_runs/{parent}").raise_for_status().json(), *helpers]

    def watch_recoveries(self) -> None:
        """Note when each job a preempted node held makes progress under another owner."""
        while not self.stop.wait(0.5):
            rows = {r["job_id"]: r for r in self.ledger()}
            now = time.monotonic()
            with self.lock:
                for event in self.preemptions:
                    for job, progress in event.held.items():
                        row = rows.get(job)
                        if job in event.recovered_at or row is None:
                            continue
                        elsewhere = row["owner"] and not row["owner"].startswith(event.node + ":")
                        if row["status"] == "complete" or (elsewhere and row["progress"] > progress):
                            event.recovered_at[job] = now

    # -- capacity and preemptions ------------------------------------------------------------------

    def keep_capacity(self) -> None:
        """Replace missing nodes, like an autoscaling group (re-running the capacity role)."""
        while not self.stop.wait(2):
            if len(Docker.nodes()) >= self.c.nodes:
                continue
            log("capacity: replacing missing nodes")
            started = time.monotonic()
            proc = subprocess.run(
                ["ansible-playbook", "-i", self.c.inventory, "playbooks/provision_spot.yml", "--tags", "capacity,nodes",
                 "-e", f"local_spot_capacity_nodes={self.c.nodes}", "-e", "node_hosts=spot_nodes_new"],
                cwd=ROOT, capture_output=True, text=True, check=False,
                env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")),
            )  # fmt: skip
            log(f"capacity: replacement finished rc={proc.returncode} in {time.monotonic() - started:.0f} s")

    def online_workers(self) -> set[str]:
        workers = self.http.post("/work_pools/bulk-processing/workers/filter", json={}).json()
        return {w["name"] for w in workers if w.get("status") == "ONLINE"}

    def held_by(self, node: str) -> dict[str, int]:
        return {
            r["job_id"]: r["progress"]
            for r in self.ledger()
            if r["status"] == "running" and (r["owner"] or "").startswith(node + ":")
        }

    def preempt(self, node: dict[str, Any], mode: str) -> None:
        event = Preemption(node=node["name"], mode=mode, at=time.monotonic(), held=self.held_by(node["name"]))
        with self.lock:
            self.preemptions.append(event)
        log(f"preemption {len(self.preemptions)}: {mode} on {node['name']} (holding {sorted(event.held) or 'no job'})")
        if mode == "hard":
            Docker.kill(node["name"])
            return
        # A notice (notice, then shutdown) or a freeze takes tens of seconds: it goes on in the
        # background, so the next fault comes at its own point of the work; the node is not a
        # candidate for another fault meanwhile.
        with self.lock:
            self.busy.add(node["name"])
        thread = threading.Thread(target=self._slow_fault, args=(node, mode), daemon=True)
        self.fault_threads.append(thread)
        thread.start()

    def _slow_fault(self, node: dict[str, Any], mode: str) -> None:
        try:
            if mode == "freeze":
                Docker.freeze(node["name"], self.c.freeze_seconds)
                return
            port = self.c.metadata_port_base + node["slot"]
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(
                    f"http://127.0.0.1:{port}/_control/notice",
                    json={"action": "terminate", "in_s": self.c.notice_seconds},
                )
            time.sleep(self.c.notice_seconds)
            Docker.shutdown(node["name"], self.c.shutdown_grace)
        finally:
            with self.lock:
                self.busy.discard(node["name"])

    def all_done(self, manifest: dict) -> bool:
        done = [r for r in self.ledger() if r["status"] == "complete"]
        return len(done) >= len(manifest["files"])

    def committed(self) -> int:
        return sum(int(r["progress"] or 0) for r in self.ledger())

    def plan_faults(self) -> list[str]:
        """Every fault of the drill, in a random order: notice/hard preemptions (at least `min_each`
        of both, the rest by the ratio), freezes and service restarts."""
        fixed = ["notice", "hard"] * self.c.min_each
        rest = [
            "notice" if self.rng.random() < self.c.notice_ratio else "hard"
            for _ in range(max(self.c.preemptions - len(fixed), 0))
        ]
        faults = (
            fixed
            + rest
            + ["freeze"] * self.c.freezes
            + ["postgres_restart"] * self.c.postgres_restarts
            + ["redis_restart"] * self.c.redis_restarts
        )
        self.rng.shuffle(faults)
        return faults

    def faults_made(self) -> int:
        return len(self.preemptions) + len(self.service_faults)

    def fault_while_running(self, manifest: dict) -> None:
        """Fault k of N once k/N of the first FAULT_SPAN of the records are committed: spread over
        the work whatever its speed, with the last quarter left for the faults that take a while
        (a notice, a freeze) and for a node fault to find a node that holds a job while another
        can carry on."""
        faults = self.faults
        total = manifest["records"]
        while self.faults_made() < len(faults) and not self.all_done(manifest):
            k = self.faults_made()
            if self.committed() < total * FAULT_SPAN * (k + 1) / len(faults):
                time.sleep(0.5)
                continue
            fault = faults[k]
            if fault in ("postgres_restart", "redis_restart"):
                log(f"fault {k + 1}: {fault}")
                if Docker.restart_service(self.c.control, fault):
                    self.service_faults.append(fault)
                continue
            # Take a node only while another one can carry on (a spot pool rarely loses all at once),
            # and take one that is working: an online worker holding a job, to prove the job survives.
            nodes = Docker.nodes()
            online = self.online_workers()
            with self.lock:
                busy = set(self.busy)
            working = [n for n in nodes if n["name"] in online and n["name"] not in busy and self.held_by(n["name"])]
            if len(nodes) - len(busy) < 2 or not working or self.all_done(manifest):
                time.sleep(1)
                continue
            self.preempt(self.rng.choice(working), fault)

    # -- the drill -----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        log(f"seed {self.c.seed}")
        folder, manifest = self.data()
        base = self.serve(folder)
        sources = [f"{base}/{name}" for name in manifest["sources"]]
        self.reset_state()
        parent = self.start_run(sources)
        log(f"flow run {parent}: {manifest['records']} records in {len(sources)} files")
        started = time.monotonic()
        threads = [threading.Thread(target=t, daemon=True) for t in (self.keep_capacity, self.watch_recoveries)]
        for thread in threads:
            thread.start()
        self.fault_while_running(manifest)
        for thread in self.fault_threads:
            thread.join()
        log(f"{self.faults_made()} faults made; waiting for the runs to complete")
        deadline = started + self.c.timeout_s
        while time.monotonic() < deadline:
            runs = self.runs(parent)
            if self.all_done(manifest) and all(r["state_type"] in FINAL for r in runs) and len(runs) > self.c.helpers:
                break
            time.sleep(5)
        time.sleep(1)
        self.stop.set()
        return self.report(manifest, parent, time.monotonic() - started)

    def report(self, manifest: dict, parent: str, seconds: float) -> dict[str, Any]:
        files = [f["name"] for f in manifest["files"]]
        with self.engine.connect() as conn:
            rows, distinct = conn.exec_driver_sql(
                "SELECT COUNT(*), COUNT(DISTINCT abn) FROM abn_entity WHERE source_file = ANY(%(f)s)", {"f": files}
            ).one()
            rejects = conn.exec_driver_sql(
                "SELECT COUNT(*) FROM abn_reject WHERE source_file = ANY(%(f)s)", {"f": files}
            ).scalar_one()
        ledger = self.ledger()
        complete = [r for r in ledger if r["status"] == "complete"]
        committed = sum(int((r["result"] or {}).get("records", 0)) for r in complete)
        inserted = sum(int((r["result"] or {}).get("inserted", 0)) for r in complete)
        attempted = sum(int(v) for v in self.redis.hgetall(attempted_key(self.destination)).values())
        dead = self.redis.llen(f"{self.stream}:dead")
        runs = self.runs(parent)
        recoveries = [p.recovery_s for p in self.preemptions if p.recovery_s is not None]
        notice_recoveries = [p.recovery_s for p in self.preemptions if p.mode == "notice" and p.recovery_s is not None]
        result = {
            "records_source": manifest["records"],
            "records_valid": manifest["valid"],
            "records_db": rows,
            # A record written twice would be a second row (impossible: abn is the key) or a second
            # insert counted by the ledger, or a file's records counted twice.
            "duplicates": (rows - distinct) + max(inserted - rows, 0) + max(committed - manifest["records"], 0),
            "rejects": rejects,
            "rejects_expected": manifest["bad"],
            "jobs_lost": len(files) - len(complete) + dead,
            "runs_not_completed": sum(r["state_type"] != "COMPLETED" for r in runs),
            "dead_letters": dead,
            "preemptions_notice": sum(p.mode == "notice" for p in self.preemptions),
            "preemptions_hard": sum(p.mode == "hard" for p in self.preemptions),
            "freezes": sum(p.mode == "freeze" for p in self.preemptions),
            "postgres_restarts": self.service_faults.count("postgres_restart"),
            "redis_restarts": self.service_faults.count("redis_restart"),
            "max_recovery_s": round(max(recoveries), 1) if recoveries else None,
            "max_recovery_after_notice_s": round(max(notice_recoveries), 1) if notice_recoveries else None,
            "records_redone": attempted - committed,
            "checkpoint_every": self.c.checkpoint_every,
            "runs": len(runs),
            "seconds": round(seconds, 1),
            "seed": self.c.seed,
        }
        planned = len(self.faults)
        result["faults_planned"] = planned
        # Two verdicts, apart: the work (nothing lost, done twice or dead-lettered) and the plan
        # (every fault made; the work may end before a slow fault comes round).
        result["work_ok"] = (
            result["records_db"] == result["records_valid"]
            and result["duplicates"] == 0
            and result["rejects"] == result["rejects_expected"]
            and result["jobs_lost"] == 0
            and result["dead_letters"] == 0
            and result["runs_not_completed"] == 0
        )
        result["faults_missing"] = max(planned - self.faults_made(), 0)
        result["passed"] = result["work_ok"] and result["faults_missing"] == 0
        if not result["work_ok"]:
            log("FAILED: work was lost, done twice, dead-lettered or left unfinished")
        elif result["faults_missing"]:
            log(f"nothing was lost, but {result['faults_missing']} of {planned} planned faults could not be made")
        return result


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def copyfile(self, source: Any, outputfile: Any) -> None:
        # A node killed mid-download closes the connection: expected in a drill.
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            super().copyfile(source, outputfile)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.drill", description=__doc__.splitlines()[0])
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--database-url", required=True, help="the drill database (its tables are recreated)")
    parser.add_argument("--redis-url", required=True, help="the queue's Redis (bulk:* keys are cleared)")
    parser.add_argument(
        "--records", type=int, default=None, help=f"records of the extract (default: {RECORDS_PER_FAULT} per fault)"
    )
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--bad-every", type=int, default=997)
    parser.add_argument("--preemptions", type=int, default=20)
    parser.add_argument("--notice-ratio", type=float, default=0.5, help="share of preemptions with a notice")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: a new one, printed)")
    parser.add_argument("--checkpoint-every", type=int, default=2_000)
    parser.add_argument("--helpers", type=int, default=5, help="extra bulk_worker runs splitting the files")
    parser.add_argument("--min-each", type=int, default=0, help="at least this many notices and as many hard kills")
    parser.add_argument("--freezes", type=int, default=Config.freezes, help="nodes paused past the visibility timeout")
    parser.add_argument("--postgres-restarts", type=int, default=Config.postgres_restarts)
    parser.add_argument("--redis-restarts", type=int, default=Config.redis_restarts, help="SIGKILL, then start")
    parser.add_argument("--freeze-seconds", type=float, default=Config.freeze_seconds)
    parser.add_argument("--control", default=Config.control, help="the control plane container")
    parser.add_argument("--notice-seconds", type=float, default=10.0)
    parser.add_argument("--nodes", type=int, default=4, help="spot nodes to keep during the drill")
    parser.add_argument("--timeout", type=float, default=3_600.0)
    parser.add_argument("--result", type=Path, default=Config.result)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1_000_000)
    config = Config(
        api_url=args.api_url, database_url=args.database_url, redis_url=args.redis_url, records=args.records,
        files=args.files, bad_every=args.bad_every, preemptions=args.preemptions, notice_ratio=args.notice_ratio,
        seed=seed, checkpoint_every=args.checkpoint_every, helpers=args.helpers, notice_seconds=args.notice_seconds,
        min_each=args.min_each, freezes=args.freezes, postgres_restarts=args.postgres_restarts,
        redis_restarts=args.redis_restarts, freeze_seconds=args.freeze_seconds, control=args.control,
        nodes=args.nodes, timeout_s=args.timeout, result=args.result,
    )  # fmt: skip
    result = Drill(config).run()
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(json.dumps(result))
    print(json.dumps(result), flush=True)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
