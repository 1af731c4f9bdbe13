"""Migration monitoring from the Prefect REST API (phase 3 of the migration plan, docs/migration-plan.md: "monitor for one week").

For each flow of the catalog: the work pools of its deployments, its flow runs of the last days
by final state, how many were rescheduled after a preemption, how many crashed, the p95 duration
against its tolerance window (bulk; realtime flows have an SLA, reported but not gated) and
whether the window held. Then the gate before Railway's bulk compute is decommissioned.

Definitions (what the numbers mean):

* A catalog entry's Prefect flows: the flow of that name. For a family `prefix/*`, the flow named
  `prefix`, whose deployments `prefix/<x>` are the family's members (Prefect refuses "/" in flow
  names, so `webhook_handlers/stripe` is deployment `stripe` of flow `webhook_handlers`), and any
  flow named `prefix/<x>` should a server accept one.
* Runs of the window: expected start within the last `days` days (not in the future), plus runs
  that were due earlier and have not finished (they count as overdue once past the tolerance).
* Duration: from a run's expected start (its scheduled time) to its end, so queueing for capacity
  and the gaps of preemptions count, as a tolerance window means them. Completed runs only.
* p95: nearest-rank 95th percentile of those durations.
* Rescheduled by preemption: runs whose state history has a Scheduled state (AwaitingRetry) right
  after Running without a message (the flow-run supervisor's SIGTERM reschedule) or right after
  Crashed (the crash-reschedule automation). A Scheduled state after Running that carries a
  message is Prefect's retry of a failed run: counted as a failure retry instead.
* Crashed: runs that entered Crashed at any point, also those rescheduled afterwards.
* Window held (bulk): p95 <= tolerance_hours and no unfinished run older than tolerance_hours.

    python -m agency_os_spot.reporting.migration --api-url http://127.0.0.1:4200/api [--days 7] [--json]
    python -m agency_os_spot.reporting.migration --api-url URL --gate 7      # the decommission gate
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from agency_os_spot.catalog import Catalog, FlowSpec, load_catalog
from agency_os_spot.runtime.prefect_rest import prefect_http

FINAL_TYPES = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
UNFINISHED_TYPES = ("SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING")
PAGE = 200  # the server's default maximum page size


class PrefectAPIError(RuntimeError):
    """The Prefect API could not be reached or refused a request; the message says what to do."""


def _ts(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if value else None


def _show(value: dt.datetime | None) -> str:
    """A time for people: 2026-11-28 03:00 UTC."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "-"


def format_duration(seconds: float | None) -> str:
    """12s, 5m 03s, 14h 00m, 2d 03h."""
    if seconds is None:
        return "-"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600:02d}h"


def p95(values: list[float]) -> float | None:
    """Nearest-rank 95th percentile (the smallest value >= 95% of the values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


# --- the REST client -----------------------------------------------------------------------------


class PrefectAPI:
    """The few read-only calls of the Prefect 3 REST API this report needs."""

    def __init__(self, api_url: str, api_key: str | None = None, timeout: float = 30, verify: bool = True):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.api_url = api_url.rstrip("/")
        self.http = prefect_http(self.api_url, headers=headers, timeout=timeout, verify=verify)

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise PrefectAPIError(
                f"cannot reach the Prefect API at {self.api_url} ({exc}): is the server up? Set prefect_api_url "
                "(inventories/<env>/group_vars/all/prefect.yml or -e prefect_api_url=...)"
            ) from exc
        if resp.status_code in (401, 403):
            raise PrefectAPIError(
                f"the Prefect API at {self.api_url} refused {method} {path} (HTTP {resp.status_code}): "
                "set prefect_api_key (or PREFECT_API_KEY) to a key that may read flows and runs"
            )
        if resp.status_code >= 400:
            raise PrefectAPIError(
                f"{method} {self.api_url}{path} answered HTTP {resp.status_code}: {resp.text[:300]} "
                "(is prefect_api_url the API root, ending in /api?)"
            )
        return resp.json()

    def _paged(self, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            page = self._call("POST", path, json={**body, "limit": PAGE, "offset": len(items)})
            items.extend(page)
            if len(page) < PAGE:
                return items

    def health(self) -> None:
        self._call("GET", "/health")

    def flows(self) -> list[dict[str, Any]]:
        return self._paged("/flows/filter", {"sort": "NAME_ASC"})

    def deployments(self, flow_ids: list[str]) -> list[dict[str, Any]]:
        if not flow_ids:
            return []
        return self._paged("/deployments/filter", {"flows": {"id": {"any_": flow_ids}}, "sort": "NAME_ASC"})

    def flow_runs(self, flow_ids: list[str], flow_runs: dict[str, Any], **extra: Any) -> list[dict[str, Any]]:
        if not flow_ids:
            return []
        body = {"flows": {"id": {"any_": flow_ids}}, "flow_runs": flow_runs, "sort": "EXPECTED_START_TIME_ASC"}
        return self._paged("/flow_runs/filter", {**body, **extra})

    def first_run(self, flow_ids: list[str], flow_runs: dict[str, Any], sort: str, **extra: Any) -> dict | None:
        body = {"flows": {"id": {"any_": flow_ids}}, "flow_runs": flow_runs, "sort": sort, "limit": 1, **extra}
        found = self._call("POST", "/flow_runs/filter", json=body)
        return found[0] if found else None

    def count_runs(self, flow_ids: list[str], flow_runs: dict[str, Any], **extra: Any) -> int:
        body = {"flows": {"id": {"any_": flow_ids}}, "flow_runs": flow_runs, **extra}
        return int(self._call("POST", "/flow_runs/count", json=body))

    def states(self, run_id: str) -> list[dict[str, Any]]:
        return self._call("GET", "/flow_run_states/", params={"flow_run_id": run_id})


# --- facts and analysis --------------------------------------------------------------------------


@dataclass
class RunFacts:
    id: str
    name: str
    flow: str
    deployment: str | None
    pool: str | None
    state_type: str
    state_name: str
    expected_start: dt.datetime | None
    start: dt.datetime | None
    end: dt.datetime | None
    run_count: int
    reschedules: int = 0
    failure_retries: int = 0
    crashed: bool = False

    @property
    def due(self) -> dt.datetime | None:
        return self.expected_start or self.start

    @property
    def duration(self) -> float | None:
        """Seconds from the scheduled start to the end, for completed runs."""
        if self.state_type != "COMPLETED" or not self.end or not self.due:
            return None
        return (self.end - self.due).total_seconds()

    @property
    def needs_history(self) -> bool:
        """Only runs that ran more than once, crashed, or wait again after starting can have been
        rescheduled: the others need no state history (one request per run saved)."""
        return (
            self.run_count > 1
            or self.state_type == "CRASHED"
            or (self.state_type in ("SCHEDULED", "PENDING") and self.start is not None)
        )

    def read_history(self, states: list[dict[str, Any]]) -> None:
        previous = None
        for state in sorted(states, key=lambda s: s["timestamp"]):
            kind = state["type"]
            if kind == "SCHEDULED" and previous is not None:
                if previous == "CRASHED" or (previous == "RUNNING" and not state.get("message")):
                    self.reschedules += 1
                elif previous == "RUNNING":
                    self.failure_retries += 1
            if kind == "CRASHED":
                self.crashed = True
            previous = kind


@dataclass
class Deployment:
    name: str  # flow/deployment, as Prefect shows it
    pool: str | None
    queue: str | None
    paused: bool


@dataclass
class FlowStatus:
    name: str
    tier: str
    sla: str | None
    tolerance_hours: float | None
    target_pool: str
    prefect_flows: list[str] = field(default_factory=list)
    deployments: list[Deployment] = field(default_factory=list)
    runs: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    rescheduled: int = 0
    failure_retries: int = 0
    crashed: int = 0
    completed_durations: list[float] = field(default_factory=list)
    overdue: list[str] = field(default_factory=list)
    window_held: bool | None = None
    missed: list[str] = field(default_factory=list)
    flow_ids: list[str] = field(default_factory=list)

    @property
    def pools(self) -> list[str]:
        return sorted({d.pool or "(none)" for d in self.deployments})

    @property
    def p95_seconds(self) -> float | None:
        return p95(self.completed_durations)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tier": self.tier,
            "sla": self.sla,
            "tolerance_hours": self.tolerance_hours,
            "target_pool": self.target_pool,
            "pools": self.pools,
            "prefect_flows": self.prefect_flows,
            "deployments": [asdict(d) for d in self.deployments],
            "runs": self.runs,
            "by_state": self.by_state,
            "rescheduled": self.rescheduled,
            "failure_retries": self.failure_retries,
            "crashed": self.crashed,
            "completed": len(self.completed_durations),
            "p95_seconds": self.p95_seconds,
            "max_seconds": max(self.completed_durations) if self.completed_durations else None,
            "overdue_runs": self.overdue,
            "window_held": self.window_held,
            "missed": self.missed,
        }


@dataclass
class StatusReport:
    api_url: str
    generated_at: dt.datetime
    days: float
    since: dt.datetime
    flows: list[FlowStatus]
    unknown_flows: list[str]

    @property
    def missed_windows(self) -> list[FlowStatus]:
        return [f for f in self.flows if f.tier == "bulk" and f.window_held is False]

    def as_dict(self) -> dict[str, Any]:
        return {
            "api_url": self.api_url,
            "generated_at": _iso(self.generated_at),
            "days": self.days,
            "since": _iso(self.since),
            "flows": [f.as_dict() for f in self.flows],
            "missed_windows": [
                {"name": f.name, "reasons": f.missed, "summary": f"{f.name}: {'; '.join(f.missed)}"}
                for f in self.missed_windows
            ],
            "unknown_flows": self.unknown_flows,
        }


def catalog_entry(catalog: Catalog, flow_name: str) -> FlowSpec | None:
    """The catalog entry a Prefect flow belongs to (see the module docstring), or None."""
    for spec in catalog.flows:
        if not spec.is_pattern and spec.name == flow_name:
            return spec
    for spec in catalog.flows:
        if spec.is_pattern and (flow_name == spec.name[:-2] or spec.matches(flow_name)):
            return spec
    return None


def _run_facts(run: dict[str, Any], flow_names: dict[str, str], deployments: dict[str, Deployment]) -> RunFacts:
    deployment = deployments.get(run.get("deployment_id") or "")
    return RunFacts(
        id=run["id"],
        name=run["name"],
        flow=flow_names.get(run["flow_id"], run["flow_id"]),
        deployment=deployment.name if deployment else None,
        pool=run.get("work_pool_name"),
        state_type=run.get("state_type") or "UNKNOWN",
        state_name=run.get("state_name") or "",
        expected_start=_ts(run.get("expected_start_time")),
        start=_ts(run.get("start_time")),
        end=_ts(run.get("end_time")),
        run_count=int(run.get("run_count") or 0),
    )


def collect_status(api: PrefectAPI, catalog: Catalog, days: float = 7, now: dt.datetime | None = None) -> StatusReport:
    """Read flows, deployments and runs of the last `days` days and summarise them per catalog flow."""
    now = now or dt.datetime.now(dt.UTC)
    since = now - dt.timedelta(days=days)
    statuses = {
        spec.name: FlowStatus(
            name=spec.name,
            tier=spec.tier,
            sla=spec.sla,
            tolerance_hours=spec.tolerance_hours,
            target_pool=spec.work_pool,
        )
        for spec in catalog.flows
    }
    flow_names: dict[str, str] = {}
    entry_of_flow: dict[str, str] = {}
    unknown: list[str] = []
    for flow in api.flows():
        spec = catalog_entry(catalog, flow["name"])
        if spec is None:
            unknown.append(flow["name"])
            continue
        flow_names[flow["id"]] = flow["name"]
        entry_of_flow[flow["id"]] = spec.name
        statuses[spec.name].prefect_flows.append(flow["name"])
        statuses[spec.name].flow_ids.append(flow["id"])

    deployments: dict[str, Deployment] = {}
    for item in api.deployments(list(flow_names)):
        deployment = Deployment(
            name=f"{flow_names[item['flow_id']]}/{item['name']}",
            pool=item.get("work_pool_name"),
            queue=item.get("work_queue_name"),
            paused=bool(item.get("paused")),
        )
        deployments[item["id"]] = deployment
        statuses[entry_of_flow[item["flow_id"]]].deployments.append(deployment)

    ids = list(flow_names)
    window = {"expected_start_time": {"after_": _iso(since), "before_": _iso(now)}}
    overdue = {"expected_start_time": {"before_": _iso(since)}, "state": {"type": {"any_": list(UNFINISHED_TYPES)}}}
    raw = {r["id"]: r for r in api.flow_runs(ids, window)}
    raw.update({r["id"]: r for r in api.flow_runs(ids, overdue)})

    for run in raw.values():
        facts = _run_facts(run, flow_names, deployments)
        if facts.needs_history:
            facts.read_history(api.states(facts.id))
        status = statuses[entry_of_flow[run["flow_id"]]]
        status.runs += 1
        bucket = facts.state_type.lower() if facts.state_type in FINAL_TYPES else "unfinished"
        status.by_state[bucket] = status.by_state.get(bucket, 0) + 1
        status.rescheduled += 1 if facts.reschedules else 0
        status.failure_retries += 1 if facts.failure_retries else 0
        status.crashed += 1 if facts.crashed else 0
        if facts.duration is not None:
            status.completed_durations.append(facts.duration)
        if (
            facts.state_type not in FINAL_TYPES
            and status.tolerance_hours is not None
            and facts.due is not None
            and (now - facts.due).total_seconds() > status.tolerance_hours * 3600
        ):
            status.overdue.append(f"{facts.name} ({facts.state_name}, due {_show(facts.due)})")

    for status in statuses.values():
        _judge(status)
    return StatusReport(
        api_url=api.api_url,
        generated_at=now,
        days=days,
        since=since,
        flows=list(statuses.values()),
        unknown_flows=sorted(unknown),
    )


def _judge(status: FlowStatus) -> None:
    """Whether a bulk flow held its tolerance window (None: nothing to judge, or realtime)."""
    if status.tier != "bulk" or status.tolerance_hours is None:
        return
    window = status.tolerance_hours * 3600
    worst = status.p95_seconds
    if worst is not None and worst > window:
        status.missed.append(
            f"p95 duration {format_duration(worst)} > {status.tolerance_hours:g}h window "
            f"({len(status.completed_durations)} completed runs)"
        )
    if status.overdue:
        status.missed.append(
            f"{len(status.overdue)} run(s) unfinished past the {status.tolerance_hours:g}h window: "
            + "; ".join(status.overdue)
        )
    if status.missed:
        status.window_held = False
    elif status.completed_durations:
        status.window_held = True


# --- presentation ---------------------------------------------------------------------------------


def _states_cell(status: FlowStatus) -> str:
    order = ["completed", "failed", "crashed", "cancelled", "unfinished"]
    parts = [f"{status.by_state[k]} {k}" for k in order if status.by_state.get(k)]
    return ", ".join(parts) or "-"


def _held_cell(status: FlowStatus) -> str:
    if status.tier != "bulk":
        return "not gated"
    if status.window_held is None:
        return "no runs" if not status.runs else "no completed run"
    return "yes" if status.window_held else "NO: " + "; ".join(status.missed)


def render_table(report: StatusReport) -> list[str]:
    lines = [
        "| Flow | Tier | Pool (deployments) | Runs | Final states | Rescheduled | Crashed | p95 | Window | Held |",
        "|---|---|---|---:|---|---:|---:|---:|---|---|",
    ]
    for s in report.flows:
        pools = ", ".join(s.pools) if s.deployments else "- (no deployment)"
        window = f"{s.tolerance_hours:g}h" if s.tolerance_hours is not None else f"SLA {s.sla}"
        lines.append(
            f"| `{s.name}` | {s.tier} | {pools} | {s.runs} | {_states_cell(s)} | {s.rescheduled} | {s.crashed} | "
            f"{format_duration(s.p95_seconds)} | {window} | {_held_cell(s)} |"
        )
    return lines


def render_markdown(report: StatusReport) -> str:
    out = [
        "# Agency OS: spot migration status",
        "",
        f"Prefect API {report.api_url}; flow runs expected to start since {_show(report.since)} "
        f"(last {report.days:g} days), as of {_show(report.generated_at)}.",
        "",
        *render_table(report),
        "",
        "- Pool: work pools of the flow's deployments now. Final states: unfinished = scheduled, pending, running.",
        "- Rescheduled: runs put back to Scheduled (AwaitingRetry) after Running or Crashed: preemptions. "
        "Crashed: runs that crashed at any point.",
        "- p95: of completed runs, from the scheduled start to the end (queueing and preemption gaps included).",
        "- Held: bulk flows only: p95 within the tolerance window and no run unfinished past it. "
        "Realtime flows have an SLA, reported, not gated.",
    ]
    if report.unknown_flows:
        out += ["", f"Prefect flows not in the catalog (not reported): {', '.join(report.unknown_flows)}."]
    missed = report.missed_windows
    out += ["", f"Bulk flows that missed their window: {', '.join(f.name for f in missed) if missed else 'none'}."]
    return "\n".join(out) + "\n"


# --- the decommission gate -------------------------------------------------------------------------


def decommission_gate(api: PrefectAPI, catalog: Catalog, report: StatusReport, days: float) -> dict[str, Any]:
    """Whether Railway's bulk compute can go: every deployed bulk flow of the catalog is cut over
    (its deployments are in the bulk pool), has completed runs in that pool spanning `days` days,
    missed no window over the last `days` days and has no runs waiting in another pool."""
    spot_pool = catalog.spot_pool
    completed = {"state": {"type": {"any_": ["COMPLETED"]}}}
    in_spot_pool = {"work_pools": {"name": {"any_": [spot_pool]}}}
    blockers: list[str] = []
    evidence: list[dict[str, Any]] = []
    bulk = [s for s in report.flows if s.tier == "bulk"]
    deployed = [s for s in bulk if s.deployments]
    not_deployed = [s.name for s in bulk if not s.deployments]
    if not deployed:
        blockers.append(
            "no bulk flow of the catalog has a deployment on this Prefect server: nothing has been cut over yet "
            f"(deploy the bulk flows to the work pool '{spot_pool}' first)"
        )
    for s in deployed:
        elsewhere = [d for d in s.deployments if d.pool != spot_pool]
        if elsewhere:
            names = ", ".join(f"{d.name} (pool '{d.pool or 'none'}')" for d in elsewhere)
            blockers.append(
                f"{s.name}: not cut over: deployment(s) {names} not in the bulk pool '{spot_pool}'; move them "
                "(change the deployment definition and redeploy, so a later deploy does not move them back)"
            )
        first = api.first_run(s.flow_ids, completed, "START_TIME_ASC", **in_spot_pool)
        last = api.first_run(s.flow_ids, completed, "END_TIME_DESC", **in_spot_pool)
        count = api.count_runs(s.flow_ids, completed, **in_spot_pool)
        item: dict[str, Any] = {"flow": s.name, "completed_in_spot_pool": count, "first": None, "last": None}
        if not first or not last:
            blockers.append(
                f"{s.name}: no completed run in '{spot_pool}' yet; it needs completed runs there spanning {days:g} days"
            )
        else:
            start = _ts(first.get("start_time")) or _ts(first.get("expected_start_time"))
            end = _ts(last.get("end_time"))
            span = (end - start).total_seconds() / 86400 if start and end else 0.0
            item.update(first=_iso(start), last=_iso(end), span_days=round(span, 2))
            if span < days:
                blockers.append(
                    f"{s.name}: only {span:.1f} days of on-spot success: its {count} completed run(s) in "
                    f"'{spot_pool}' span {_show(start)} to {_show(end)}; it needs {days:g} days"
                )
        evidence.append(item)
        if s.window_held is False:
            blockers.append(f"{s.name}: missed its window in the last {days:g} days: {'; '.join(s.missed)}")
        waiting = api.flow_runs(s.flow_ids, {"state": {"type": {"any_": ["SCHEDULED", "PENDING"]}}})
        stranded = [r for r in waiting if r.get("work_pool_name") and r["work_pool_name"] != spot_pool]
        if stranded:
            pools = ", ".join(sorted({r["work_pool_name"] for r in stranded}))
            blockers.append(
                f"{s.name}: {len(stranded)} scheduled run(s) still wait in pool(s) {pools} (created before the "
                f"cutover: {', '.join(r['name'] for r in stranded[:5])}{', ...' if len(stranded) > 5 else ''}); "
                "delete them or recreate them in the bulk pool"
            )

    leaving = [spec for spec in catalog.flows if spec.current_infra == "railway" and spec.target_infra != "railway"]
    staying = [spec.name for spec in catalog.flows if spec.target_infra == "railway"]
    by_name = {e["flow"]: e for e in evidence}
    checklist = []
    for spec in leaving:
        if spec.name in by_name:
            e = by_name[spec.name]
            checklist.append(
                f"[ ] {spec.name}: stop running it on Railway; it runs on {spec.work_pool}/{spec.work_queue} "
                f"({e['completed_in_spot_pool']} completed runs there since {_show(_ts(e['first']))})"
            )
        else:
            checklist.append(
                f"[ ] {spec.name}: not deployed on this Prefect server, so not checked: make sure nothing runs "
                "it on Railway any more (cron jobs, services) before scaling down"
            )
    checklist += [
        "[ ] Scale Railway's bulk compute down: remove the services/replicas that only ran the flows above "
        "and their Railway variables; lower resource limits to the realtime load",
        f"[ ] Keep on Railway (work pool '{catalog.tiers['realtime'].work_pool}'): {', '.join(staying)}",
        "[ ] Next month: run playbooks/cost_report.yml again and compare with Railway's invoice",
    ]
    return {
        "ready": not blockers,
        "days": days,
        "spot_pool": spot_pool,
        "blockers": blockers,
        "evidence": evidence,
        "not_deployed": not_deployed,
        "checklist": checklist,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agency-os-spot migration-status", description=__doc__.splitlines()[0])
    parser.add_argument("--api-url", default=os.environ.get("PREFECT_API_URL", "http://127.0.0.1:4200/api"))
    parser.add_argument("--days", type=float, default=7, help="days of flow runs to read (default 7)")
    parser.add_argument("--gate", type=float, metavar="DAYS", help="also run the decommission gate")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = parser.parse_args(argv)
    catalog = load_catalog()
    api = PrefectAPI(args.api_url, os.environ.get("PREFECT_API_KEY"))
    try:
        report = collect_status(api, catalog, args.gate or args.days)
        gate = decommission_gate(api, catalog, report, args.gate) if args.gate else None
    except PrefectAPIError as exc:
        print(f"migration status: {exc}", file=sys.stderr)
        return 2
    finally:
        api.close()
    if args.json:
        print(json.dumps({**report.as_dict(), **({"decommission": gate} if gate else {})}, indent=2))
    else:
        print(render_markdown(report))
        if gate:
            print("\n".join(gate["blockers"] or gate["checklist"]))
    if gate is not None:
        return 0 if gate["ready"] else 1
    return 1 if report.missed_windows else 0


if __name__ == "__main__":
    sys.exit(main())
