#!/usr/bin/python
# Agency OS: the spot migration's status per catalog flow, read from the Prefect REST API, and the
# gate before Railway's bulk compute goes. A thin wrapper around src/agency_os_spot/reporting/migration/ (one
# source of truth for the definitions, also a command line). Reads Prefect only; writes nothing but its chart.

DOCUMENTATION = r"""
---
module: prefect_migration_status
short_description: Spot migration status of every catalog flow, from the Prefect REST API
description:
  - For each flow of the flow catalog (C(src/agency_os_spot/catalog.yml)) reads, through the Prefect REST API,
    the work pools of its deployments and its flow runs of the last O(days) days, and reports them
    by final state, how many were rescheduled after a preemption, how many crashed, the p95
    duration (scheduled start to end) against the flow's tolerance window, and whether the window
    held (bulk flows; realtime flows have an SLA, reported but not gated).
  - Catalog families such as C(webhook_handlers/*) match the Prefect flow C(webhook_handlers) (its
    deployments are the members, as Prefect refuses C(/) in flow names) and any flow named
    C(webhook_handlers/<x>).
  - With O(decommission_days), also evaluates the gate before Railway's bulk compute is
    decommissioned and returns what blocks it, or the checklist of what to scale down.
  - Changes nothing on the Prefect server. With O(chart_dest), writes the chart
    C(migration_status.png) there when its content changed (not in check mode). Runs on the
    controller with the Python that has this repository installed (C(make setup)).
author:
  - Agency OS
options:
  days:
    description: Days of flow runs to read, ending now.
    type: float
    default: 7
  decommission_days:
    description:
      - Also run the decommission gate, requiring this many days of on-spot success. Empty or 0
        skips it.
    type: float
    default: 0
  catalog_file:
    description: Another flow catalog to read (default the packaged C(src/agency_os_spot/catalog.yml)).
    type: path
  chart_dest:
    description:
      - Folder for C(migration_status.png) - per flow, its completed runs' durations against its
        tolerance window, and the preemptions per day of the bulk flows. Empty writes no chart.
    type: path
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
extends_documentation_fragment:
  - prefect_api
  - ansible.builtin.action_common_attributes
"""

EXAMPLES = r"""
- name: Read the migration status of the last 7 days
  prefect_migration_status:
    api_url: http://127.0.0.1:4200/api
  register: status

- name: Evaluate the decommission gate (7 days of on-spot success)
  prefect_migration_status:
    api_url: "{{ prefect_api_url }}"
    days: 7
    decommission_days: 7
  register: gate
"""

RETURN = r"""
report:
  description: Per catalog flow (pools, deployments, runs by final state, rescheduled, crashed, p95_seconds,
    tolerance_hours, sla, window_held, missed), missed_windows and Prefect flows not in the catalog.
  returned: success
  type: dict
table:
  description: The status table, one Markdown line per element.
  returned: success
  type: list
  elements: str
markdown:
  description: The Markdown report (table, legend, missed windows).
  returned: success
  type: str
missed_windows:
  description: Bulk flows that missed their tolerance window, with the reasons.
  returned: success
  type: list
  elements: dict
chart:
  description: Path of the chart, when O(chart_dest) is set.
  returned: when chart_dest is set
  type: str
decommission:
  description: The gate (ready, blockers, evidence, not_deployed, checklist), when O(decommission_days) is set.
  returned: when decommission_days is set
  type: dict
"""

from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.prefect_api import module_connection, prefect_argument_spec


def main():
    module = AnsibleModule(
        argument_spec=prefect_argument_spec(
            days={"type": "float", "default": 7},
            decommission_days={"type": "float", "default": 0},
            catalog_file={"type": "path"},
            chart_dest={"type": "path"},
        ),
        supports_check_mode=True,
    )
    try:
        from agency_os_spot.catalog import CatalogError, load_catalog  # noqa: PLC0415  (the controller's venv)
        from agency_os_spot.reporting import migration  # noqa: PLC0415
        from agency_os_spot.reporting.files import write_files  # noqa: PLC0415
    except ImportError as exc:
        module.fail_json(
            msg=f"cannot import this repository's flows package ({exc}): run the playbook with the "
            "controller's Python (.venv, `make setup`): ansible_python_interpreter set to ansible_playbook_python"
        )
    params = module.params
    if params["days"] <= 0:
        module.fail_json(msg=f"days must be more than 0, got {params['days']}")
    try:
        catalog = load_catalog(params["catalog_file"])
    except CatalogError as exc:
        module.fail_json(msg=f"flow catalog is invalid: {exc}")
    conn = module_connection(module)
    try:
        with migration.PrefectAPI(
            conn["api_url"],
            conn["api_key"],
            params["timeout"],
            params["validate_certs"],
            auth_string=conn["api_auth_string"],
        ) as api:
            report = migration.collect_status(api, catalog, params["days"])
            gate = None
            if params["decommission_days"]:
                gate = migration.decommission_gate(api, catalog, report, params["decommission_days"])
    except migration.PrefectAPIError as exc:
        module.fail_json(msg=str(exc))
    data = report.as_dict()
    result = {
        "changed": False,
        "report": data,
        "table": migration.render_table(report),
        "markdown": migration.render_markdown(report),
        "missed_windows": data["missed_windows"],
    }
    if params["chart_dest"]:
        dest = Path(params["chart_dest"])
        chart = {"migration_status.png": migration.render_chart(report)}
        result["changed"] = bool(write_files(chart, dest, check=module.check_mode))
        result["chart"] = str(dest / "migration_status.png")
    if gate is not None:
        result["decommission"] = gate
    module.exit_json(**result)


if __name__ == "__main__":
    main()
