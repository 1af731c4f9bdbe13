"""Cluster control: the local spot node containers and the control plane, through the docker CLI.

What a cloud provider and an autoscaling group do to spot capacity, done to the embedded local
default: list the nodes, take one away with a notice (its metadata emulator announces the
preemption, then it shuts down), kill one without warning, freeze one (`docker pause`), restart
the control plane's PostgreSQL or kill its Redis, and replace missing nodes by running the
capacity role again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import threading
import time
from dataclasses import dataclass

import httpx

from tools.drill.config import NODE_LABEL, ROOT, Config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Node:
    name: str  # the container's name, which is also its worker's name
    slot: int  # its place in the capacity (1..N): its metadata emulator's port is base + slot


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False)


class Cluster:
    def __init__(self, config: Config):
        self.c = config

    def nodes(self) -> list[Node]:
        out = subprocess.run(
            ["docker", "ps", "--filter", f"label={NODE_LABEL}", "--format", "{{json .}}"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        nodes = []
        for line in out.splitlines():
            info = json.loads(line)
            labels = dict(kv.split("=", 1) for kv in info["Labels"].split(",") if "=" in kv)
            nodes.append(Node(name=info["Names"], slot=int(labels.get("agency-os.slot", "0"))))
        return nodes

    # -- faults on a node --------------------------------------------------------------------------

    def kill(self, node: Node) -> None:
        """Hard: SIGKILL, no warning."""
        _docker("kill", "-s", "KILL", node.name)
        _docker("rm", "-f", node.name)

    def freeze(self, node: Node) -> None:
        """A frozen VM (no FIN, no RST) for `freeze_seconds`, then thawed."""
        _docker("pause", node.name)
        time.sleep(self.c.freeze_seconds)
        _docker("unpause", node.name)

    def notice(self, node: Node) -> None:
        """The node's metadata emulator announces a preemption (its watcher drains the worker);
        after `notice_seconds` the node shuts down."""
        port = self.c.metadata_port_base + node.slot
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(
                f"http://127.0.0.1:{port}/_control/notice",
                json={"action": "terminate", "in_s": self.c.notice_seconds},
            )
        time.sleep(self.c.notice_seconds)
        # The node's stop signal is SIGRTMIN+3: systemd stops every unit (the worker drains).
        _docker("stop", "-t", str(int(self.c.shutdown_grace)), node.name)
        _docker("rm", "-f", node.name)

    # -- faults on the control plane ---------------------------------------------------------------

    def restart_postgres(self) -> bool:
        return self._control("systemctl", "restart", "postgresql.service")

    def restart_redis(self) -> bool:
        """Redis killed (SIGKILL: what it had not written is lost) and started again."""
        self._control("systemctl", "kill", "--signal=SIGKILL", "redis-server.service", quiet=True)
        return self._control("systemctl", "restart", "redis-server.service")

    def _control(self, *command: str, quiet: bool = False) -> bool:
        proc = _docker("exec", self.c.control, *command)
        if proc.returncode and not quiet:
            log.info(f"{' '.join(command)} in {self.c.control} failed: {proc.stderr.strip()}")
        return proc.returncode == 0

    # -- capacity ----------------------------------------------------------------------------------

    def keep_capacity(self, stop: threading.Event) -> None:
        """Replace missing nodes, like an autoscaling group (re-running the capacity role)."""
        while not stop.wait(2):
            if len(self.nodes()) >= self.c.nodes:
                continue
            log.info("capacity: replacing missing nodes")
            started = time.monotonic()
            proc = subprocess.run(
                ["ansible-playbook", "-i", self.c.inventory, "playbooks/provision_spot.yml", "--tags", "capacity,nodes",
                 "-e", f"local_spot_capacity_nodes={self.c.nodes}", "-e", "node_hosts=spot_nodes_new"],
                cwd=ROOT, capture_output=True, text=True, check=False,
                env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")),
            )  # fmt: skip
            log.info(f"capacity: replacement finished rc={proc.returncode} in {time.monotonic() - started:.0f} s")
