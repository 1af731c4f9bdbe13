"""The report's inputs, read and checked: dated prices and numeric settings.

Every price is an entry `{value: <number>, source: <url>, date: <YYYY-MM-DD>}`; a missing or bad one
raises PricingError naming the setting and the file it belongs in, e.g. `no on-demand price for
t3a.small in pricing.yml (aws_on_demand_usd_per_hour)`.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any

# Where each setting lives, for error messages (inventory prices vs the shared Railway/FX file).
INVENTORY_PRICING = "pricing.yml"
SHARED_SETTINGS = "playbooks/vars/cost_report.yml"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class PricingError(ValueError):
    """A price or setting the report needs is missing or malformed; the message names it."""


def _home(var: str) -> str:
    return INVENTORY_PRICING if var.startswith(("aws_", "gcp_")) else SHARED_SETTINGS


@dataclass(frozen=True)
class Price:
    """One dated price (or rate) and where it comes from."""

    key: str  # e.g. aws_on_demand_usd_per_hour[t3.small]
    value: float
    unit: str
    source: str
    date: str


class Prices:
    """Reads dated price entries from the pricing settings and remembers which were used."""

    def __init__(self, pricing: dict[str, Any]):
        self.pricing = pricing
        self.used: dict[str, Price] = {}

    def _entry(self, var: str, item: str | None, what: str) -> tuple[Any, str]:
        for_item = f" for {item}" if item is not None else ""
        if var not in self.pricing or self.pricing[var] in (None, "", {}):
            raise PricingError(f"no {what}{for_item} in {_home(var)} ({var})")
        entry = self.pricing[var]
        key = var
        if item is not None:
            if not isinstance(entry, dict) or item not in entry or entry[item] in (None, ""):
                raise PricingError(f"no {what}{for_item} in {_home(var)} ({var})")
            entry = entry[item]
            key = f"{var}[{item}]"
        return entry, key

    def get(self, var: str, item: str | None = None, *, what: str, unit: str) -> float:
        entry, key = self._entry(var, item, what)
        where = f"{_home(var)} ({key})"
        if not isinstance(entry, dict):
            raise PricingError(
                f"{what} in {where} must be a mapping {{value: <number>, source: <url>, date: YYYY-MM-DD}}, got {entry!r}"
            )
        value = entry.get("value")
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise PricingError(f"{what} in {where} must be a number >= 0 ({unit}), got {value!r}")
        source = entry.get("source")
        if not isinstance(source, str) or not source.startswith(("http://", "https://")):
            raise PricingError(f"{what} in {where} needs its source URL (source: https://...), got {source!r}")
        date = str(entry.get("date", ""))
        if not _DATE.match(date):
            raise PricingError(f"{what} in {where} needs the date it was read (date: YYYY-MM-DD), got {date!r}")
        self.used[key] = Price(key=key, value=float(value), unit=unit, source=source, date=date)
        return float(value)


def number(settings: dict[str, Any], key: str, where: str, *, minimum: float = 0) -> float:
    """settings[key] as a number >= minimum; `where` names the file or inventory it comes from."""
    value = settings.get(key)
    if isinstance(value, str):  # Ansible may hand templated numbers over as strings
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise PricingError(f"{key} in {where} must be a number >= {minimum:g}, got {value!r}")
    return float(value)
