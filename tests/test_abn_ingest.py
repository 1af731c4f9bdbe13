"""abn_bulk_ingestion end to end on real SQLite and PostgreSQL: counts, upsert rules, and resume
after SIGKILL and SIGTERM with exact final counts."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from flows.abn.pipeline import ingest_file
from flows.abn.sources import plan
from flows.abn.store import abn_entity, abn_reject
from flows.abn_bulk_ingestion import open_database
from flows.abn_fixture import generate
from flows.runtime.ledger import Ledger, normalize_url

from services import ledger_progress

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "flows.abn_bulk_ingestion", *args],
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
    assert last_json(stdout)["inserted"] == manifest["valid"]
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
        kind = r["reason"].split(" '")[0]
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
    from flows.runtime.ledger import Fenced  # noqa: PLC0415

    with pytest.raises(Fenced), ledger.transaction() as conn:
        ledger.fence(conn, stale)
    assert ledger.get(job.id).owner == "node-b"
