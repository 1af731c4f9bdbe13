"""Tables `abn_entity` and `abn_reject`, and the batch writers for PostgreSQL and SQLite.

A batch is written inside the caller's transaction (the one that also holds the job's
checkpoint), so a batch and the progress that covers it commit together or not at all.

Upsert rule: a record replaces the stored row only when its `record_last_updated` is newer;
an older or equal one leaves the row alone. Ingesting the same file twice therefore changes
nothing, and a stale extract never overwrites a newer one.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.engine import Connection, Engine

from agency_os_spot.abn.parse import COLUMNS
from agency_os_spot.abn.rows import Batch, copy_from_fields, copy_lines, sqlite_rows

__all__ = [
    "Batch",
    "Counts",
    "PostgresWriter",
    "SqliteWriter",
    "abn_entity",
    "abn_reject",
    "copy_from_fields",
    "copy_lines",
    "create_tables",
    "sqlite_rows",
    "writer_for",
]

# Column widths hold every value the publisher's field limits allow (agency_os_spot.abn.parse.LIMITS); the
# parser rejects anything beyond them, and a value the database still refuses costs only its record.
metadata = MetaData()
abn_entity = Table(
    "abn_entity",
    metadata,
    Column("abn", String(11), primary_key=True),
    Column("abn_status", String(3), nullable=False),
    Column("abn_status_from", Date),
    Column("entity_type_code", String(4), nullable=False),
    Column("entity_type_text", Text),
    Column("entity_name", Text, nullable=False),
    Column("given_names", Text),
    Column("family_name", Text),
    Column("state", String(3)),
    Column("postcode", String(50)),  # the publisher allows 50 characters, not only 4 digits
    Column("gst_status", String(3)),
    Column("gst_status_from", Date),
    Column("asic_number", Text),
    Column("dgr_status_from", Date),
    # json, not jsonb: kept as written (no parse into the binary form at load: ~10 % of the
    # database's work per record); the ->, ->> and json_array_elements operators work on it.
    Column("other_names", JSON, nullable=False),
    Column("record_last_updated", Date, nullable=False),
    Column("replaced", Boolean, nullable=False),
    Column("source_file", Text, nullable=False),
)
abn_reject = Table(
    "abn_reject",
    metadata,
    Column("source_file", Text, primary_key=True),
    Column("record_index", BigInteger, primary_key=True),
    Column("abn", Text),
    Column("reason", Text, nullable=False),
)


@dataclass
class Counts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0

    def add(self, other: Counts) -> None:
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.rejected += other.rejected


def create_tables(engine: Engine) -> None:
    """Create the tables, and widen a PostgreSQL column an older version created narrower (postcode
    was varchar(4)): an existing database then holds every legal value too. SQLite ignores lengths."""
    metadata.create_all(engine)
    if engine.dialect.name != "postgresql":
        return
    with engine.begin() as conn:
        for table in (abn_entity, abn_reject):
            widths = dict(
                conn.execute(
                    text(
                        "SELECT column_name, character_maximum_length FROM information_schema.columns "
                        "WHERE table_schema = current_schema() AND table_name = :table"
                    ),
                    {"table": table.name},
                ).all()
            )
            for column in table.columns:
                want = getattr(column.type, "length", None)
                have = widths.get(column.name)
                if want is not None and have is not None and have < want:
                    conn.exec_driver_sql(
                        f"ALTER TABLE {table.name} ALTER COLUMN {column.name} TYPE varchar({int(want)})"
                    )


# -- writers (run in the process that owns the transaction) -------------------------------------

_UPDATE_SET = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS if c != "abn")
_COLS = ", ".join(COLUMNS)


# What the database refuses about a record's values (too long, bad encoding, not a date, a NULL where
# none may be, a line COPY cannot read): the record is rejected, the rest of its batch is stored.
_REFUSED = (psycopg.errors.DataError, psycopg.errors.IntegrityError)
_SQLITE_REFUSED = (sqlite3.IntegrityError, sqlite3.DataError)
_CONTEXT_COLUMN = re.compile(r"column (\w+)")


class PostgresWriter:
    """Batches of new ABNs are COPYed straight into abn_entity (the first load of an extract);
    any other batch goes through a session temp table and one upsert that returns what it
    inserted and updated.

    A batch is written in a savepoint. Should the database refuse one of its records (which the
    parser's limits are there to prevent), the savepoint is rolled back and the batch bisected:
    each half is retried in its own savepoint, and a half that fails is split again, until the
    single refused record is found. It becomes an abn_reject row with the database's error; the
    rest of the batch is stored. One bad record costs about two writes of its batch, never the batch."""

    format = "copy"

    def write(self, conn: Connection, batch: Batch) -> Counts:
        counts = Counts(rejected=len(batch.rejects), unchanged=batch.superseded)
        raw = conn.connection.driver_connection  # the psycopg connection, same transaction
        rejects = list(batch.rejects)
        with raw.cursor() as cur:
            # A batch commits with its checkpoint; a crash of the database server may lose the
            # last commits, but only together with their checkpoints: resume stays exact. The
            # job's completion (which the queue acknowledgement follows) commits synchronously.
            cur.execute("SET LOCAL synchronous_commit = off")
            if batch.valid:
                try:
                    with raw.transaction():
                        inserted, updated = self._store(raw, cur, batch.copy_data, batch.valid)
                except _REFUSED as exc:
                    inserted, updated, refused = self._bisect(raw, cur, batch, exc)
                    rejects += refused
                    counts.rejected += len(refused)
                    counts.unchanged -= len(refused)
                counts.inserted, counts.updated = inserted, updated
                counts.unchanged += batch.valid - inserted - updated
            if rejects:
                cur.executemany(
                    "INSERT INTO abn_reject (source_file, record_index, abn, reason) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT DO NOTHING",
                    rejects,
                )
        return counts

    def _store(self, raw: Any, cur: Any, data: bytes, rows: int, clear_stage: bool = False) -> tuple[int, int]:
        """Write COPY lines: (inserted, updated). Raises what the database refuses."""
        if self._insert_only(raw, cur, data):
            return rows, 0
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS abn_stage (LIKE abn_entity INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        if clear_stage:  # an earlier part of this batch went through the stage in this transaction
            cur.execute("DELETE FROM abn_stage")
        with cur.copy(f"COPY abn_stage ({_COLS}) FROM STDIN") as copy:
            copy.write(data)
        # Within-batch duplicates (the extract has each ABN once): the newest wins, the
        # others count as unchanged.
        cur.execute(
            f"INSERT INTO abn_entity ({_COLS}) SELECT DISTINCT ON (abn) {_COLS} FROM abn_stage "
            "ORDER BY abn, record_last_updated DESC "
            f"ON CONFLICT (abn) DO UPDATE SET {_UPDATE_SET} "
            "WHERE abn_entity.record_last_updated < EXCLUDED.record_last_updated "
            "RETURNING (xmax = 0)"
        )
        flags = [r[0] for r in cur.fetchall()]
        return sum(flags), len(flags) - sum(flags)

    def _bisect(
        self, raw: Any, cur: Any, batch: Batch, error: Exception
    ) -> tuple[int, int, list[tuple[str, int, str | None, str]]]:
        """Store the batch's lines but those the database refuses: (inserted, updated, rejects)."""
        lines = batch.copy_data.split(b"\n")[:-1]
        if len(lines) != len(batch.line_index):
            raise error  # no record index per line: nothing to name a reject by
        inserted = updated = 0
        refused: list[tuple[str, int, str | None, str]] = []
        pending = [(0, len(lines), error)]  # a stack of [lo, hi) ranges, the leftmost on top
        while pending:
            lo, hi, exc = pending.pop()
            if exc is None:
                try:
                    with raw.transaction():
                        ins, upd = self._store(raw, cur, b"\n".join(lines[lo:hi]) + b"\n", hi - lo, True)
                except _REFUSED as failed:
                    exc = failed
                else:
                    inserted += ins
                    updated += upd
                    continue
            if hi - lo == 1:
                refused.append(_refused_reject(lines[lo], batch.line_index[lo], exc))
            else:
                mid = (lo + hi) // 2
                pending += [(mid, hi, None), (lo, mid, None)]
        _unless_systemic(refused, len(lines), error)
        return inserted, updated, refused

    @staticmethod
    def _insert_only(raw: Any, cur: Any, data: bytes) -> bool:
        """COPY the batch straight into abn_entity, in a savepoint: when one of its ABNs is there
        already (a re-ingestion, a newer extract) the COPY stops at that row with a unique
        violation, the savepoint rolls it back and the batch takes the upsert path. A first load
        pays nothing extra; a re-ingestion fails at its first row."""
        try:
            with raw.transaction(), cur.copy(f"COPY abn_entity ({_COLS}) FROM STDIN") as copy:
                copy.write(data)
        except psycopg.errors.UniqueViolation:
            return False
        return True


def _unless_systemic(refused: list, records: int, error: Exception) -> None:
    """A batch of several records that the database refuses entirely has no bad record but a
    fault of its own (a schema that does not match, say): it fails as a whole, as it did before."""
    if records > 1 and len(refused) == records:
        raise error


def _refused_reject(line: bytes, index: int, exc: Exception) -> tuple[str, int, str | None, str]:
    """The abn_reject row for a COPY line the database refused, with its error."""
    fields = line.split(b"\t")
    abn = fields[0].decode(errors="replace").replace("\x00", "") or None
    source = _copy_unescape(fields[-1].decode(errors="replace"))
    diag = getattr(exc, "diag", None)
    message = (diag.message_primary if diag is not None else None) or str(exc).splitlines()[0]
    column = _CONTEXT_COLUMN.search((diag.context if diag is not None else None) or "")
    reason = f"refused by PostgreSQL: {message}" + (f" (column {column.group(1)})" if column else "")
    return source, index, abn, reason.replace("\x00", "")


def _copy_unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"t": "\t", "n": "\n", "r": "\r"}.get(m.group(1), m.group(1)), value)


class SqliteWriter:
    """Stage rows in a temp table, then UPDATE the newer ones and INSERT the new ones.

    As on PostgreSQL, a batch is written in a savepoint and bisected when SQLite refuses a row
    (SQLite ignores column lengths, so only a constraint can refuse one): the refused record is
    rejected with SQLite's error, the rest stored."""

    format = "rows"

    def write(self, conn: Connection, batch: Batch) -> Counts:
        counts = Counts(rejected=len(batch.rejects), unchanged=batch.superseded)
        raw = conn.connection.driver_connection
        rejects = list(batch.rejects)
        cur = raw.cursor()
        try:
            if batch.valid:
                cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS abn_stage AS SELECT {_COLS} FROM abn_entity WHERE 0")
                try:
                    inserted, updated = self._attempt(raw, cur, batch.rows)
                except _SQLITE_REFUSED as exc:
                    if not raw.in_transaction or len(batch.line_index) != len(batch.rows):
                        raise  # no savepoint to roll back to, or no record index to name a reject by
                    inserted, updated, refused = self._bisect(raw, cur, batch, exc)
                    rejects += refused
                    counts.rejected += len(refused)
                    counts.unchanged -= len(refused)
                counts.inserted, counts.updated = inserted, updated
                counts.unchanged += batch.valid - inserted - updated
            if rejects:
                cur.executemany(
                    "INSERT OR IGNORE INTO abn_reject (source_file, record_index, abn, reason) VALUES (?, ?, ?, ?)",
                    rejects,
                )
        finally:
            cur.close()
        return counts

    def _attempt(self, raw: Any, cur: Any, rows: list[tuple]) -> tuple[int, int]:
        """_store in a savepoint when a transaction is open (the ledger's always is)."""
        if not raw.in_transaction:
            return self._store(cur, rows)
        cur.execute("SAVEPOINT abn_batch")
        try:
            result = self._store(cur, rows)
        except _SQLITE_REFUSED:
            cur.execute("ROLLBACK TO abn_batch")
            cur.execute("RELEASE abn_batch")
            raise
        cur.execute("RELEASE abn_batch")
        return result

    @staticmethod
    def _store(cur: Any, rows: list[tuple]) -> tuple[int, int]:
        cur.execute("DELETE FROM abn_stage")
        cur.executemany(f"INSERT INTO abn_stage ({_COLS}) VALUES ({', '.join('?' * len(COLUMNS))})", rows)
        cur.execute(
            f"UPDATE abn_entity SET ({', '.join(c for c in COLUMNS if c != 'abn')}) = "
            f"(SELECT {', '.join(f's.{c}' for c in COLUMNS if c != 'abn')} FROM abn_stage s "
            "WHERE s.abn = abn_entity.abn) "
            "WHERE abn IN (SELECT s.abn FROM abn_stage s JOIN abn_entity e ON e.abn = s.abn "
            "WHERE s.record_last_updated > e.record_last_updated)"
        )
        updated = cur.rowcount
        cur.execute(
            f"INSERT INTO abn_entity ({_COLS}) SELECT {_COLS} FROM abn_stage WHERE abn NOT IN (SELECT abn FROM abn_entity)"
        )
        return cur.rowcount, updated

    def _bisect(
        self, raw: Any, cur: Any, batch: Batch, error: Exception
    ) -> tuple[int, int, list[tuple[str, int, str | None, str]]]:
        """Store the batch's rows but those SQLite refuses: (inserted, updated, rejects)."""
        rows = batch.rows
        inserted = updated = 0
        refused: list[tuple[str, int, str | None, str]] = []
        pending: list[tuple[int, int, Exception | None]] = [(0, len(rows), error)]
        while pending:
            lo, hi, exc = pending.pop()
            if exc is None:
                try:
                    ins, upd = self._attempt(raw, cur, rows[lo:hi])
                except _SQLITE_REFUSED as failed:
                    exc = failed
                else:
                    inserted += ins
                    updated += upd
                    continue
            if hi - lo == 1:
                row = rows[lo]
                refused.append((row[-1], batch.line_index[lo], row[0], f"refused by SQLite: {exc}"))
            else:
                mid = (lo + hi) // 2
                pending += [(mid, hi, None), (lo, mid, None)]
        _unless_systemic(refused, len(rows), error)
        return inserted, updated, refused


def writer_for(engine: Engine) -> PostgresWriter | SqliteWriter:
    return PostgresWriter() if engine.dialect.name == "postgresql" else SqliteWriter()
