"""The faults: which ones (the plan), when (paced over the work), and making them.

Fault k of N (counting from 0) is made once (k+1)/N of the first FAULT_SPAN of the records are
committed: spread over the work whatever its speed. A node fault takes a working node (an online
worker holding a job, to prove the job survives) and only while another node can carry on (a spot
pool rarely loses all at once). A notice or a freeze takes tens of seconds: it goes on in the
background, so the next fault comes at its own point of the work, and its node is not a candidate
for another fault meanwhile.
"""

from __future__ import annotations

import logging
import random
import threading
import time

from tools.drill.cluster import Cluster, Node
from tools.drill.config import FAULT_SPAN, Config
from tools.drill.observer import Observer, Preemption, Rows

log = logging.getLogger(__name__)

NOTICE, HARD, FREEZE = "notice", "hard", "freeze"  # on a node
POSTGRES_RESTART, REDIS_RESTART = "postgres_restart", "redis_restart"  # on the control plane


def plan(config: Config, rng: random.Random) -> list[str]:
    """Every fault of the drill, in a random order: notice/hard preemptions (at least `min_each` of
    both, the rest by the notice ratio), freezes and service restarts."""
    fixed = [NOTICE, HARD] * config.min_each
    rest = [
        NOTICE if rng.random() < config.notice_ratio else HARD for _ in range(max(config.preemptions - len(fixed), 0))
    ]
    faults = (
        fixed
        + rest
        + [FREEZE] * config.freezes
        + [POSTGRES_RESTART] * config.postgres_restarts
        + [REDIS_RESTART] * config.redis_restarts
    )
    rng.shuffle(faults)
    return faults


def due(k: int, planned: int, records: int) -> float:
    """The records committed before fault k (from 0) of `planned` is made."""
    return records * FAULT_SPAN * (k + 1) / planned


class Faults:
    def __init__(self, config: Config, cluster: Cluster, observer: Observer, rng: random.Random):
        self.c = config
        self.cluster = cluster
        self.observer = observer
        self.rng = rng
        self.plan = plan(config, rng)
        self.preemptions: list[Preemption] = []
        self.service_faults: list[str] = []  # postgres_restart / redis_restart, as made
        self.service_times: list[tuple[float, str]] = []  # (when, which) of each
        self.busy: set[str] = set()  # nodes in the middle of a notice or a freeze
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()

    def made(self) -> int:
        return len(self.preemptions) + len(self.service_faults)

    def note_recoveries(self, rows: Rows, now: float) -> None:
        with self.lock:
            for event in self.preemptions:
                event.note(rows, now)

    def make(self, manifest: dict) -> None:
        """Make the plan's faults, each at its point of the work, until the plan or the work ends;
        then wait for the faults still going on."""
        total = manifest["records"]
        while self.made() < len(self.plan) and not self.observer.all_done(manifest):
            k = self.made()
            if self.observer.committed() < due(k, len(self.plan), total):
                time.sleep(0.5)
                continue
            fault = self.plan[k]
            if fault in (POSTGRES_RESTART, REDIS_RESTART):
                log.info(f"fault {k + 1}: {fault}")
                restart = self.cluster.restart_postgres if fault == POSTGRES_RESTART else self.cluster.restart_redis
                at = time.monotonic()
                if restart():
                    self.service_faults.append(fault)
                    self.service_times.append((at, fault))
                continue
            nodes = self.cluster.nodes()
            online = self.observer.online_workers()
            with self.lock:
                busy = set(self.busy)
            working = [n for n in nodes if n.name in online and n.name not in busy and self.observer.held_by(n.name)]
            if len(nodes) - len(busy) < 2 or not working or self.observer.all_done(manifest):
                time.sleep(1)
                continue
            self.preempt(self.rng.choice(working), fault)
        for thread in self.threads:
            thread.join()

    def preempt(self, node: Node, mode: str) -> None:
        event = Preemption(node=node.name, mode=mode, at=time.monotonic(), held=self.observer.held_by(node.name))
        with self.lock:
            self.preemptions.append(event)
        log.info(
            f"preemption {len(self.preemptions)}: {mode} on {node.name} (holding {sorted(event.held) or 'no job'})"
        )
        if mode == HARD:
            self.cluster.kill(node)
            return
        with self.lock:
            self.busy.add(node.name)
        thread = threading.Thread(target=self._slow_fault, args=(node, mode), daemon=True)
        self.threads.append(thread)
        thread.start()

    def _slow_fault(self, node: Node, mode: str) -> None:
        try:
            if mode == FREEZE:
                self.cluster.freeze(node)
            else:
                self.cluster.notice(node)
        finally:
            with self.lock:
                self.busy.discard(node.name)
