"""The migration status's command line: print the status (Markdown or JSON), optionally with the decommission gate.

    python -m agency_os_spot.reporting.migration --api-url http://127.0.0.1:4200/api [--days 7] [--json]
    python -m agency_os_spot.reporting.migration --api-url URL --gate 7      # the decommission gate

Exit status: 0 when no bulk flow missed its window (with --gate: when the gate passes), 1 otherwise,
2 when Prefect cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys

from agency_os_spot.catalog import load_catalog
from agency_os_spot.reporting.migration.gate import decommission_gate
from agency_os_spot.reporting.migration.inputs import DEFAULT_API_URL, PrefectAPI, PrefectAPIError
from agency_os_spot.reporting.migration.render import render_markdown
from agency_os_spot.reporting.migration.status import collect_status

DESCRIPTION = 'Migration monitoring from the Prefect REST API (phase 3 of the migration plan, docs/migration-plan.md: "monitor for one week").'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agency-os-spot migration-status", description=DESCRIPTION)
    parser.add_argument(
        "--api-url",
        help=f"Prefect API root (default: PREFECT_API_URL or the active Prefect profile's, else {DEFAULT_API_URL})",
    )
    parser.add_argument("--days", type=float, default=7, help="days of flow runs to read (default 7)")
    parser.add_argument("--gate", type=float, metavar="DAYS", help="also run the decommission gate")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = parser.parse_args(argv)
    catalog = load_catalog()
    try:
        with PrefectAPI(args.api_url) as api:
            report = collect_status(api, catalog, args.gate or args.days)
            gate = decommission_gate(api, catalog, report, args.gate) if args.gate else None
    except PrefectAPIError as exc:
        print(f"migration status: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({**report.as_dict(), **({"decommission": gate} if gate else {})}, indent=2))
    else:
        print(render_markdown(report))
        if gate:
            print("\n".join(gate["blockers"] or gate["checklist"]))
    if gate is not None:
        return 0 if gate["ready"] else 1
    return 1 if report.missed_windows else 0
