"""Flow-run history over past days on a real Prefect server, for the report tests.

The REST API cannot backdate anything: a state's timestamp is the server's clock (`StateCreate`
has no `timestamp`; sending one is HTTP 422 "extra_forbidden") and `force=true` only skips the
orchestration rules. So each seeded run goes through its transitions with the REST API, where the
server's own rules set run_count, start and end time and state names, and then its timestamps are
moved to the seeded ones in the server's SQLite database (found through GET /api/admin/settings:
`home`). The tests read everything back through REST only, and check that the durations come out
as seeded.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import ROOT
from tests.support.prefect_rest import prefect_http

BIN = Path(sys.executable).parent
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
_DB_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


@dataclass(frozen=True)
class Step:
    """One state of a run: its type, name and message, `at` a time after the run was due."""

    type: str
    at: dt.timedelta
    name: str | None = None
    message: str | None = None


def steps(*items: tuple) -> list[Step]:
    """steps(("RUNNING", minutes(2)), ("SCHEDULED", hours(1), "AwaitingRetry"), ("COMPLETED", hours(3)))"""
    return [Step(*item) for item in items]


def hours(n: float) -> dt.timedelta:
    return dt.timedelta(hours=n)


def minutes(n: float) -> dt.timedelta:
    return dt.timedelta(minutes=n)


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _db(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).replace(tzinfo=None).strftime(_DB_FORMAT)


class History:
    """Pools, flows, deployments and backdated flow runs on a Prefect server."""

    def __init__(self, api: str):
        self.http = prefect_http(api)
        home = self.http.get("/admin/settings").raise_for_status().json()["home"]
        self.db = Path(home) / "prefect.db"
        if not self.db.exists():
            raise RuntimeError(f"the Prefect server's SQLite database is not at {self.db}")

    def pool(self, name: str) -> None:
        resp = self.http.post("/work_pools/", json={"name": name, "type": "process"})
        if resp.status_code != 409:
            resp.raise_for_status()

    def flow(self, name: str) -> str:
        return self.http.post("/flows/", json={"name": name}).raise_for_status().json()["id"]

    def deployment(self, flow: str, name: str, pool: str, queue: str = "default") -> str:
        body = {"name": name, "flow_id": self.flow(flow), "work_pool_name": pool, "work_queue_name": queue}
        return self.http.post("/deployments/", json=body).raise_for_status().json()["id"]

    def move(self, deployment_id: str, pool: str, queue: str = "default") -> None:
        body = {"work_pool_name": pool, "work_queue_name": queue}
        self.http.patch(f"/deployments/{deployment_id}", json=body).raise_for_status()

    def delete_run(self, run_id: str) -> None:
        self.http.delete(f"/flow_runs/{run_id}").raise_for_status()

    def run(self, deployment_id: str, due: dt.datetime, path: list[Step], name: str | None = None) -> str:
        """A flow run of the deployment, due at `due`, that went through `path` (times after `due`)."""
        state = {"type": "SCHEDULED", "state_details": {"scheduled_time": _iso(due)}}
        body: dict[str, Any] = {"state": state, **({"name": name} if name else {})}
        run = self.http.post(f"/deployments/{deployment_id}/create_flow_run", json=body).raise_for_status().json()
        for step in path:
            proposed: dict[str, Any] = {"type": step.type}
            if step.name:
                proposed["name"] = step.name
            if step.message:
                proposed["message"] = step.message
            if step.type == "SCHEDULED":
                proposed["state_details"] = {"scheduled_time": _iso(due + step.at)}
            resp = self.http.post(f"/flow_runs/{run['id']}/set_state", json={"state": proposed, "force": True})
            if resp.raise_for_status().json()["status"] != "ACCEPT":
                raise AssertionError(f"{step} refused: {resp.text}")
        self._backdate(run["id"], due, path)
        return run["id"]

    def _backdate(self, run_id: str, due: dt.datetime, path: list[Step]) -> None:
        times = [due] + [due + step.at for step in path]
        db = sqlite3.connect(self.db, timeout=30)
        with contextlib.closing(db), db:
            rows = db.execute(
                "SELECT id, type FROM flow_run_state WHERE flow_run_id = ? ORDER BY timestamp", (run_id,)
            ).fetchall()
            if [kind for _, kind in rows] != ["SCHEDULED"] + [step.type for step in path]:
                raise AssertionError(f"run {run_id}: states {rows} are not the seeded {path}")
            for (state_id, _), when in zip(rows, times, strict=True):
                db.execute("UPDATE flow_run_state SET timestamp = ? WHERE id = ?", (_db(when), state_id))
            kinds = ["SCHEDULED"] + [step.type for step in path]
            running = [i for i, kind in enumerate(kinds) if kind == "RUNNING"]
            run_seconds = sum((times[i + 1] - times[i]).total_seconds() for i in running if i + 1 < len(times))
            start = times[running[0]] if running else None
            end = times[-1] if kinds[-1] in FINAL else None
            db.execute(
                "UPDATE flow_run SET expected_start_time = ?, start_time = ?, end_time = ?, state_timestamp = ?, "
                "total_run_time = ? WHERE id = ?",
                (
                    _db(due),
                    _db(start) if start else None,
                    _db(end) if end else None,
                    _db(times[-1]),
                    _db(dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=run_seconds)),
                    run_id,
                ),
            )


def ansible_playbook(playbook: str, api: str, *args: str, **extra: Any) -> subprocess.CompletedProcess:
    """`ansible-playbook playbooks/<playbook>` on the local inventory against the Prefect API `api`."""
    root = ROOT
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(root / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
    }
    env.pop("PREFECT_API_KEY", None)
    cmd = [str(BIN / "ansible-playbook"), "-i", str(root / "inventories/local"), str(root / "playbooks" / playbook)]
    cmd += [*args, "-e", json.dumps({"prefect_api_url": api, **extra})]
    return subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=180, cwd=root)
