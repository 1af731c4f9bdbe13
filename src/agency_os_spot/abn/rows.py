"""A batch of parsed records and its formatting for the writers (COPY text, SQLite rows).

This runs in the parser processes, so it imports neither SQLAlchemy nor a database driver: a
parser process starts in a fraction of the time (one or two start per file).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agency_os_spot.abn.parse import COLUMNS, Record

_DATA_COLUMNS = len(COLUMNS) - 1  # all but source_file
_STR_FIELDS = _DATA_COLUMNS - 1  # all but the boolean `replaced`
_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")


@dataclass
class Batch:
    """Records [first, end) of one file: the valid rows in the writer's format, and the rejects."""

    first: int
    end: int
    valid: int = 0  # valid records written (after dropping superseded duplicates)
    superseded: int = 0  # older duplicates of an ABN within the batch (counted as unchanged)
    copy_data: bytes = b""  # PostgreSQL COPY text format
    line_index: list[int] = field(default_factory=list)  # the file index of each copy_data line / row
    rows: list[tuple] = field(default_factory=list)  # SQLite parameter tuples
    rejects: list[tuple[str, int, str | None, str]] = field(default_factory=list)  # source, index, abn, reason

    @property
    def records(self) -> int:
        return self.end - self.first


# -- formatting (runs in the parser process) ----------------------------------------------------


def _copy_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def copy_lines(records: list[Record], source_file: str) -> bytes:
    """Records as PostgreSQL COPY text (tab separated, \\N for NULL, one line per record)."""
    suffix_t, suffix_f = f"\tt\t{source_file}", f"\tf\t{source_file}"
    lines = [
        "\t".join(["\\N" if v is None else v for v in rec[:_STR_FIELDS]]) + (suffix_t if rec[_STR_FIELDS] else suffix_f)
        for rec in records
    ]
    text = "\n".join(lines)
    # Cheap whole-batch check: every backslash is one of our \N markers, every tab a separator,
    # and no newline/CR hides in a value. Otherwise escape field by field (rare: odd names).
    nulls = sum(rec[:_STR_FIELDS].count(None) for rec in records)
    separators = _DATA_COLUMNS * len(records)
    clean = (
        text.count("\\") == nulls
        and text.count("\t") == separators
        and text.count("\n") == max(len(records) - 1, 0)
        and "\r" not in text
        and not _COPY_SPECIAL.search(source_file)
    )
    if not clean:
        lines = [
            "\t".join(
                ["\\N" if v is None else _copy_escape(v) for v in rec[:_STR_FIELDS]]
                + ["t" if rec[_STR_FIELDS] else "f", _copy_escape(source_file)]
            )
            for rec in records
        ]
        text = "\n".join(lines)
    return (text + "\n").encode() if records else b""


def copy_from_fields(fields_list: list[tuple], source_file: str) -> bytes:
    """COPY text from fast-path field tuples (their values never need escaping, see
    agency_os_spot.abn.parse.fast_fields)."""
    if not fields_list:
        return b""
    suffix = b"\t" + _copy_escape(source_file).encode()
    return b"\n".join([b"\t".join(f) + suffix for f in fields_list]) + b"\n"


def sqlite_rows(records: list[Record], source_file: str) -> list[tuple]:
    return [(*rec[:_DATA_COLUMNS], source_file) for rec in records]
