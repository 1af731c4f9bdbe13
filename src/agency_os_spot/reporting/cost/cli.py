"""The cost report's command line: compute the report from an INPUT.json and print it (Markdown or JSON).

    python -m agency_os_spot.reporting.cost INPUT.json [--out reports/] [--json]

INPUT is what the `cost_report` module receives: provider, region, capacity, pricing,
spot_price_history (AWS), hours_per_month, spot_basis.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agency_os_spot.reporting.cost.inputs import PricingError
from agency_os_spot.reporting.cost.render import render_files, render_markdown
from agency_os_spot.reporting.cost.report import compute_report
from agency_os_spot.reporting.files import write_files

DESCRIPTION = (
    "Monthly cost of the spot migration, computed (Current / Proposed / Savings per component, docs/migration-plan.md)."
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agency-os-spot cost-report", description=DESCRIPTION)
    parser.add_argument("input", help="JSON file: provider, region, capacity, pricing, spot_price_history, ...")
    parser.add_argument("--out", help="write the Markdown, JSON and PNG files into this folder")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = parser.parse_args(argv)
    try:
        report = compute_report(json.loads(Path(args.input).read_text(encoding="utf-8")))
    except PricingError as exc:
        print(f"cost report: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.as_dict(), indent=2) if args.json else render_markdown(report))
    if args.out:
        write_files(render_files(report), Path(args.out))
    return 0
