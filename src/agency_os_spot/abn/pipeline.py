"""Ingest one ABN Bulk Extract file: parse, write, checkpoint — resumable at any instant.

The file is parsed in a helper process (`python -m agency_os_spot.abn.pipeline produce ...`) that streams
batches of `checkpoint_every` records over a pipe, already formatted for the database (COPY text
for PostgreSQL): parsing and writing then use both cores. The process that owns the database
transaction writes each batch and its checkpoint in **one transaction** (`Ledger.fence`, the
writer, `Ledger.checkpoint`), so after a kill of either process at any instant the ledger's
progress is exactly the records committed: resume skips those and redoes at most the batch that
was in flight. Between batches it looks at `termination.requested`; when set, it stops right
after the commit and raises `Interrupted`, so no committed work is ever redone.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from agency_os_spot import settings
from agency_os_spot.abn.parse import Record, RecordRange, Reject, fast_fields, iter_raw_blocks, parse_record
from agency_os_spot.abn.rows import Batch, copy_from_fields, copy_lines, sqlite_rows
from agency_os_spot.abn.sources import JOB_TYPE, FileJob, open_xml
from agency_os_spot.runtime.termination import Interrupted, Termination, termination

if TYPE_CHECKING:
    # The parser processes run this module: they import neither SQLAlchemy nor a database driver
    # (that halves their start-up, paid by one or two processes per file); the writer side imports
    # agency_os_spot.abn.store when it ingests.
    from agency_os_spot.abn.store import Counts
    from agency_os_spot.runtime.ledger import Ledger

# Chosen from `make bench` (README "Performance"): into PostgreSQL 45k/s at 100 records per
# transaction, 67k/s at 1,000, 81k/s at 10,000; a hard kill undoes at most one interval (~0.12 s of
# ingest at 10,000), a SIGTERM nothing. Larger intervals add little rate and more memory per batch.
DEFAULT_CHECKPOINT_EVERY = 10_000
_FRAME = struct.Struct("!Q")


@dataclass
class Progress:
    """What a job has committed so far (the ledger state of an abn_file job)."""

    records: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Progress:
        return cls(**{k: int(state.get(k, 0)) for k in ("records", "inserted", "updated", "unchanged", "rejected")})

    def plus(self, batch: Batch, counts: Counts) -> Progress:
        return Progress(
            records=self.records + batch.records,
            inserted=self.inserted + counts.inserted,
            updated=self.updated + counts.updated,
            unchanged=self.unchanged + counts.unchanged,
            rejected=self.rejected + counts.rejected,
        )

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


# -- producing batches (the parser side) -----------------------------------------------------------


def produce_batches(
    job: FileJob,
    skip: int,
    batch_size: int,
    fmt: str,
    cache_dir: Path | None = None,
    stride: int = 1,
    slot: int = 0,
) -> Iterator[Batch]:
    """Parse the job's records from record `skip` of the file on (an index in the whole file), in
    batches of `batch_size` records, formatted for the writer: COPY text (fmt "copy", PostgreSQL)
    or parameter rows (fmt "rows", SQLite). A job of a byte range reads only its range (its first
    record's index is counted on the way there).

    With `stride` parsers on one file, this one parses batches number slot, slot+stride, ... and
    only cuts the records of the others out of the stream (cheap) without parsing them."""
    fast: list[tuple] = []  # fast-path field tuples (copy)
    fast_index: list[int] = []  # their record indices in the file
    records: list[Record] = []  # full-path records (copy) or every record (rows)
    rejects: list[tuple[str, int, str | None, str]] = []

    def emit(first: int, end: int) -> Batch:
        # PostgreSQL sorts out duplicate ABNs within a batch in SQL; SQLite's writer needs them gone.
        superseded = _drop_superseded(fast, records) if fmt == "rows" else 0
        batch = Batch(
            first=first, end=end, valid=len(fast) + len(records), superseded=superseded, rejects=list(rejects)
        )
        if fmt == "copy":
            batch.copy_data = copy_from_fields(fast, job.name) + copy_lines(records, job.name)
            batch.line_index = fast_index + [rec.index for rec in records]
        else:
            batch.rows = sqlite_rows(records, job.name)
            batch.line_index = [rec.index for rec in records]
        fast.clear()
        fast_index.clear()
        records.clear()
        rejects.clear()
        return batch

    pending: int | None = None  # number of the own batch being filled
    with open_xml(job, cache_dir) as stream:
        index, blocks = _record_blocks(job, stream)  # index: of the first record of the block
        skip = max(skip, index)
        for block in blocks:
            size, pos = len(block), 0
            while pos < size:
                if index + pos < skip:
                    pos = min(size, skip - index)
                    continue
                number = (index + pos - skip) // batch_size
                batch_end = skip + (number + 1) * batch_size  # index after the batch's last record
                span_end = min(size, batch_end - index)
                if number % stride == slot:  # ours: parse; the others' records are only counted
                    pending = number
                    for at in range(pos, span_end):
                        raw = block[at]
                        fields = fast_fields(raw) if fmt == "copy" else None
                        if fields is not None:
                            fast.append(fields)
                            fast_index.append(index + at)
                            continue
                        item = parse_record(index + at, raw)
                        if isinstance(item, Reject):
                            rejects.append((job.name, index + at, item.abn, item.reason))
                        else:
                            records.append(item)
                    if index + span_end == batch_end:
                        yield emit(batch_end - batch_size, batch_end)
                        pending = None
                pos = span_end
            index += size
    if pending is not None:
        yield emit(skip + pending * batch_size, index)


def _record_blocks(job: FileJob, stream: IO[bytes]) -> tuple[int, Iterator[list[bytes]]]:
    """(the index in the file of the job's first record, the blocks of the job's records)."""
    if job.whole_file:
        return 0, iter_raw_blocks(stream)
    part = RecordRange(stream, job.byte_start, job.byte_end)
    return part.first_index, iter_raw_blocks(part, head=part.head, tail=part.tail)


def _drop_superseded(fast: list[tuple], records: list[Record]) -> int:
    """Keep one version per ABN within a batch (the newest; the last of equals): the upsert
    then never meets the same key twice. Returns how many were dropped (they count as unchanged).
    The extract holds each ABN once, so this almost never drops anything."""
    seen: dict[bytes, tuple[bytes, int, int]] = {}
    dropped: set[tuple[int, int]] = set()
    for which, items, key, when in ((0, fast, 0, 15), (1, records, 0, 15)):
        for pos, item in enumerate(items):
            abn = item[key] if which == 0 else item[key].encode()
            updated = item[when] if which == 0 else item[when].replace("-", "").encode()
            previous = seen.get(abn)
            if previous is None:
                seen[abn] = (updated, which, pos)
            elif updated >= previous[0]:
                dropped.add(previous[1:])
                seen[abn] = (updated, which, pos)
            else:
                dropped.add((which, pos))
    if not dropped:
        return 0
    fast[:] = [f for pos, f in enumerate(fast) if (0, pos) not in dropped]
    records[:] = [r for pos, r in enumerate(records) if (1, pos) not in dropped]
    return len(dropped)


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the parent dies (a hard-killed ingest leaves no orphan parser)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _producer_main(spec: dict[str, Any]) -> int:
    # The owner of the transaction decides when to stop; termination signals are its business.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    job = FileJob(**spec["job"])
    cache_dir = Path(spec["cache_dir"]) if spec.get("cache_dir") else None
    # A writer thread sends frames while this one parses the next batch (writes release the GIL).
    outbox: queue.Queue[Any] = queue.Queue(maxsize=1)
    writer = threading.Thread(target=_send_frames, args=(outbox, sys.stdout.buffer), daemon=True)
    writer.start()
    status = 0
    try:
        batches = produce_batches(
            job, spec["skip"], spec["batch_size"], spec["fmt"], cache_dir, spec.get("stride", 1), spec.get("slot", 0)
        )
        for batch in batches:
            outbox.put(batch)
        outbox.put(None)
    except Exception as exc:
        outbox.put({"error": f"{type(exc).__name__}: {exc}"})
        status = 1
    writer.join()
    return status


def _send_frames(outbox: queue.Queue, out: IO[bytes]) -> None:
    while True:
        obj = outbox.get()
        try:
            _write_frame(out, obj)
        except BrokenPipeError:  # the owner stopped reading (it is done, or terminating)
            os._exit(0)
        if obj is None or isinstance(obj, dict):
            return


def _write_frame(out: IO[bytes], obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_FRAME.pack(len(data)))
    out.write(data)
    out.flush()


def _read_exact(stream: IO[bytes], size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            raise EOFError("parser process ended without finishing (killed?)")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


class ProducerError(RuntimeError):
    """The parser process failed (bad file, unreadable source)."""


@contextlib.contextmanager
def parser_process(
    job: FileJob, skip: int, batch_size: int, fmt: str, cache_dir: Path | None = None, parsers: int = 1
) -> Iterator[Iterator[Batch]]:
    """Run produce_batches in `parsers` helper processes (batch n is parsed by helper n % parsers)
    and yield an iterator over the batches, in file order."""
    procs = []
    for slot in range(parsers):
        spec = {
            "job": job.__dict__,
            "skip": skip,
            "batch_size": batch_size,
            "fmt": fmt,
            "cache_dir": str(cache_dir) if cache_dir else None,
            "stride": parsers,
            "slot": slot,
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "agency_os_spot.abn.pipeline", "produce", json.dumps(spec)],
                stdout=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                bufsize=1 << 20,
            )
        )

    def frame(proc: subprocess.Popen) -> Any:
        size = _FRAME.unpack(_read_exact(proc.stdout, _FRAME.size))[0]
        return pickle.loads(_read_exact(proc.stdout, size))  # noqa: S301  (our own child process)

    def read_ahead(inbox: queue.Queue) -> None:
        # Reads frames in file order while the owner writes the previous batch (reads release the GIL).
        try:
            for number in itertools.count():
                obj = frame(procs[number % parsers])
                inbox.put(obj)
                if obj is None or isinstance(obj, dict):
                    return
        except (EOFError, OSError, ValueError) as exc:
            inbox.put(exc)

    inbox: queue.Queue[Any] = queue.Queue(maxsize=2)
    threading.Thread(target=read_ahead, args=(inbox,), daemon=True).start()

    def frames() -> Iterator[Batch]:
        while True:
            obj = inbox.get()
            if obj is None:  # the file ended
                return
            if isinstance(obj, BaseException):
                raise obj
            if isinstance(obj, dict):
                raise ProducerError(obj["error"])
            yield obj

    try:
        yield frames()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            proc.wait()


# -- ingesting one file (the transaction side) -----------------------------------------------------


# Below this size a file gets one parser process: a second one's start-up and its cutting of the
# whole file cost more than it saves (measured 2026-12-07 on 2 cores, files of 25k records, 17 MB:
# 42k records/s with one parser against 32k with two; with 200k records, 143 MB, two can be faster).
SMALL_FILE_BYTES = 64 << 20


def default_parsers(job: FileJob) -> int:
    """Two parser processes for a file on disk (each reads it, parses every other batch: parsing
    is what limits the rate), one for a file or range smaller than SMALL_FILE_BYTES; one for a streamed URL
    or a generated fixture, read only once. AGENCY_OS_PARSERS overrides it."""
    if (parsers := settings.current().parsers) is not None:
        return parsers
    streamed = job.source.startswith("fixture://") or (
        job.source.startswith(("http://", "https://")) and job.member is None
    )
    if streamed:
        return 1
    if job.byte_end is not None and job.byte_end - job.byte_start < SMALL_FILE_BYTES:
        return 1
    if job.member is None:
        with contextlib.suppress(OSError):
            if Path(job.source).stat().st_size - job.byte_start < SMALL_FILE_BYTES:
                return 1
    return 2


def ingest_file(
    job: FileJob,
    ledger: Ledger,
    *,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    owner: str | None = None,
    term: Termination = termination,
    parallel: bool = True,
    parsers: int | None = None,
    cache_dir: Path | None = None,
    on_batch: Callable[[FileJob, Batch], None] | None = None,
    after_commit: Callable[[FileJob, Batch], None] | None = None,
    timings: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Ingest one file into `abn_entity`/`abn_reject` of the ledger's database; resumable.

    Returns the job's result (also stored in the ledger). A job already complete returns its
    stored result without touching the file. Raises `Interrupted` (after the commit) when
    termination is requested between batches. With `timings`, adds to its "wait_s" the wall
    seconds spent waiting for parsed batches and to its "write_s" those spent in the write
    transactions (COPY/upsert, checkpoint, commit: the database's share included).
    """
    if checkpoint_every < 1:
        raise ValueError("checkpoint_every must be >= 1")
    from agency_os_spot.abn.store import PostgresWriter, SqliteWriter  # noqa: PLC0415  (not in the parser processes)

    writer = PostgresWriter() if ledger.dialect == "postgresql" else SqliteWriter()
    lease = ledger.acquire(job.id, JOB_TYPE, owner)
    if lease.complete:
        return dict(lease.result or {}, skipped=True)
    if term.requested:  # going away: do not start a download or a parse that could not finish
        ledger.release(lease)
        raise Interrupted(job.id, lease.progress)
    done = Progress.from_state(lease.state)
    started = time.monotonic()
    records_this_run = 0
    source = (
        parser_process(job, lease.progress, checkpoint_every, writer.format, cache_dir, parsers or default_parsers(job))
        if parallel
        else contextlib.nullcontext(produce_batches(job, lease.progress, checkpoint_every, writer.format, cache_dir))
    )
    wait_s = write_s = 0.0
    with source as batches:
        clock = time.monotonic()
        for batch in batches:
            ready = time.monotonic()
            wait_s += ready - clock
            if on_batch is not None:
                on_batch(job, batch)  # out of band, before the work: how much a kill can make us redo
            with ledger.transaction() as conn:
                ledger.fence(conn, lease)
                counts = writer.write(conn, batch)
                after = done.plus(batch, counts)
                ledger.checkpoint(conn, lease, batch.end, after.as_dict())
            clock = time.monotonic()
            write_s += clock - ready
            done = after
            records_this_run += batch.records
            if after_commit is not None:
                after_commit(job, batch)
            if term.requested:
                _add_timings(timings, wait_s, write_s)
                ledger.release(lease)  # pending again, progress kept: the next holder resumes here
                raise Interrupted(job.id, batch.end)
    _add_timings(timings, wait_s, write_s)
    result = {
        "job_id": job.id,
        "file": job.name,
        "bytes": [job.byte_start, job.byte_end],
        **done.as_dict(),
        "records_this_run": records_this_run,
        "seconds": round(time.monotonic() - started, 3),
    }
    ledger.complete(lease, result)
    return result


def _add_timings(timings: dict[str, float] | None, wait_s: float, write_s: float) -> None:
    if timings is not None:
        timings["wait_s"] = timings.get("wait_s", 0.0) + wait_s
        timings["write_s"] = timings.get("write_s", 0.0) + write_s


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "produce":
        return _producer_main(json.loads(argv[1]))
    print(
        "usage: python -m agency_os_spot.abn.pipeline produce SPEC_JSON  (internal: the parser process)",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
