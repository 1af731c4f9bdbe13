"""The migration status for people: the Markdown table per catalog flow and its legend."""

from __future__ import annotations

from agency_os_spot.reporting.migration.status import FlowStatus, StatusReport
from agency_os_spot.reporting.migration.times import format_duration, show_time


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
        f"Prefect API {report.api_url}; flow runs expected to start since {show_time(report.since)} "
        f"(last {report.days:g} days), as of {show_time(report.generated_at)}.",
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
