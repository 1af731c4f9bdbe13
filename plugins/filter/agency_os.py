"""Filters for the playbooks: time arithmetic on the timestamps the Prefect API returns."""

from __future__ import annotations

import datetime as dt

from ansible.errors import AnsibleFilterError


def seconds_since(timestamp: str | None) -> float:
    """Seconds from an ISO 8601 timestamp (e.g. a worker's last_heartbeat_time) until now.
    A missing timestamp is infinitely old."""
    if not timestamp:
        return float("inf")
    try:
        when = dt.datetime.fromisoformat(str(timestamp).replace("Z", "+00:00"))
    except ValueError as exc:
        raise AnsibleFilterError(f"seconds_since: not an ISO 8601 timestamp: {timestamp!r}") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return (dt.datetime.now(dt.UTC) - when).total_seconds()


class FilterModule:
    def filters(self):
        return {"seconds_since": seconds_since}
