"""Deployment definitions, apart from the flow code, derived from the catalog.

What the Prefect control plane needs, computed in one place and used by the Ansible roles
(`python -m agency_os_spot.deploy ...` prints JSON) and by the tests:

* the bulk pool's base job template: the process worker's default, with the preemption settings
  as defaults (`command: prefect flow-run execute`, `PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR:
  reschedule`) so a SIGTERM ends a run AwaitingRetry instead of Crashed;
* the body of `POST /api/deployments/` for a flow of this repository (name, module entrypoint,
  tags, pool, queue, parameter schema, schedule), straight from the catalog.

    python -m agency_os_spot.deploy pool-template [--sigterm-behavior reschedule]
    python -m agency_os_spot.deploy deployment abn_bulk_ingestion [--pool P --queue Q]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from typing import Any

from agency_os_spot.catalog import FlowSpec, load_catalog

FLOW_RUN_COMMAND = "prefect flow-run execute"
SIGTERM_BEHAVIOR_ENV = "PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR"
HEARTBEAT_ENV = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"


def default_process_template() -> dict[str, Any]:
    """The process worker type's default base job template (as `prefect work-pool
    get-default-base-job-template --type process` prints it)."""
    from prefect.workers.process import ProcessWorker  # noqa: PLC0415  (heavy import, only when needed)

    return ProcessWorker.get_default_base_job_template()


def bulk_base_job_template(
    sigterm_behavior: str = "reschedule", heartbeat_seconds: int | None = 30, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """The bulk pool's template: flow runs under the `flow-run execute` supervisor, which on
    SIGTERM reschedules the run (after the flow code checkpoints) instead of crashing it; and
    flow-run heartbeats, which the zombie automation watches to catch runs whose node vanished."""
    if sigterm_behavior not in ("reschedule", "relinquish", "crash"):
        raise ValueError(f"sigterm_behavior must be reschedule, relinquish or crash, got {sigterm_behavior!r}")
    if heartbeat_seconds is not None and heartbeat_seconds < 30:
        raise ValueError("Prefect's flow heartbeat frequency is at least 30 seconds")
    template = copy.deepcopy(default_process_template())
    props = template["variables"]["properties"]
    props["command"]["default"] = FLOW_RUN_COMMAND
    defaults = {SIGTERM_BEHAVIOR_ENV: sigterm_behavior}
    if heartbeat_seconds:
        defaults[HEARTBEAT_ENV] = str(heartbeat_seconds)
    defaults.update(env or {})
    props["env"]["default"] = defaults
    props["env"]["description"] = (
        "Environment of the flow run. Keep PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR=reschedule: "
        "a deployment that sets env must repeat it (job variables replace this default)."
    )
    return template


def parameter_schema(spec: FlowSpec) -> dict[str, Any]:
    """The flow's parameter schema (JSON), from its code."""
    from prefect.flows import load_flow_from_entrypoint  # noqa: PLC0415
    from prefect.utilities.callables import parameter_schema as schema_of  # noqa: PLC0415

    if spec.entrypoint is None:
        raise ValueError(f"flow {spec.name!r} has no code in this repository (no entrypoint)")
    flow = load_flow_from_entrypoint(spec.entrypoint, use_placeholder_flow=False)
    return schema_of(flow.fn).model_dump(mode="json")


def deployment_body(
    spec: FlowSpec,
    flow_id: str | None = None,
    work_pool: str | None = None,
    work_queue: str | None = None,
    parameters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The body of POST /api/deployments/ for a flow whose code lives here."""
    body: dict[str, Any] = {
        "name": spec.deployment_name,
        "entrypoint": spec.entrypoint,
        "tags": list(spec.tags),
        "work_pool_name": work_pool or spec.work_pool,
        "work_queue_name": work_queue or spec.work_queue,
        "parameters": parameters or {},
        "parameter_openapi_schema": parameter_schema(spec),
        "pull_steps": [],  # the code is installed on every node as the `flows` package
        "description": spec.reason,
        "enforce_parameter_schema": True,
    }
    if flow_id:
        body["flow_id"] = flow_id
    if spec.schedule:
        body["schedules"] = [
            {
                "schedule": {"cron": spec.schedule["cron"], "timezone": spec.schedule.get("timezone", "UTC")},
                "active": True,
            }
        ]
    return body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agency-os-spot deploy", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pool = sub.add_parser("pool-template", help="the bulk pool's base job template (JSON)")
    pool.add_argument("--sigterm-behavior", default="reschedule")
    pool.add_argument("--heartbeat-seconds", type=int, default=30, help="flow-run heartbeat frequency (0: off)")
    dep = sub.add_parser("deployment", help="POST /api/deployments/ body for a flow of the catalog (JSON)")
    dep.add_argument("flow")
    dep.add_argument("--flow-id")
    dep.add_argument("--pool")
    dep.add_argument("--queue")
    args = parser.parse_args(argv)
    if args.command == "pool-template":
        print(json.dumps(bulk_base_job_template(args.sigterm_behavior, args.heartbeat_seconds or None)))
    else:
        spec = load_catalog().get(args.flow)
        print(json.dumps(deployment_body(spec, args.flow_id, args.pool, args.queue)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
