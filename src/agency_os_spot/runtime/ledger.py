"""Checkpoint and job ledger on SQLAlchemy 2 (SQLite file by default, PostgreSQL by URL).

A job (or batch) has an id, a status (pending / running / complete / failed), progress, a
small state (counters) and, once complete, a result. A completed job is skipped and returns its
stored result.

What makes resume exact:

* **Same transaction.** When a job's output lives in the ledger's database, flow code writes a
  batch and its checkpoint in one transaction (`with ledger.transaction() as conn:` ...
  `ledger.checkpoint(conn, lease, ...)`). A kill at any instant leaves either both or neither:
  resume neither loses nor repeats a record.
* **Fencing.** Every `acquire()` bumps the job's epoch. A checkpoint only lands while the
  lease's epoch is still current, so a worker that was presumed dead (its job redelivered to
  another node) and wakes up cannot commit over its successor: its transaction fails with
  `Fenced` and rolls back, data included.
* **A frozen holder blocks for a bounded time** (PostgreSQL). A node that freezes or loses its
  network sends no FIN/RST, and its backend would keep the job's row locked until TCP gives up
  (two hours by default). Every session has `lock_timeout`, `idle_in_transaction_session_timeout`
  and TCP keepalives on both ends (`make_engine`), and is named after its holder
  (`application_name`). A new holder whose `acquire()` waits `lock_timeout` on the row ends the
  sessions of the holder the ledger names (the queue handed the job over only because that holder
  stopped sending heartbeats) and acquires again; the old holder's transaction is rolled back and,
  when it wakes, its connection is gone and its epoch stale. Bound: the queue's visibility timeout
  plus `lock_timeout` (60 + 10 s by default).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    select,
    text,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine, make_url

from agency_os_spot import settings

log = logging.getLogger("agency_os.ledger")

PENDING, RUNNING, COMPLETE, FAILED = "pending", "running", "complete", "failed"
DEFAULT_URL = "sqlite:///agency-os-ledger.db"

metadata = MetaData()
job_ledger = Table(
    "job_ledger",
    metadata,
    Column("job_id", String(512), primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("owner", String(255)),
    Column("attempts", Integer, nullable=False),
    Column("progress", BigInteger, nullable=False),
    Column("state", JSON, nullable=False),
    Column("result", JSON),
    Column("error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("completed_at", DateTime(timezone=True)),
)


# One row per database: its destination id, a random identifier created with the ledger. Jobs
# carry it, queues are named after it, so a job can only be written where it was planned.
ledger_meta = Table(
    "ledger_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(255), nullable=False),
)
DESTINATION_KEY = "destination_id"


class ProgressMoved(RuntimeError):
    """The ledger's progress is not what this holder last committed (e.g. PostgreSQL restarted and
    lost an asynchronously committed batch). Nothing was committed: resume from the ledger."""


class Fenced(RuntimeError):
    """The lease is stale: another worker acquired the job since. Nothing was committed."""


@dataclass
class Lease:
    """A worker's hold on a job, as `Ledger.acquire` returned it."""

    job_id: str
    kind: str
    epoch: int
    owner: str
    status: str
    progress: int = 0
    state: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    attempts: int = 0

    @property
    def complete(self) -> bool:
        return self.status == COMPLETE


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def default_owner() -> str:
    """host:pid, the owner recorded on a lease (for audit; fencing uses the epoch)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def normalize_url(url: str) -> str:
    """Accept plain postgresql:// URLs (use the psycopg 3 driver this project ships)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def session_name(owner: str) -> str:
    """The `application_name` of a holder's PostgreSQL sessions (63 bytes at most)."""
    return f"agency-os {owner}"[:63]


# TCP keepalives: a peer that vanished without FIN/RST is noticed within 30 + 3 x 10 s, by the
# client (libpq) and by the server (its backend of this session) alike.
_KEEPALIVE = {"idle": 30, "interval": 10, "count": 3}


def postgres_connect_args(options: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    """libpq parameters of every ledger/store session (see the module docstring)."""
    current = settings.current()
    server = [
        f"-c lock_timeout={int(current.pg_lock_timeout_s * 1000)}",
        f"-c idle_in_transaction_session_timeout={int(current.pg_idle_in_transaction_s * 1000)}",
        *(f"-c tcp_keepalives_{k}={v}" for k, v in _KEEPALIVE.items()),
    ]
    given = [options] if isinstance(options, str) else list(options or ())
    return {
        "application_name": session_name(default_owner()),
        "keepalives": 1,
        **{f"keepalives_{k}": v for k, v in _KEEPALIVE.items()},
        "options": " ".join([*given, *server]),
    }


def make_engine(url: str = DEFAULT_URL) -> Engine:
    """An engine with the settings the ledger relies on.

    SQLite: WAL (readers never block the writer), a busy timeout, and `BEGIN IMMEDIATE` so a
    transaction takes the write lock up front and two workers never deadlock on upgrade.
    """
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn, _record):  # pragma: no cover - exercised by every test
            dbapi_conn.isolation_level = None  # let SQLAlchemy's begin event issue BEGIN
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # pragma: no cover
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(url, pool_pre_ping=True, connect_args=postgres_connect_args(parsed.query.get("options")))
    raise ValueError(
        f"unsupported database URL {parsed.render_as_string(hide_password=True)!r}: use sqlite:/// or postgresql://"
    )


class Ledger:
    """The job ledger. Thread-safe as SQLAlchemy engines are; one per process is enough."""

    def __init__(self, engine: Engine | str = DEFAULT_URL):
        self.engine = make_engine(engine) if isinstance(engine, str) else engine
        self._destination: str | None = None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def setup(self) -> None:
        """Create the ledger tables if they do not exist, and this database's destination id."""
        metadata.create_all(self.engine, tables=[job_ledger, ledger_meta])
        insert_fn = pg_insert if self.dialect == "postgresql" else sqlite_insert
        with self.engine.begin() as conn:
            conn.execute(
                insert_fn(ledger_meta)
                .values(key=DESTINATION_KEY, value=f"db-{uuid.uuid4().hex[:16]}")
                .on_conflict_do_nothing(index_elements=["key"])
            )

    @property
    def destination(self) -> str:
        """This database's destination id (stable for its life, no credentials in it)."""
        if self._destination is None:
            stmt = select(ledger_meta.c.value).where(ledger_meta.c.key == DESTINATION_KEY)
            with self.engine.connect() as conn:
                value = conn.execute(stmt).scalar_one_or_none()
            if value is None:
                self.setup()
                return self.destination
            self._destination = value
        return self._destination

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A transaction for a batch of output and its checkpoint (commit on success)."""
        with self.engine.begin() as conn:
            yield conn

    # -- reading -----------------------------------------------------------------------------

    def get(self, job_id: str, conn: Connection | None = None) -> Lease | None:
        """The job's current ledger entry (as a Lease snapshot), or None if unknown."""
        stmt = select(job_ledger).where(job_ledger.c.job_id == job_id)
        if conn is not None:
            row = conn.execute(stmt).mappings().first()
        else:
            with self.engine.connect() as own:
                row = own.execute(stmt).mappings().first()
        return None if row is None else self._lease(row)

    def jobs(self, prefix: str = "") -> list[Lease]:
        stmt = select(job_ledger).where(job_ledger.c.job_id.startswith(prefix)).order_by(job_ledger.c.job_id)
        with self.engine.connect() as conn:
            return [self._lease(row) for row in conn.execute(stmt).mappings()]

    @staticmethod
    def _lease(row: Any) -> Lease:
        return Lease(
            job_id=row["job_id"],
            kind=row["kind"],
            epoch=row["epoch"],
            owner=row["owner"] or "",
            status=row["status"],
            progress=row["progress"],
            state=dict(row["state"] or {}),
            result=row["result"],
            attempts=row["attempts"],
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def acquire(self, job_id: str, kind: str, owner: str | None = None) -> Lease:
        """Take the job: a complete job comes back as is (skip it, use `.result`); otherwise the
        epoch is bumped, the job is marked running and the lease carries the last checkpoint.

        On PostgreSQL, a row still locked after `lock_timeout` belongs to a holder presumed dead
        (frozen, cut off): its sessions are ended and the job acquired again (module docstring)."""
        owner = owner or default_owner()
        try:
            return self._acquire(job_id, kind, owner)
        except sa_exc.OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) != "55P03" or not self._end_holder_sessions(job_id, owner):
                raise
        return self._acquire(job_id, kind, owner)

    def _end_holder_sessions(self, job_id: str, successor: str) -> bool:
        """End the PostgreSQL sessions of the job's recorded holder (not ours). True if any."""
        holder = self.get(job_id)
        if holder is None or not holder.owner or holder.owner == successor:
            return False
        with self.engine.begin() as conn:
            ended = conn.execute(
                text(
                    "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :name AND datname = current_database() AND pid <> pg_backend_pid()"
                ),
                {"name": session_name(holder.owner)},
            ).all()
        if ended:
            log.warning(
                "job %s: its holder %s kept the row locked past lock_timeout (frozen or cut off); "
                "ended its %d session(s) to take the job over",
                job_id,
                holder.owner,
                len(ended),
            )
        return bool(ended)

    def _acquire(self, job_id: str, kind: str, owner: str) -> Lease:
        with self.engine.begin() as conn:
            row = self._locked_row(conn, job_id)
            if row is None:
                insert_fn = pg_insert if self.dialect == "postgresql" else sqlite_insert
                conn.execute(
                    insert_fn(job_ledger)
                    .values(
                        job_id=job_id,
                        kind=kind,
                        status=PENDING,
                        epoch=0,
                        attempts=0,
                        progress=0,
                        state={},
                        created_at=_now(),
                        updated_at=_now(),
                    )
                    .on_conflict_do_nothing(index_elements=["job_id"])  # created concurrently: fine
                )
                row = self._locked_row(conn, job_id)
            lease = self._lease(row)
            if lease.complete:
                return lease
            if lease.kind != kind:
                raise ValueError(f"job {job_id!r} is a {lease.kind!r} job, not {kind!r}")
            lease.epoch += 1
            lease.attempts += 1
            lease.owner = owner
            lease.status = RUNNING
            conn.execute(
                update(job_ledger)
                .where(job_ledger.c.job_id == job_id)
                .values(status=RUNNING, epoch=lease.epoch, owner=owner, attempts=lease.attempts, updated_at=_now())
            )
            return lease

    def _locked_row(self, conn: Connection, job_id: str) -> Any:
        stmt = select(job_ledger).where(job_ledger.c.job_id == job_id)
        if self.dialect == "postgresql":
            stmt = stmt.with_for_update()
        return conn.execute(stmt).mappings().first()

    def _fenced_update(self, conn: Connection, lease: Lease, expect_progress: bool = False, **values: Any) -> None:
        conditions = [job_ledger.c.job_id == lease.job_id, job_ledger.c.epoch == lease.epoch]
        if expect_progress:  # compare-and-set: on top of what this holder committed last, nothing else
            conditions.append(job_ledger.c.progress == lease.progress)
        result = conn.execute(update(job_ledger).where(*conditions).values(updated_at=_now(), **values))
        if result.rowcount != 1:
            row = conn.execute(
                select(job_ledger.c.epoch, job_ledger.c.progress).where(job_ledger.c.job_id == lease.job_id)
            ).first()
            if expect_progress and row is not None and row.epoch == lease.epoch:
                raise ProgressMoved(
                    f"job {lease.job_id!r}: the ledger's progress is {row.progress}, not {lease.progress} as this "
                    "holder committed (a lost commit?); this transaction is rolled back, resume from the ledger"
                )
            raise Fenced(
                f"job {lease.job_id!r}: lease epoch {lease.epoch} is stale (the job was taken over); "
                "this transaction is rolled back"
            )

    def fence(self, conn: Connection, lease: Lease) -> None:
        """Inside a transaction, before writing output: check the lease is current and lock the
        job's row (PostgreSQL) so no takeover can interleave with this batch."""
        self._fenced_update(conn, lease)

    def checkpoint(self, conn: Connection, lease: Lease, progress: int, state: dict[str, Any] | None = None) -> None:
        """Record progress in `conn`'s transaction (the one holding the output it covers), only on
        top of the progress this lease committed last (else ProgressMoved, nothing committed)."""
        values: dict[str, Any] = {"progress": progress}
        if state is not None:
            values["state"] = state
        self._fenced_update(conn, lease, expect_progress=True, **values)
        lease.progress = progress
        if state is not None:
            lease.state = state

    def complete(self, lease: Lease, result: Any, conn: Connection | None = None) -> None:
        """Mark the job complete with its result (in `conn`'s transaction when given)."""
        values = {"status": COMPLETE, "result": result, "error": None, "completed_at": _now()}
        if conn is not None:
            self._fenced_update(conn, lease, **values)
        else:
            with self.engine.begin() as own:
                self._fenced_update(own, lease, **values)
        lease.status, lease.result = COMPLETE, result

    def release(self, lease: Lease) -> bool:
        """Give the job back (drain): pending again, progress kept. False if already taken over."""
        try:
            with self.engine.begin() as conn:
                self._fenced_update(conn, lease, status=PENDING, owner=None)
        except Fenced:
            return False
        lease.status = PENDING
        return True

    def fail(self, lease: Lease, error: str) -> bool:
        """Record a failed attempt (progress kept, so a retry resumes). False if taken over."""
        try:
            with self.engine.begin() as conn:
                self._fenced_update(conn, lease, status=FAILED, error=error[:4000], owner=None)
        except Fenced:
            return False
        lease.status = FAILED
        return True
