"""The cost report: the table of Current / Proposed / Savings per component, assembled from the providers' lines."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from agency_os_spot.catalog import Catalog, load_catalog
from agency_os_spot.reporting.cost.inputs import SHARED_SETTINGS, Price, Prices, PricingError, number
from agency_os_spot.reporting.cost.providers import Line, aws, gcp, railway

PROVIDERS = ("aws", "gcp")
SPOT_BASES = ("mean", "max", "min")


@dataclass
class CostReport:
    """The table (today and proposed, per component), its detail and the prices it used."""

    provider: str
    region: str
    generated_on: str
    hours_per_month: float
    aud_per_usd: float
    lines: list[Line]
    railway_flows: list[dict[str, Any]]
    spot_detail: dict[str, Any]
    notes: list[str]
    sources: list[Price] = field(default_factory=list)

    @property
    def current_usd(self) -> float:
        return sum(line.current_usd for line in self.lines)

    @property
    def proposed_usd(self) -> float:
        return sum(line.proposed_usd for line in self.lines)

    @property
    def savings_usd(self) -> float:
        return self.current_usd - self.proposed_usd

    def aud(self, usd: float) -> float:
        return usd * self.aud_per_usd

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON (numbers per month, US$ and A$)."""

        def money(usd: float) -> dict[str, float]:
            return {"usd": round(usd, 4), "aud": round(self.aud(usd), 4)}

        return {
            "provider": self.provider,
            "region": self.region,
            "generated_on": self.generated_on,
            "hours_per_month": self.hours_per_month,
            "aud_per_usd": self.aud_per_usd,
            "lines": [
                {
                    "component": line.component,
                    "detail": line.detail,
                    "current": money(line.current_usd),
                    "proposed": money(line.proposed_usd),
                    "savings": money(line.savings_usd),
                }
                for line in self.lines
            ],
            "total": {
                "current": money(self.current_usd),
                "proposed": money(self.proposed_usd),
                "savings": money(self.savings_usd),
            },
            "railway_flows": self.railway_flows,
            "spot": self.spot_detail,
            "notes": self.notes,
            "sources": [asdict(p) for p in self.sources],
        }


def compute_report(inputs: dict[str, Any], catalog: Catalog | None = None, today: dt.date | None = None) -> CostReport:
    """The cost table from the catalog, capacity, prices (and, for AWS, the spot price history)."""
    catalog = catalog or load_catalog()
    provider = inputs.get("provider")
    if provider not in PROVIDERS:
        raise PricingError(f"provider must be one of {', '.join(PROVIDERS)}, got {provider!r}")
    basis = inputs.get("spot_basis", "mean")
    if basis not in SPOT_BASES:
        raise PricingError(f"cost_report_spot_basis must be one of {', '.join(SPOT_BASES)}, got {basis!r}")
    hours = number(
        {"hours_per_month": inputs.get("hours_per_month", 730)}, "hours_per_month", SHARED_SETTINGS, minimum=1
    )
    prices = Prices(inputs.get("pricing") or {})
    aud_per_usd = prices.get("aud_per_usd", what="AUD exchange rate", unit="A$ per US$")
    if aud_per_usd <= 0:
        raise PricingError(f"AUD exchange rate in {SHARED_SETTINGS} (aud_per_usd) must be > 0")
    region = str(inputs.get("region") or "")
    capacity = inputs.get("capacity") or {}

    lines, railway_rows, notes = railway(catalog, prices)
    if provider == "aws":
        spot_lines, detail, spot_notes = aws(capacity, prices, inputs.get("spot_price_history"), region, hours, basis)
    else:
        spot_lines, detail, spot_notes = gcp(capacity, prices, hours)
    notes = [
        *notes,
        *spot_notes,
        f"{hours:g} hours per month; US$1 = A${aud_per_usd:g}. Not included: data transfer out of AWS/GCP, "
        "the control plane (Prefect server, Redis, PostgreSQL), taxes.",
    ]
    return CostReport(
        provider=provider,
        region=region,
        generated_on=(today or dt.datetime.now(dt.UTC).date()).isoformat(),
        hours_per_month=hours,
        aud_per_usd=aud_per_usd,
        lines=[*lines, *spot_lines],
        railway_flows=railway_rows,
        spot_detail=detail,
        notes=notes,
        sources=sorted(prices.used.values(), key=lambda p: p.key),
    )
