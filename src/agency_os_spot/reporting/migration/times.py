"""Times and durations as the migration reports read, store and print them."""

from __future__ import annotations

import datetime as dt


def parse_time(value: str | None) -> dt.datetime | None:
    """An ISO 8601 time as the API writes it (2026-11-28T03:00:00Z), or None."""
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def utc(value: dt.datetime | None) -> dt.datetime | None:
    """A time read through Prefect's client as a plain datetime in UTC, or None."""
    return dt.datetime.fromisoformat(value.isoformat()).astimezone(dt.UTC) if value else None


def iso_time(value: dt.datetime | None) -> str | None:
    """A time for machines, in UTC: 2026-11-28T03:00:00Z."""
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if value else None


def show_time(value: dt.datetime | None) -> str:
    """A time for people: 2026-11-28 03:00 UTC."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "-"


def format_duration(seconds: float | None) -> str:
    """12s, 5m 03s, 14h 00m, 2d 03h."""
    if seconds is None:
        return "-"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600:02d}h"
