"""Monthly cost of the spot migration, computed (Current / Proposed / Savings per component, docs/migration-plan.md).

Nothing in the table is typed by hand. It comes from:

* the flow catalog (`src/agency_os_spot/catalog.yml`): which flows run on Railway today (`current_infra`) and
  which stay there (`target_infra`), tier by tier;
* the inventory's capacity settings (AWS: instance types, min/max/desired, on-demand mix, root
  volume; GCP: machine type, target size, boot disk, external IP);
* dated prices with their source: AWS on-demand, EBS and public IPv4 prices, GCP Spot prices and
  Railway's usage rates from configuration, AWS Spot prices from DescribeSpotPriceHistory
  (30-day time-weighted averages per instance type and availability zone, see the repo module
  `aws_spot_price_history`), and an AUD exchange rate.

The package, by concern: `inputs` reads and checks the prices and settings, `providers` turns them
into each provider's monthly cost lines, `report` assembles the table, `render` writes it as
Markdown, JSON and a PNG chart, and `cli` is the command line:

    python -m agency_os_spot.reporting.cost INPUT.json [--out reports/] [--json]
"""

from agency_os_spot.reporting.cost.cli import main
from agency_os_spot.reporting.cost.inputs import INVENTORY_PRICING, SHARED_SETTINGS, Price, PricingError
from agency_os_spot.reporting.cost.providers import Line
from agency_os_spot.reporting.cost.render import render_chart, render_files, render_markdown
from agency_os_spot.reporting.cost.report import PROVIDERS, SPOT_BASES, CostReport, compute_report
from agency_os_spot.reporting.files import write_files

__all__ = [
    "INVENTORY_PRICING",
    "PROVIDERS",
    "SHARED_SETTINGS",
    "SPOT_BASES",
    "CostReport",
    "Line",
    "Price",
    "PricingError",
    "compute_report",
    "main",
    "render_chart",
    "render_files",
    "render_markdown",
    "write_files",
]
