"""The drill's parameters: every default of the drill is here, and only here.

The command line (`python -m tools.drill`) and playbooks/failover_drill.yml pass only what they
change; a parameter they leave out takes its value from `Config`. The pool and queue the drill's
flow runs on are not parameters: they come from the flow catalog (`placement`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from agency_os_spot.catalog import FlowSpec, load_catalog

ROOT = Path(__file__).resolve().parents[2]

# The flow the drill runs; its helpers are `bulk_worker` runs tagged `helper-of:<its run id>`
# (flows/abn_bulk_ingestion.py).
FLOW = "abn_bulk_ingestion"
HELPER_TAG = "helper-of:{parent}"

# The label of every local spot node container (roles/local_spot_capacity).
NODE_LABEL = "agency-os.role=spot-node"

# Faults are spread over the first three quarters of the records: the last quarter is left for
# the faults that take a while (a notice, a freeze) and for a node fault to find a node that holds
# a job while another can carry on.
FAULT_SPAN = 0.75
# Records of work per planned fault when the size is not given: the work must outlast the faults.
# Measured here: 7,000-12,000 records/s with four nodes, and a fault takes 1-50 s (a notice and
# shutdown ~45 s, a freeze 35 s, a restart ~5 s; notices and freezes go on in the background).
RECORDS_PER_FAULT = 500_000
MIN_RECORDS = 1_000_000


@dataclass
class Config:
    api_url: str
    database_url: str
    redis_url: str
    # the extract
    records: int | None = None  # None: sized to the faults (`sized_records`)
    files: int = 20
    bad_every: int = 997  # one injected bad record in this many
    # the faults
    preemptions: int = 20  # nodes taken away: with a notice or hard
    notice_ratio: float = 0.5  # share of the preemptions with a notice
    min_each: int = 0  # at least this many notices and as many hard kills
    freezes: int = 2  # nodes paused past the queue's visibility timeout
    postgres_restarts: int = 2
    redis_restarts: int = 2  # SIGKILL, then start
    seed: int | None = None  # None: a new one (`__post_init__`), printed so a drill can be replayed
    # the work
    checkpoint_every: int = 500
    # Files are split into jobs of about this many MiB of XML (~50,000 records): a job a notice
    # gives back is taken again within one such chunk's time on a busy node.
    chunk_mib: float = 32.0
    helpers: int = 5  # extra bulk_worker runs splitting the files
    # the cluster
    nodes: int = 4  # spot nodes kept during the drill, more than `make provision` leaves
    control: str = "agency-os-control"  # the control plane container (PostgreSQL, Redis)
    # longer than the local queue visibility timeout (AGENCY_OS_QUEUE_VISIBILITY_S, 20 s)
    freeze_seconds: float = 35.0
    notice_seconds: float = 10.0
    # within the worker's drain (prefect_worker_stop_timeout, inventories/local)
    shutdown_grace: float = 40.0
    # local_spot_capacity_metadata_port_base: node N's metadata emulator listens on base + N
    metadata_port_base: int = 18_700
    inventory: str = "inventories/local"
    # the run
    timeout_s: float = 3_600.0
    data_dir: Path = ROOT / "build" / "drill-data"
    result: Path = ROOT / "reports" / "drill" / "result.json"
    # What the drill says as it goes, also written here (make drill shows it while it runs).
    log_file: Path = ROOT / "reports" / "drill" / "drill.log"
    progress_every_s: float = 15.0

    def __post_init__(self) -> None:
        if self.seed is None:
            self.seed = random.SystemRandom().randrange(1, 1_000_000)

    def sized_records(self, faults: int) -> int:
        """The records of the extract: as given, or enough work to outlast `faults` faults."""
        if self.records is not None:
            return self.records
        return max(MIN_RECORDS, RECORDS_PER_FAULT * faults)


def placement() -> FlowSpec:
    """The drill's flow as the catalog places it (its `work_pool` and `work_queue`)."""
    return load_catalog().get(FLOW)
