"""The decommission gate: whether Railway's bulk compute can go, what blocks it, or the checklist to scale it down."""

from __future__ import annotations

from typing import Any

from agency_os_spot.catalog import Catalog
from agency_os_spot.reporting.migration.inputs import PrefectAPI
from agency_os_spot.reporting.migration.status import StatusReport
from agency_os_spot.reporting.migration.times import iso_time, parse_time, show_time, utc


def decommission_gate(api: PrefectAPI, catalog: Catalog, report: StatusReport, days: float) -> dict[str, Any]:
    """Whether Railway's bulk compute can go: every deployed bulk flow of the catalog is cut over
    (its deployments are in the bulk pool), has completed runs in that pool spanning `days` days,
    missed no window over the last `days` days and has no runs waiting in another pool."""
    spot_pool = catalog.spot_pool
    completed_on_spot: dict[str, Any] = {"states": ["COMPLETED"], "work_pool": spot_pool}
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
        first = api.first_run(s.flow_ids, "START_TIME_ASC", **completed_on_spot)
        last = api.first_run(s.flow_ids, "END_TIME_DESC", **completed_on_spot)
        count = api.count_runs(s.flow_ids, **completed_on_spot)
        item: dict[str, Any] = {"flow": s.name, "completed_in_spot_pool": count, "first": None, "last": None}
        if not first or not last:
            blockers.append(
                f"{s.name}: no completed run in '{spot_pool}' yet; it needs completed runs there spanning {days:g} days"
            )
        else:
            start = utc(first.start_time) or utc(first.expected_start_time)
            end = utc(last.end_time)
            span = (end - start).total_seconds() / 86400 if start and end else 0.0
            item.update(first=iso_time(start), last=iso_time(end), span_days=round(span, 2))
            if span < days:
                blockers.append(
                    f"{s.name}: only {span:.1f} days of on-spot success: its {count} completed run(s) in "
                    f"'{spot_pool}' span {show_time(start)} to {show_time(end)}; it needs {days:g} days"
                )
        evidence.append(item)
        if s.window_held is False:
            blockers.append(f"{s.name}: missed its window in the last {days:g} days: {'; '.join(s.missed)}")
        waiting = api.flow_runs(s.flow_ids, states=["SCHEDULED", "PENDING"])
        stranded = [r for r in waiting if r.work_pool_name and r.work_pool_name != spot_pool]
        if stranded:
            pools = ", ".join(sorted({r.work_pool_name for r in stranded}))
            blockers.append(
                f"{s.name}: {len(stranded)} scheduled run(s) still wait in pool(s) {pools} (created before the "
                f"cutover: {', '.join(r.name for r in stranded[:5])}{', ...' if len(stranded) > 5 else ''}); "
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
                f"({e['completed_in_spot_pool']} completed runs there since {show_time(parse_time(e['first']))})"
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
