"""abn_bulk_ingestion end to end on real SQLite and PostgreSQL: counts, upsert rules, and resume
after SIGKILL and SIGTERM with exact final counts."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from agency_os_spot.abn.checksum import abn_from_base
from agency_os_spot.abn.cli import open_database
from agency_os_spot.abn.fixture import BAD_KINDS, generate
from agency_os_spot.abn.parse import Record
from agency_os_spot.abn.pipeline import SMALL_FILE_BYTES, default_parsers, ingest_file
from agency_os_spot.abn.sources import FileJob, plan
from agency_os_spot.abn.store import (
    Batch,
    PostgresWriter,
    abn_entity,
    abn_reject,
    copy_lines,
    create_tables,
    sqlite_rows,
    writer_for,
)
from agency_os_spot.runtime.ledger import Ledger, normalize_url
from agency_os_spot.runtime.retry import call_with_retries
from agency_os_spot.runtime.termination import Interrupted, Termination
from tests.support import ROOT
from tests.support.services import ledger_progress


def cli(*args: str, **kwargs) -> subprocess.Popen:
    # Two parser processes per file, as on the real extract's large files (these small test files
    # would get one by default): the kill and resume tests cover the split between them.
    kwargs.setdefault("env", {**os.environ, "AGENCY_OS_PARSERS": "2"})
    return subprocess.Popen(
        [sys.executable, "-m", "agency_os_spot.cli", "ingest-abn", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def table_counts(url: str) -> dict:
    engine = sa.create_engine(normalize_url(url))
    with engine.connect() as conn:
        result = {
            "rows": conn.execute(sa.select(sa.func.count()).select_from(abn_entity)).scalar_one(),
            "distinct": conn.execute(sa.select(sa.func.count(sa.distinct(abn_entity.c.abn)))).scalar_one(),
            "rejects": conn.execute(sa.select(sa.func.count()).select_from(abn_reject)).scalar_one(),
        }
    engine.dispose()
    return result


@pytest.fixture(scope="module")
def extract(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("extract")
    return out, generate(40_000, 21, out, files=2, bad_every=101)


def test_cli_ingests_counts_and_reingest_changes_nothing(database_url, extract):
    out, manifest = extract
    sources = [str(out / name) for name in manifest["sources"]]
    first = cli(*sources, "--database-url", database_url, "--checkpoint-every", "5000")
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    summary = last_json(stdout)
    assert summary["records"] == manifest["records"]
    assert summary["inserted"] == manifest["valid"]
    assert summary["rejected"] == manifest["bad"]
    assert (summary["updated"], summary["unchanged"]) == (0, 0)
    assert summary["records_per_s"] > 0 and 0 < summary["peak_rss_mb"] <= 256
    assert summary["already_complete"] is False and summary["records_this_run"] == manifest["records"]
    assert f"job 1/{len(sources)}" in stderr  # progress as it goes
    assert set(summary) >= {
        "records",
        "inserted",
        "updated",
        "unchanged",
        "rejected",
        "seconds",
        "records_per_s",
        "peak_rss_mb",
    }
    assert table_counts(database_url) == {
        "rows": manifest["valid"],
        "distinct": manifest["valid"],
        "rejects": manifest["bad"],
    }

    # The same files again (a new run over the same extract): the ledger skips completed files.
    again = cli(*sources, "--database-url", database_url)
    stdout, _ = again.communicate(timeout=300)
    assert again.returncode == 0
    rerun = last_json(stdout)
    assert rerun["inserted"] == manifest["valid"]  # the ledger's totals ...
    assert rerun["already_complete"] is True and rerun["records_this_run"] == 0  # ... and nothing redone
    assert table_counts(database_url)["rows"] == manifest["valid"]


def test_upsert_never_lets_an_older_record_overwrite_a_newer_one(database_url, tmp_path):
    base = tmp_path / "week1"
    generate(500, 5, base, files=1)
    xml = (base / "20260624_Public01.xml").read_bytes()
    # week 2: same ABNs, every record newer and renamed; week 0: every record older
    newer = tmp_path / "20260701_Public01.xml"
    newer.write_bytes(
        xml.replace(b'recordLastUpdatedDate="20', b'recordLastUpdatedDate="21').replace(b"PTY LTD", b"PTY LIMITED")
    )
    older = tmp_path / "20260617_Public01.xml"
    older.write_bytes(xml.replace(b'recordLastUpdatedDate="20', b'recordLastUpdatedDate="19').replace(b"PTY", b"OLD"))
    same_again = tmp_path / "20260624_Public01.xml"
    same_again.write_bytes(xml)

    ledger = open_database(database_url)
    run = lambda path: ingest_file(plan([str(path)])[0], ledger, checkpoint_every=120, parallel=False)  # noqa: E731
    first = run(base / "20260624_Public01.xml")
    assert (first["inserted"], first["updated"], first["unchanged"]) == (500, 0, 0)
    assert run(same_again)["unchanged"] == 500  # identical content under another job id: nothing changes
    changed = run(newer)
    assert (changed["inserted"], changed["updated"], changed["unchanged"]) == (0, 500, 0)
    stale = run(older)
    assert (stale["inserted"], stale["updated"], stale["unchanged"]) == (0, 0, 500)
    with ledger.engine.connect() as conn:
        names = conn.execute(sa.select(abn_entity.c.entity_name, abn_entity.c.source_file)).all()
    assert not any(" OLD " in name for name, _ in names)
    assert {source for _, source in names} == {"20260701_Public01.xml"}


def test_rejects_land_in_abn_reject_with_reasons(sqlite_url, tmp_path):
    manifest = generate(600, 9, tmp_path, files=1, bad_every=10)
    ledger = open_database(sqlite_url)
    ingest_file(plan([str(tmp_path / manifest["sources"][0])])[0], ledger, parallel=False)
    with ledger.engine.connect() as conn:
        rows = conn.execute(sa.select(abn_reject)).mappings().all()
    assert len(rows) == manifest["bad"] == 60
    assert {r["source_file"] for r in rows} == {manifest["sources"][0]}
    reasons = {}
    for r in rows:
        kind = next(k for k in BAD_KINDS if r["reason"].startswith(k))
        reasons[kind] = reasons.get(kind, 0) + 1
    assert reasons == manifest["files"][0]["bad_reasons"]
    assert all(r["record_index"] % 10 == 9 for r in rows)  # every 10th record (0-based index 9, 19, ...)
    checksum = [r for r in rows if r["reason"] == "invalid ABN checksum"]
    assert checksum and all(r["abn"] and len(r["abn"]) == 11 for r in checksum)


def test_zip_sources_split_into_one_job_per_member(sqlite_url, tmp_path):
    manifest = generate(900, 4, tmp_path, files=3, use_zip=True, bad_every=50)
    jobs = plan([str(tmp_path / s) for s in manifest["sources"]])
    assert [j.name for j in jobs] == [f["name"] for f in manifest["files"]]
    assert len({j.id for j in jobs}) == 3
    proc = cli(*[str(tmp_path / s) for s in manifest["sources"]], "--database-url", sqlite_url)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert last_json(stdout)["inserted"] == manifest["valid"]


def _wait_for_progress(url: str, proc: subprocess.Popen, minimum: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = ledger_progress(url)
        if progress >= minimum:
            return progress
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("no checkpoint committed in time")


def _logged_end(log: Path) -> int:
    """The furthest record any attempt got to (written just before each commit)."""
    ends: dict[str, int] = {}
    for line in log.read_text().splitlines():
        job, _first, end = line.split()
        ends[job] = max(ends.get(job, 0), int(end))
    return sum(ends.values())


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_kill_mid_file_then_rerun_gives_exact_counts(database_url, extract, tmp_path, how):
    out, manifest = extract
    sources = [str(out / name) for name in manifest["sources"]]
    log = tmp_path / "progress.log"
    args = (*sources, "--database-url", database_url, "--checkpoint-every", "250", "--progress-log", str(log))
    proc = cli(*args)
    _wait_for_progress(database_url, proc, 2_000)
    proc.send_signal(getattr(signal, how))
    stdout, stderr = proc.communicate(timeout=60)
    committed = ledger_progress(database_url)
    attempted = _logged_end(log)
    if how == "SIGTERM":
        assert proc.returncode == 143, stderr
        interrupted = last_json(stdout)
        assert interrupted["interrupted"] is True
        assert interrupted["records"] == committed  # the summary is what the ledger committed
        assert attempted == committed  # nothing processed beyond the last checkpoint: 0 redone
    else:
        assert proc.returncode == -signal.SIGKILL
        assert 0 <= attempted - committed <= 250  # at most one checkpoint interval redone
    assert 0 < committed < manifest["records"]
    rerun = cli(*args)
    stdout, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    summary = last_json(stdout)
    assert summary["records"] == manifest["records"]
    assert summary["inserted"] == manifest["valid"]
    assert summary["rejected"] == manifest["bad"]
    assert summary["updated"] == summary["unchanged"] == 0
    assert table_counts(database_url) == {
        "rows": manifest["valid"],
        "distinct": manifest["valid"],
        "rejects": manifest["bad"],
    }


def test_parser_process_is_not_left_behind_after_sigkill(sqlite_url, extract):
    out, manifest = extract
    proc = cli(str(out / manifest["sources"][0]), "--database-url", sqlite_url, "--checkpoint-every", "200")
    _wait_for_progress(sqlite_url, proc, 400)
    children = subprocess.run(
        ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert children, "the parser runs in a helper process"
    proc.kill()
    proc.communicate()
    time.sleep(0.5)
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_a_stale_worker_cannot_commit_over_its_successor(sqlite_url, tmp_path):
    """Fencing: a worker presumed dead (its job redelivered) whose transaction comes late is rolled back."""
    manifest = generate(300, 2, tmp_path, files=1)
    job = plan([str(tmp_path / manifest["sources"][0])])[0]
    ledger = open_database(sqlite_url)
    stale = ledger.acquire(job.id, "abn_file", owner="node-a")
    successor = Ledger(ledger.engine)
    ingest_file(job, successor, checkpoint_every=100, parallel=False, owner="node-b")
    from agency_os_spot.runtime.ledger import Fenced  # noqa: PLC0415

    with pytest.raises(Fenced), ledger.transaction() as conn:
        ledger.fence(conn, stale)
    assert ledger.get(job.id).owner == "node-b"


# -- field limits: one bad record never costs a batch -----------------------------------------------


def _abr(base: int, *, state: str = "NSW", postcode: str = "2000", given: str = "JO", asic: str | None = None) -> str:
    asic_xml = f'<ASICNumber ASICNumberType="undetermined">{asic}</ASICNumber>' if asic is not None else ""
    return (
        f'<ABR recordLastUpdatedDate="20240412" replaced="N"><ABN status="ACT" ABNStatusFromDate="19991101">'
        f"{abn_from_base(base)}</ABN><EntityType><EntityTypeInd>IND</EntityTypeInd>"
        "<EntityTypeText>Individual/Sole Trader</EntityTypeText></EntityType>"
        f'<LegalEntity><IndividualName type="LGL"><GivenName>{given}</GivenName><FamilyName>NGUYEN</FamilyName>'
        f"</IndividualName><BusinessAddress><AddressDetails><State>{state}</State><Postcode>{postcode}</Postcode>"
        f'</AddressDetails></BusinessAddress></LegalEntity>{asic_xml}<GST status="ACT" GSTStatusFromDate="20000701" />'
        "</ABR>"
    )


# (record, the reject reason or None for a legal record)
UNUSUAL = [
    (_abr(1, postcode="12345"), None),
    (_abr(2, postcode="P" * 50), None),
    (_abr(3, state="", postcode=""), None),
    (_abr(4, state="AAT", postcode="6798"), None),
    (_abr(5, asic="000123456"), None),
    (_abr(6, state="NSWX"), "State longer than 3 characters (4): 'NSWX'"),
    (_abr(7, postcode="P" * 51), f"Postcode longer than 50 characters (51): {'P' * 51!r}"),
    (_abr(8, given="J\x01O"), "control character in GivenName: 'J\\x01O'"),
    (_abr(9, given="J&#9;O"), "control character in GivenName: 'J\\tO'"),
    (_abr(10, asic="00012345X"), "ASICNumber is not up to 9 digits: '00012345X'"),
    (_abr(11), None),
]


def _unusual_extract(path: Path) -> Path:
    # Every other record on a line of its own (the published layout), the others run on (the compact
    # one): both parser paths and both COPY formatters see legal and bad values.
    head = '<?xml version="1.0"?>\n<Transfer error="none"><TransferInfo><FileSequenceNumber>1</FileSequenceNumber>'
    head += "<RecordCount>11</RecordCount><ExtractTime>2026-06-24T00:00:00</ExtractTime></TransferInfo>\n"
    body = "".join(("\n" if i % 2 else "") + r for i, (r, _) in enumerate(UNUSUAL))
    path.write_bytes((head + body + "\n</Transfer>").encode())
    return path


def _contents(url: str) -> tuple[list, list]:
    engine = sa.create_engine(normalize_url(url))
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(sa.select(abn_entity).order_by(abn_entity.c.abn))]
        rejects = [tuple(r) for r in conn.execute(sa.select(abn_reject).order_by(abn_reject.c.record_index))]
    engine.dispose()
    return rows, rejects


def test_unusual_and_bad_values_give_the_same_rows_and_rejects_on_postgresql_and_sqlite(
    sqlite_url, postgres_url, tmp_path
):
    source = _unusual_extract(tmp_path / "20260624_Public01.xml")
    results, contents = [], []
    for url, parallel in ((sqlite_url, False), (postgres_url, False), (sqlite_url, True)):
        ledger = open_database(url)
        results.append(ingest_file(plan([str(source)])[0], ledger, checkpoint_every=4, parallel=parallel))
        ledger.engine.dispose()
        contents.append(_contents(url))
    (rows, rejects), (pg_rows, pg_rejects), _ = contents
    assert pg_rows == rows and pg_rejects == rejects
    assert results[0]["rejected"] == results[1]["rejected"] == 5 and results[2]["skipped"]
    assert results[0]["inserted"] == results[1]["inserted"] == 6
    expected = [(i, r) for i, (_, r) in enumerate(UNUSUAL) if r]
    assert [(index, reason) for _, index, _, reason in rejects] == expected
    assert all(abn == abn_from_base(i + 1) for _, i, abn, _ in rejects)
    by_abn = {row[0]: row for row in rows}
    state_postcode = [(by_abn[abn_from_base(b)][8], by_abn[abn_from_base(b)][9]) for b in (1, 2, 3, 4)]
    assert state_postcode == [("NSW", "12345"), ("NSW", "P" * 50), (None, None), ("AAT", "6798")]
    assert by_abn[abn_from_base(5)][12] == "000123456"
    # through the parallel parser processes (the COPY format): the same again on PostgreSQL
    ledger = open_database(postgres_url)
    with ledger.engine.begin() as conn:
        conn.execute(abn_entity.delete())
        conn.execute(abn_reject.delete())
    job = plan([str(source)])[0]
    fresh = ingest_file(dataclasses.replace(job, id=job.id + ":again"), ledger, checkpoint_every=4, parallel=True)
    ledger.engine.dispose()
    assert (fresh["inserted"], fresh["rejected"]) == (6, 5)
    assert _contents(postgres_url) == (rows, rejects)


def _copy_batch(
    first: int, lines: list[tuple[int, str, str]], updated: str = "2024-01-01", nameless: int | None = None
) -> Batch:
    """A batch as the parser would send it (in both writers' formats), for (base, state, postcode)
    values the parser never lets through (to make the database refuse one); the record at position
    `nameless` without the name that abn_entity requires."""
    records = [
        Record(
            abn_from_base(b),
            "ACT",
            None,
            "PRV",
            None,
            None if i == nameless else f"CO {b}",
            None,
            None,
            state,
            postcode,
            None,
            None,
            None,
            None,
            "[]",
            updated,
            False,
            first + i,
        )
        for i, (b, state, postcode) in enumerate(lines)
    ]
    return Batch(
        first=first,
        end=first + len(records),
        valid=len(records),
        copy_data=copy_lines(records, "refused.xml"),
        rows=sqlite_rows(records, "refused.xml"),
        line_index=[r.index for r in records],
    )


def test_a_record_the_database_refuses_costs_only_itself(database_url):
    ledger = open_database(database_url)
    writer = writer_for(ledger.engine)
    values = [(b, "NSW", "2000") for b in range(200, 210)]
    with ledger.engine.begin() as conn:
        counts = writer.write(conn, _copy_batch(0, values, nameless=0))
    assert (counts.inserted, counts.updated, counts.unchanged, counts.rejected) == (9, 0, 0, 1)
    with ledger.engine.begin() as conn:  # the update path
        again = writer.write(conn, _copy_batch(10, values, updated="2025-01-01", nameless=7))
    assert (again.inserted, again.updated, again.unchanged, again.rejected) == (1, 8, 0, 1)
    rows, rejects = _contents(database_url)
    ledger.engine.dispose()
    assert len(rows) == 10
    assert [(r[1], r[2]) for r in rejects] == [(0, abn_from_base(200)), (17, abn_from_base(207))]
    assert all("entity_name" in r[3] and r[3].startswith("refused by ") for r in rejects), rejects


def test_a_batch_the_database_refuses_entirely_still_fails(database_url):
    """Not one bad record but a fault of the batch (here: no record has a name): the batch fails as
    a whole instead of rejecting every record."""
    ledger = open_database(database_url)
    writer = writer_for(ledger.engine)
    batch = _copy_batch(0, [(b, "NSW", "2000") for b in range(300, 304)])
    batch.copy_data = batch.copy_data.replace(b"\tCO 30", b"\t\\N\tCO 30")  # a column too many
    batch.rows = [(*row[:5], None, *row[6:]) for row in batch.rows]  # entity_name NULL
    with pytest.raises((psycopg.errors.DataError, sqlite3.IntegrityError)), ledger.engine.begin() as conn:
        writer.write(conn, batch)
    rows, rejects = _contents(database_url)
    ledger.engine.dispose()
    assert rows == rejects == []


def test_postgresql_refusing_one_record_rejects_only_that_record(postgres_url):
    ledger = open_database(postgres_url)
    values = [(b, "NSW", "2000") for b in range(100, 137)]
    values[23] = (123, "NSWXY", "2000")  # longer than varchar(3): PostgreSQL refuses it
    writer = PostgresWriter()
    with ledger.engine.begin() as conn:
        counts = writer.write(conn, _copy_batch(0, values))
    assert (counts.inserted, counts.updated, counts.unchanged, counts.rejected) == (36, 0, 0, 1)
    # the upsert path (the ABNs are there now) bisects the same way
    values[23], values[5] = (123, "VIC", "3000"), (105, "VIC", "3" * 51)
    with ledger.engine.begin() as conn:
        again = writer.write(conn, _copy_batch(100, values, updated="2025-01-01"))
    assert (again.inserted, again.updated, again.unchanged, again.rejected) == (1, 35, 0, 1)
    rows, rejects = _contents(postgres_url)
    ledger.engine.dispose()
    assert len(rows) == 37
    assert [(r[0], r[1], r[2]) for r in rejects] == [
        ("refused.xml", 23, abn_from_base(123)),
        ("refused.xml", 105, abn_from_base(105)),
    ]
    assert rejects[0][3] == "refused by PostgreSQL: value too long for type character varying(3) (column state)"
    assert rejects[1][3] == "refused by PostgreSQL: value too long for type character varying(50) (column postcode)"


def test_create_tables_widens_an_existing_narrow_postcode_column(postgres_url):
    ledger = open_database(postgres_url)
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE abn_entity ALTER COLUMN postcode TYPE varchar(4)")
    create_tables(ledger.engine)
    with ledger.engine.connect() as conn:
        width = conn.exec_driver_sql(
            "SELECT character_maximum_length FROM information_schema.columns "
            "WHERE table_name = 'abn_entity' AND column_name = 'postcode'"
        ).scalar_one()
    ledger.engine.dispose()
    assert width == 50


def test_a_lost_commit_behind_the_writer_s_back_is_redone_not_skipped(database_url, tmp_path):
    """PostgreSQL crash-restarted and lost the last (asynchronously committed) batch while the
    writer kept its progress in memory: its next checkpoint is refused (compare-and-set on the
    ledger's progress) and it resumes from the ledger's true checkpoint. Nothing is missing."""
    manifest = generate(5_000, 21, tmp_path, files=1, bad_every=97)
    [job] = plan([str(tmp_path / manifest["sources"][0])])
    ledger = open_database(database_url)
    seen: dict[str, object] = {}

    def lose_the_second_batch(_job, batch) -> None:
        with ledger.engine.begin() as conn:
            if "first" not in seen:  # after batch 1: remember what was committed
                seen["first"] = conn.execute(
                    sa.text("SELECT progress, state FROM job_ledger WHERE job_id = :j").columns(
                        progress=sa.BigInteger, state=sa.JSON
                    ),
                    {"j": job.id},
                ).one()
                seen["abns"] = {row[0] for row in conn.execute(sa.text("SELECT abn FROM abn_entity"))}
            elif "lost" not in seen:  # after batch 2: it vanishes, rows and checkpoint alike
                seen["lost"] = batch.end
                progress, state = seen["first"]
                kept = seen["abns"]
                stored = [row[0] for row in conn.execute(sa.text("SELECT abn FROM abn_entity"))]
                for abn in set(stored) - kept:
                    conn.execute(sa.text("DELETE FROM abn_entity WHERE abn = :a"), {"a": abn})
                conn.execute(sa.text("DELETE FROM abn_reject WHERE record_index >= :p"), {"p": progress})
                conn.execute(
                    sa.text("UPDATE job_ledger SET progress = :p, state = :s WHERE job_id = :j").bindparams(
                        sa.bindparam("s", type_=sa.JSON)
                    ),
                    {"p": progress, "s": state, "j": job.id},
                )

    result = call_with_retries(
        lambda: ingest_file(job, ledger, checkpoint_every=1_000, parallel=False, after_commit=lose_the_second_batch),
        Termination(),
        budget_s=30,
    )
    assert "lost" in seen
    counts = table_counts(database_url)
    assert counts == {"rows": manifest["valid"], "distinct": manifest["valid"], "rejects": manifest["bad"]}
    lease = ledger.get(job.id)
    assert lease.complete and lease.progress == manifest["records"] and result["records"] == manifest["records"]


def test_a_truncated_file_ends_the_command_with_one_line_that_says_what_to_do(sqlite_url, tmp_path):
    manifest = generate(3_000, 4, tmp_path, files=1)
    path = tmp_path / manifest["sources"][0]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])  # a download cut short
    proc = cli(str(path), "--database-url", sqlite_url, "--checkpoint-every", "500")
    _stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in stderr, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert (last.startswith("abn_bulk_ingestion: ") and "run the same command" in last) or "fetch" in last, last


def test_both_layouts_give_the_same_rows_and_rejects_on_the_fast_path(database_url, tmp_path, monkeypatch):
    # The same records in the compact layout and in the published one (one record per line): the
    # same rows and rejects, and the full (lxml) path sees only the bad records in either layout.
    from agency_os_spot.abn import parse  # noqa: PLC0415

    full_calls = []
    full = parse._full
    monkeypatch.setattr(parse, "_full", lambda index, raw: full_calls.append(index) or full(index, raw))
    ledger = open_database(database_url)
    contents, calls = {}, {}
    for layout in ("compact", "published"):
        manifest = generate(3000, 8, tmp_path / layout, files=1, bad_every=29, layout=layout)
        with ledger.engine.begin() as conn:
            conn.execute(abn_entity.delete())
            conn.execute(abn_reject.delete())
        job = plan([str(tmp_path / layout / manifest["sources"][0])])[0]
        full_calls.clear()
        result = ingest_file(dataclasses.replace(job, id=f"{job.id}:{layout}"), ledger, parallel=False)
        assert (result["inserted"], result["rejected"]) == (manifest["valid"], manifest["bad"])
        calls[layout] = len(full_calls)
        contents[layout] = _contents(database_url)
    ledger.engine.dispose()
    assert contents["published"] == contents["compact"]
    assert calls == {"compact": manifest["bad"], "published": manifest["bad"]}


def test_small_files_get_one_parser_process_large_ones_two(tmp_path, monkeypatch):
    monkeypatch.delenv("AGENCY_OS_PARSERS", raising=False)
    small, large = tmp_path / "20260624_Public01.xml", tmp_path / "20260624_Public02.xml"
    small.write_bytes(b'<Transfer error="none"></Transfer>')
    with large.open("wb") as fh:
        fh.truncate(SMALL_FILE_BYTES)  # sparse: the size is what counts
    assert [default_parsers(job) for job in plan([str(small), str(large)])] == [1, 2]
    monkeypatch.setenv("AGENCY_OS_PARSERS", "3")
    assert default_parsers(plan([str(small)])[0]) == 3


def test_one_or_two_parser_processes_store_the_same(database_url, extract):
    out, manifest = extract
    job = plan([str(out / manifest["sources"][0])])[0]
    ledger = open_database(database_url)
    contents, results = [], []
    for parsers in (1, 2):
        with ledger.engine.begin() as conn:
            conn.execute(abn_entity.delete())
            conn.execute(abn_reject.delete())
        fresh = dataclasses.replace(job, id=f"{job.id}:{parsers}")
        results.append(ingest_file(fresh, ledger, checkpoint_every=3000, parsers=parsers))
        contents.append(_contents(database_url))
    ledger.engine.dispose()
    assert contents[0] == contents[1]
    assert [(r["inserted"], r["rejected"]) for r in results] == [(len(contents[0][0]), len(contents[0][1]))] * 2


def test_a_handler_asked_to_stop_starts_no_download_and_gives_the_job_back(sqlite_url, tmp_path):
    term = Termination()
    term.request("drain")
    job = FileJob("abn:never", "https://127.0.0.1:9/never.xml", None, "never.xml", version='etag:"x"')
    ledger = open_database(sqlite_url)
    with pytest.raises(Interrupted):
        ingest_file(job, ledger, term=term)  # the URL is unreachable: reaching it would raise another error
    lease = ledger.get(job.id)
    assert (lease.status, lease.progress) == ("pending", 0)


def _rows_and_rejects(ledger: Ledger) -> tuple[list[tuple], list[tuple]]:
    with ledger.engine.connect() as conn:
        rows = conn.execute(sa.select(abn_entity.c.abn, abn_entity.c.entity_name).order_by(abn_entity.c.abn)).all()
        rejects = conn.execute(
            sa.select(abn_reject.c.source_file, abn_reject.c.record_index, abn_reject.c.reason).order_by(
                abn_reject.c.record_index
            )
        ).all()
    return [tuple(r) for r in rows], [tuple(r) for r in rejects]


@pytest.mark.parametrize("layout", ["compact", "published"])
def test_a_file_split_into_byte_ranges_stores_what_the_whole_file_stores(database_url, tmp_path, layout):
    manifest = generate(3000, 11, tmp_path / "x", files=1, bad_every=37, layout=layout)
    source = str(tmp_path / "x" / manifest["sources"][0])
    size = Path(source).stat().st_size
    jobs = plan([source], chunk_mib=(size / 5 + 1) / (1 << 20))
    assert len(jobs) == 5 and len({j.id for j in jobs}) == 5
    assert jobs[0].byte_start == 0 and jobs[-1].byte_end is None
    assert [j.byte_end for j in jobs[:-1]] == [j.byte_start for j in jobs[1:]]  # they tile the file
    ledger = open_database(database_url)
    # In any order, as workers would take them; one range interrupted after its first batch and resumed.
    term = Termination()
    with pytest.raises(Interrupted):
        ingest_file(jobs[2], ledger, checkpoint_every=100, after_commit=lambda *_: term.request("test"), term=term)
    results = [ingest_file(job, ledger, checkpoint_every=100) for job in (jobs[4], jobs[2], jobs[0], jobs[3], jobs[1])]
    assert sum(r["records"] for r in results) == 3000
    assert results[1]["records_this_run"] == results[1]["records"] - 100  # nothing redone after the interruption

    whole = open_database(f"sqlite:///{tmp_path / 'whole.db'}")
    [job] = plan([source])
    assert job.whole_file
    ingest_file(job, whole, checkpoint_every=100)
    assert _rows_and_rejects(ledger) == _rows_and_rejects(whole)
    rows, rejects = _rows_and_rejects(ledger)
    assert len(rows) == manifest["valid"] and len(rejects) == manifest["bad"]
    assert [index for _, index, _ in rejects] == list(range(36, 3000, 37))  # file-wide indices


def test_zip_members_and_urls_are_split_by_their_sizes(tmp_path):
    manifest = generate(2000, 5, tmp_path, files=2, use_zip=True)
    archive = str(tmp_path / manifest["sources"][0])
    with zipfile.ZipFile(archive) as zf:
        size = zf.getinfo(manifest["files"][0]["name"]).file_size
    jobs = plan([archive], chunk_mib=(size / 3 + 1) / (1 << 20))
    assert [j.member for j in jobs] == [manifest["files"][0]["name"]] * 3  # one member in each archive of 2 files
    assert jobs[-1].byte_end is None and jobs[1].byte_start == size // 3
    with pytest.raises(ValueError, match="chunk_mib"):
        plan([archive], chunk_mib=0)
