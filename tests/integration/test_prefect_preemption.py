"""Preemption under a real Prefect server and real process workers.

The drain program (what the worker unit runs as ExecStop) stops a worker whose flow run is
mid-file: the run commits its checkpoint and ends AwaitingRetry (not Crashed, not Running);
another worker picks it up and finishes from the checkpoint, redoing nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from agency_os_spot.catalog import load_catalog
from agency_os_spot.deploy import bulk_base_job_template, deployment_body
from agency_os_spot.node.drain import drain
from agency_os_spot.runtime.ledger import normalize_url
from tests.support.prefect_harness import Prefect, prefect_server, start_worker, stop_worker
from tests.support.services import redis_server

POOL, QUEUE = "bulk-processing", "bulk"
SOURCE = "fixture://abn?records=60000&files=1&seed=41&bad_every=500"
RECORDS, BAD = 60_000, 120


@pytest.fixture(scope="module")
def prefect() -> Iterator[Prefect]:
    with prefect_server() as api:
        client = Prefect(api)
        client.create_pool(POOL, bulk_base_job_template())
        yield client


def _ledger(database_url: str) -> tuple[str, int, dict | None]:
    engine = sa.create_engine(normalize_url(database_url))
    try:
        with engine.connect() as conn:
            row = conn.exec_driver_sql("SELECT status, progress, result FROM job_ledger").first()
    except sa.exc.SQLAlchemyError:
        row = None
    finally:
        engine.dispose()
    return (row[0], row[1], row[2]) if row else ("none", 0, None)


def test_drained_worker_reschedules_the_run_and_another_finishes_it_from_the_checkpoint(
    prefect, postgres_url, tmp_path
):
    spec = load_catalog().get("abn_bulk_ingestion")
    deployment = prefect.create_deployment(deployment_body(spec, work_pool=POOL, work_queue=QUEUE), spec.name)
    run = prefect.run(deployment, {"sources": [SOURCE], "database_url": postgres_url, "checkpoint_every": 40})
    first = start_worker(prefect, POOL, QUEUE, "node-a", tmp_path / "node-a.log")
    try:
        deadline = time.monotonic() + 120
        while _ledger(postgres_url)[1] < 2_000:
            assert time.monotonic() < deadline, (tmp_path / "node-a.log").read_text()[-3000:]
            time.sleep(0.2)
        report = drain(first.pid, timeout=60)
        first.wait(timeout=30)
    finally:
        stop_worker(first)
    assert report["result"] == "drained" and len(report["flow_runs"]) == 1, report
    state_type, state_name = prefect.state(run)
    assert (state_type, state_name) == ("SCHEDULED", "AwaitingRetry"), (tmp_path / "node-a.log").read_text()[-3000:]
    status, checkpoint, _ = _ledger(postgres_url)
    assert status == "pending", prefect.logs(run)  # the flow saw the termination, committed, released the job
    assert 0 < checkpoint < RECORDS

    second = start_worker(prefect, POOL, QUEUE, "node-b", tmp_path / "node-b.log")
    try:
        prefect.wait_for(run, {"Completed"}, timeout=180)
    finally:
        stop_worker(second)
    status, progress, result = _ledger(postgres_url)
    assert status == "complete" and progress == RECORDS
    assert result["records_this_run"] == RECORDS - checkpoint  # resumed at the checkpoint: nothing redone
    assert (result["inserted"], result["rejected"], result["updated"], result["unchanged"]) == (
        RECORDS - BAD,
        BAD,
        0,
        0,
    )
    assert prefect.flow_run(run)["run_count"] == 2


def test_a_run_on_a_node_without_its_settings_fails_before_any_work_and_is_not_retried(prefect, tmp_path):
    spec = load_catalog().get("abn_bulk_ingestion")
    deployment = prefect.create_deployment(deployment_body(spec, work_pool=POOL, work_queue=QUEUE), spec.name)
    unset = prefect.run(deployment, {"sources": [SOURCE]})
    relative = prefect.run(deployment, {"sources": [SOURCE], "database_url": "sqlite:///leads.db"})
    secret = prefect.run(deployment, {"sources": [SOURCE], "database_url": "postgresql://u:hunter2@127.0.0.1:9/x"})
    # a node whose configuration gives no database (the worker's environment has none)
    node = start_worker(prefect, POOL, QUEUE, "bare-node", tmp_path / "bare-node.log",
                        AGENCY_OS_DATABASE_URL="", AGENCY_OS_REDIS_URL="")  # fmt: skip
    try:
        for run in (unset, relative, secret):
            prefect.wait_for(run, {"Failed"}, timeout=180)
    finally:
        stop_worker(node)
    expected = {
        unset: "AGENCY_OS_DATABASE_URL is not set on this node",
        relative: "is a relative or in-memory SQLite path",
        secret: "parameter database_url carries a password",
    }
    for run, words in expected.items():
        state = prefect.flow_run(run)
        assert words in state["state"]["message"], state["state"]["message"]
        assert state["run_count"] == 1  # retries cannot help: the failure is final at once
        assert "jobs to ingest" not in prefect.logs(run)  # nothing was planned, let alone written
    assert not list(tmp_path.rglob("*.db"))


def test_no_password_or_key_reaches_prefects_stored_state(prefect, postgres_admin_url, postgres_url, tmp_path):
    """An ingestion with a helper, on nodes whose database, Redis and Prefect API key carry secrets:
    every flow run's parameters, deployment, variable, work pool and log on the server is free of them."""
    db_password, redis_password, api_key = "Pg-Secret-7731", "Redis-Secret-4410", "pnu_LeakCheck0123456789abcdef"
    admin = sa.create_engine(normalize_url(postgres_admin_url), isolation_level="AUTOCOMMIT")
    database = postgres_url.rsplit("/", 1)[1]
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE leakcheck LOGIN PASSWORD '{db_password}'")
        conn.exec_driver_sql(f"ALTER DATABASE {database} OWNER TO leakcheck")
    admin.dispose()
    node_database = postgres_url.replace("postgresql://postgres@", f"postgresql://leakcheck:{db_password}@")
    spec, helper = load_catalog().get("abn_bulk_ingestion"), load_catalog().get("bulk_worker")
    deployment = prefect.create_deployment(deployment_body(spec, work_pool=POOL, work_queue=QUEUE), spec.name)
    prefect.create_deployment(deployment_body(helper, work_pool=POOL, work_queue=QUEUE), helper.name)
    source = "fixture://abn?records=20000&files=4&seed=43&bad_every=500"
    with redis_server(password=redis_password) as redis_url:
        node = {"AGENCY_OS_DATABASE_URL": node_database, "AGENCY_OS_REDIS_URL": redis_url, "PREFECT_API_KEY": api_key}
        run = prefect.run(deployment, {"sources": [source], "helpers": 1, "checkpoint_every": 1000})
        workers = [start_worker(prefect, POOL, QUEUE, f"leak-{n}", tmp_path / f"leak-{n}.log", **node) for n in (1, 2)]
        try:
            prefect.wait_for(run, {"Completed"}, timeout=300)
            deadline = time.monotonic() + 120
            while any(
                r["state_type"] not in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for r in _helpers(prefect, run)
            ):
                assert time.monotonic() < deadline, _helpers(prefect, run)
                time.sleep(1)
        finally:
            for worker in workers:
                stop_worker(worker)
    assert _helpers(prefect, run), "the run started a helper"
    stored = {
        path: prefect.http.post(path, json=body).raise_for_status().text
        for path, body in (
            ("/flow_runs/filter", {"limit": 200}),
            ("/deployments/filter", {"limit": 200}),
            ("/variables/filter", {"limit": 200}),
            ("/work_pools/filter", {"limit": 200}),
            ("/logs/filter", {"limit": 200}),
            ("/block_documents/filter", {"include_secrets": True}),
        )
    }
    logs, offset = [], 0
    while page := prefect.http.post("/logs/filter", json={"limit": 200, "offset": offset}).raise_for_status().json():
        logs += [entry["message"] for entry in page]
        offset += len(page)
    stored["logs"] = "\n".join(logs)
    assert "jobs to ingest" in stored["logs"]  # the scan read the runs' logs
    for secret in (db_password, redis_password, api_key):
        leaked = [path for path, text in stored.items() if secret in text]
        assert not leaked, f"{secret} found in {leaked}"


def _helpers(prefect: Prefect, parent: str) -> list[dict]:
    tags = {"all_": [f"helper-of:{parent}"]}
    return prefect.http.post("/flow_runs/filter", json={"flow_runs": {"tags": tags}}).raise_for_status().json()
