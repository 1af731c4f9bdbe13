"""The migration status of each catalog flow: the work pools of its deployments, its flow runs of
the last days by final state, how many were rescheduled after a preemption, how many crashed, the
p95 duration against its tolerance window (bulk; realtime flows have an SLA, reported but not
gated) and whether the window held.

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
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

from agency_os_spot.catalog import Catalog, FlowSpec
from agency_os_spot.reporting.migration.inputs import PrefectAPI
from agency_os_spot.reporting.migration.times import format_duration, iso_time, show_time, utc

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun, State

FINAL_TYPES = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
UNFINISHED_TYPES = ("SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING")


def p95(values: list[float]) -> float | None:
    """Nearest-rank 95th percentile (the smallest value >= 95% of the values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


@dataclass
class RunFacts:
    id: UUID
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
    rescheduled_at: list[dt.datetime] = field(default_factory=list)  # when each preemption put it back

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

    def read_history(self, states: list[State]) -> None:
        previous = None
        for state in sorted(states, key=lambda s: s.timestamp):
            kind = state.type.value
            if kind == "SCHEDULED" and previous is not None:
                if previous == "CRASHED" or (previous == "RUNNING" and not state.message):
                    self.reschedules += 1
                    self.rescheduled_at.append(state.timestamp)
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
    preemptions_by_day: dict[str, int] = field(default_factory=dict)  # UTC date -> runs put back that day
    overdue: list[str] = field(default_factory=list)
    window_held: bool | None = None
    missed: list[str] = field(default_factory=list)
    flow_ids: list[UUID] = field(default_factory=list)

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
            "completed_seconds": sorted(self.completed_durations),
            "preemptions_by_day": dict(sorted(self.preemptions_by_day.items())),
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
            "generated_at": iso_time(self.generated_at),
            "days": self.days,
            "since": iso_time(self.since),
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


def _run_facts(run: FlowRun, flow_names: dict[UUID, str], deployments: dict[UUID, Deployment]) -> RunFacts:
    deployment = deployments.get(run.deployment_id) if run.deployment_id else None
    return RunFacts(
        id=run.id,
        name=run.name,
        flow=flow_names.get(run.flow_id, str(run.flow_id)),
        deployment=deployment.name if deployment else None,
        pool=run.work_pool_name,
        state_type=run.state_type.value if run.state_type else "UNKNOWN",
        state_name=run.state_name or "",
        expected_start=utc(run.expected_start_time),
        start=utc(run.start_time),
        end=utc(run.end_time),
        run_count=run.run_count or 0,
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
    flow_names: dict[UUID, str] = {}
    entry_of_flow: dict[UUID, str] = {}
    unknown: list[str] = []
    for flow in api.flows():
        spec = catalog_entry(catalog, flow.name)
        if spec is None:
            unknown.append(flow.name)
            continue
        flow_names[flow.id] = flow.name
        entry_of_flow[flow.id] = spec.name
        statuses[spec.name].prefect_flows.append(flow.name)
        statuses[spec.name].flow_ids.append(flow.id)

    deployments: dict[UUID, Deployment] = {}
    for item in api.deployments(list(flow_names)):
        deployment = Deployment(
            name=f"{flow_names[item.flow_id]}/{item.name}",
            pool=item.work_pool_name,
            queue=item.work_queue_name,
            paused=bool(item.paused),
        )
        deployments[item.id] = deployment
        statuses[entry_of_flow[item.flow_id]].deployments.append(deployment)

    ids = list(flow_names)
    runs = {r.id: r for r in api.flow_runs(ids, expected_after=since, expected_before=now)}
    runs.update({r.id: r for r in api.flow_runs(ids, states=UNFINISHED_TYPES, expected_before=since)})

    for run in runs.values():
        facts = _run_facts(run, flow_names, deployments)
        if facts.needs_history:
            facts.read_history(api.states(facts.id))
        status = statuses[entry_of_flow[run.flow_id]]
        status.runs += 1
        bucket = facts.state_type.lower() if facts.state_type in FINAL_TYPES else "unfinished"
        status.by_state[bucket] = status.by_state.get(bucket, 0) + 1
        status.rescheduled += 1 if facts.reschedules else 0
        status.failure_retries += 1 if facts.failure_retries else 0
        status.crashed += 1 if facts.crashed else 0
        if facts.duration is not None:
            status.completed_durations.append(facts.duration)
        for at in facts.rescheduled_at:
            day = at.astimezone(dt.UTC).date().isoformat()
            status.preemptions_by_day[day] = status.preemptions_by_day.get(day, 0) + 1
        if (
            facts.state_type not in FINAL_TYPES
            and status.tolerance_hours is not None
            and facts.due is not None
            and (now - facts.due).total_seconds() > status.tolerance_hours * 3600
        ):
            status.overdue.append(f"{facts.name} ({facts.state_name}, due {show_time(facts.due)})")

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
