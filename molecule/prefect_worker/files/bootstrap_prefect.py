"""Create the bulk pool (with the preemption template) and the deployments of this repo's flows."""

import json
import sys
from pathlib import Path

import httpx

from agency_os_spot.catalog import load_catalog
from agency_os_spot.deploy import bulk_base_job_template, deployment_body

services = json.loads(Path(sys.argv[1]).read_text())
http = httpx.Client(base_url=services["prefect_api_url"], timeout=30)
catalog = load_catalog()
pool = catalog.spot_pool
http.post(
    "/work_pools/", json={"name": pool, "type": "process", "base_job_template": bulk_base_job_template()}
).raise_for_status()
for spec in catalog.flows:
    if spec.code_in_repo:
        flow_id = http.post("/flows/", json={"name": spec.name}).raise_for_status().json()["id"]
        body = deployment_body(spec, flow_id=flow_id)
        body.pop("schedules", None)
        http.post("/deployments/", json=body).raise_for_status()
print(f"pool {pool} and deployments created")
