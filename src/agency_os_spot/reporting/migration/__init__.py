"""Migration monitoring from the Prefect API (phase 3 of the migration plan, docs/migration-plan.md: "monitor for one week").

For each flow of the catalog: where its deployments run and how its flow runs of the last days
went, judged against its tolerance window; then the gate before Railway's bulk compute is
decommissioned.

The package, by concern: `inputs` reads Prefect, `status` summarises each catalog flow (and says
what the numbers mean), `gate` decides whether Railway's bulk compute can go, `render` prints the
status as Markdown, `times` formats times and durations, and `cli` is the command line:

    python -m agency_os_spot.reporting.migration --api-url http://127.0.0.1:4200/api [--days 7] [--json]
    python -m agency_os_spot.reporting.migration --api-url URL --gate 7      # the decommission gate
"""

from agency_os_spot.reporting.migration.cli import main
from agency_os_spot.reporting.migration.gate import decommission_gate
from agency_os_spot.reporting.migration.inputs import PrefectAPI, PrefectAPIError
from agency_os_spot.reporting.migration.render import render_chart, render_markdown, render_table
from agency_os_spot.reporting.migration.status import (
    FINAL_TYPES,
    UNFINISHED_TYPES,
    Deployment,
    FlowStatus,
    RunFacts,
    StatusReport,
    catalog_entry,
    collect_status,
    p95,
)
from agency_os_spot.reporting.migration.times import format_duration

__all__ = [
    "FINAL_TYPES",
    "UNFINISHED_TYPES",
    "Deployment",
    "FlowStatus",
    "PrefectAPI",
    "PrefectAPIError",
    "RunFacts",
    "StatusReport",
    "catalog_entry",
    "collect_status",
    "decommission_gate",
    "format_duration",
    "main",
    "p95",
    "render_chart",
    "render_markdown",
    "render_table",
]
