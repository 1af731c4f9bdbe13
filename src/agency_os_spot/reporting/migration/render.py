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


def render_chart(report: StatusReport) -> bytes:
    """A PNG: per flow with completed runs, their durations against its tolerance window (bulk) or
    SLA (realtime, not gated); and, per day, the preemptions of each bulk flow's runs."""
    import io  # noqa: PLC0415

    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415  (heavy import, only here)
    from matplotlib.figure import Figure  # noqa: PLC0415

    flows = [s for s in report.flows if s.completed_durations or s.tier == "bulk"]
    fig = Figure(figsize=(11, 2.5 + 0.4 * max(len(flows), 1)))
    FigureCanvasAgg(fig)
    runs, days = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    for row, status in enumerate(flows):
        hours = [d / 3600 for d in status.completed_durations]
        held = status.window_held is not False
        runs.plot(hours, [row] * len(hours), "|", color="tab:green" if held else "tab:red", markersize=12)
        if status.tolerance_hours is not None:
            runs.plot([status.tolerance_hours], [row], "s", color="black", markersize=5)
        if status.p95_seconds is not None:
            runs.plot([status.p95_seconds / 3600], [row], "D", color="tab:blue", markersize=4)
    runs.set_yticks(range(len(flows)), [s.name for s in flows], fontsize=7)
    longest = max(
        [d / 3600 for s in flows for d in s.completed_durations] + [s.tolerance_hours or 0 for s in flows] + [1.0]
    )
    runs.set_xscale("symlog", linthresh=0.01)
    runs.set_xlim(0, longest * 1.6)
    runs.set_xlabel(
        "hours from scheduled start to end (|: a completed run, D: p95, square: tolerance window)", fontsize=7
    )
    runs.set_title(f"Completed runs, last {report.days:g} days (red: the window was missed)", fontsize=9)
    bulk = [s for s in report.flows if s.tier == "bulk" and s.preemptions_by_day]
    dates = sorted({day for s in bulk for day in s.preemptions_by_day})
    bottom = [0] * len(dates)
    for status in bulk:
        counts = [status.preemptions_by_day.get(day, 0) for day in dates]
        days.bar(range(len(dates)), counts, bottom=bottom, label=status.name)
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    days.set_xticks(range(len(dates)), [d[5:] for d in dates], fontsize=7, rotation=45)
    days.set_title("Preemptions per day (runs put back to Scheduled)", fontsize=9)
    days.yaxis.get_major_locator().set_params(integer=True)
    if bulk:
        days.legend(fontsize=7)
    else:
        days.text(0.5, 0.5, "no preemption", ha="center", va="center", transform=days.transAxes)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100)
    return out.getvalue()
