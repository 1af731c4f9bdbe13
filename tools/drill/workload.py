"""The work the drill gives the bulk pool: a synthetic ABN extract with injected bad records, served
over HTTP on the host loopback, and a run of the flow's deployment ingesting it.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import logging
import threading
from pathlib import Path
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from prefect.client.orchestration import SyncPrefectClient

from agency_os_spot.abn.fixture import generate
from agency_os_spot.abn.sources import plan
from agency_os_spot.catalog import FlowSpec
from tools.drill.config import Config

log = logging.getLogger(__name__)


def extract(config: Config, records: int) -> tuple[Path, dict[str, Any]]:
    """The extract's folder and manifest, generated once per size, files, bad records and seed, as
    the publisher ships it: XML files in two ZIP archives. The manifest's "jobs" is the number of
    jobs the flow plans from it (files split in chunks of `chunk_mib`)."""
    folder = config.data_dir / f"{records}-{config.files}-{config.bad_every}-{config.seed}-published-zip"
    manifest = folder / "manifest.json"
    if not manifest.exists():
        log.info(f"generating {records} records in {config.files} files into {folder}")
        generate(
            records,
            config.seed,
            folder,
            files=config.files,
            bad_every=config.bad_every,
            use_zip=True,
            layout="published",
        )
    loaded = json.loads(manifest.read_text())
    loaded["jobs"] = len(plan([str(folder / name) for name in loaded["sources"]], chunk_mib=config.chunk_mib))
    return folder, loaded


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def copyfile(self, source: Any, outputfile: Any) -> None:
        # A node killed mid-download closes the connection: expected in a drill.
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            super().copyfile(source, outputfile)


def serve(folder: Path) -> str:
    """The folder over HTTP on the host loopback, where every node can read it; its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def start_run(client: SyncPrefectClient, config: Config, spec: FlowSpec, sources: list[str]) -> UUID:
    """A run of the flow's deployment, which must be where the catalog places the flow."""
    deployment = client.read_deployment_by_name(f"{spec.name}/{spec.deployment_name}")
    if (deployment.work_pool_name, deployment.work_queue_name) != (spec.work_pool, spec.work_queue):
        raise SystemExit(
            f"{spec.name} runs on {deployment.work_pool_name}/{deployment.work_queue_name}, not on "
            f"{spec.work_pool}/{spec.work_queue}: ansible-playbook cutover.yml -e flow={spec.name}"
        )
    parameters = {
        "sources": sources,
        # without its password: parameters are stored and shown by Prefect; the nodes' libpq
        # takes the password from their own configuration (PGPASSWORD, inventories/local)
        "database_url": sa.engine.make_url(config.database_url)._replace(password=None).render_as_string(False),
        "redis_url": config.redis_url,
        "checkpoint_every": config.checkpoint_every,
        "helpers": config.helpers,
        "chunk_mib": config.chunk_mib,
    }
    run = client.create_flow_run_from_deployment(deployment.id, parameters=parameters, tags=["drill"])
    return run.id
