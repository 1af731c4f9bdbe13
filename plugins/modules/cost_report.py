#!/usr/bin/python
# Agency OS: the monthly cost report (computed). A thin wrapper: the numbers are computed
# in src/agency_os_spot/reporting/cost/ (one source of truth, also a command line), this module only feeds it
# the inventory's settings and writes the files, honouring check mode.

DOCUMENTATION = r"""
---
module: cost_report
short_description: Write the Agency OS monthly cost report (current vs proposed per component)
description:
  - Computes the monthly cost of every component today (all flows on Railway) and in the proposal
    (realtime flows on Railway, bulk flows on spot capacity) from the flow catalog, the capacity
    settings, dated prices and, for AWS, the Spot price history read by M(aws_spot_price_history).
  - Writes C(cost_report_<provider>.md) (the table and how it was computed), C(.json) (the same
    numbers for machines) and C(.png) (a bar chart, current vs proposed) into O(dest). Files whose
    content is unchanged are left alone.
  - A missing or malformed price fails with a message naming the setting, e.g. C(no on-demand price
    for t3a.small in pricing.yml (aws_on_demand_usd_per_hour)).
  - Runs on the controller, with the Python that has this repository installed (C(make setup)).
author:
  - Agency OS
options:
  provider:
    description: Spot capacity provider of the inventory.
    type: str
    required: true
    choices: [aws, gcp]
  region:
    description: Region of the capacity (shown in the report).
    type: str
    default: ""
  capacity:
    description:
      - Capacity settings. AWS keys C(instance_types), C(min_size), C(max_size), C(desired_capacity),
        C(on_demand_base_capacity), C(on_demand_percentage_above_base), C(max_price),
        C(root_volume_size), C(root_volume_type), C(public_ipv4_per_instance); GCP keys
        C(machine_type), C(target_size), C(disk_size_gb), C(disk_type), C(external_ip),
        C(provisioning_model).
    type: dict
    required: true
  pricing:
    description:
      - Dated prices, each C({value, source, date}) (see C(inventories/*/group_vars/all/pricing.yml)
        and C(playbooks/vars/cost_report.yml)), plus C(railway_flow_usage).
    type: dict
    required: true
  spot_price_history:
    description: The result of M(aws_spot_price_history) (AWS only).
    type: dict
  hours_per_month:
    description: Hours in a month.
    type: float
    default: 730
  spot_basis:
    description: Which pool average the AWS estimate uses.
    type: str
    default: mean
    choices: [mean, max, min]
  dest:
    description: Folder to write the report into (created when missing).
    type: path
    required: true
  catalog_file:
    description: Another flow catalog to read (default the packaged C(src/agency_os_spot/catalog.yml)).
    type: path
attributes:
  check_mode:
    support: full
    details: Computes the report and says which files would change, without writing them.
  diff_mode:
    support: none
  platform:
    platforms: posix
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
"""

EXAMPLES = r"""
- name: Write the GCP cost report
  cost_report:
    provider: gcp
    region: australia-southeast1
    capacity: {machine_type: e2-small, target_size: 1, disk_size_gb: 10, disk_type: pd-balanced}
    pricing: "{{ __cost_report_pricing }}"
    dest: reports
"""

RETURN = r"""
files:
  description: Paths of the files written (or that would be written in check mode).
  returned: always
  type: list
  elements: str
markdown:
  description: The Markdown report.
  returned: success
  type: str
table:
  description: The cost table alone, one Markdown line per element.
  returned: success
  type: list
  elements: str
report:
  description: The numbers (per component and total, US$ and A$ per month), sources and notes.
  returned: success
  type: dict
"""

from pathlib import Path

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(
        argument_spec={
            "provider": {"type": "str", "required": True, "choices": ["aws", "gcp"]},
            "region": {"type": "str", "default": ""},
            "capacity": {"type": "dict", "required": True},
            "pricing": {"type": "dict", "required": True},
            "spot_price_history": {"type": "dict"},
            "hours_per_month": {"type": "float", "default": 730},
            "spot_basis": {"type": "str", "default": "mean", "choices": ["mean", "max", "min"]},
            "dest": {"type": "path", "required": True},
            "catalog_file": {"type": "path"},
        },
        supports_check_mode=True,
    )
    try:
        from agency_os_spot.catalog import CatalogError, load_catalog  # noqa: PLC0415  (the controller's venv)
        from agency_os_spot.reporting import cost  # noqa: PLC0415
    except ImportError as exc:
        module.fail_json(
            msg=f"cannot import this repository's flows package ({exc}): run the playbook with the "
            "controller's Python (.venv, `make setup`): ansible_python_interpreter set to ansible_playbook_python"
        )
    params = module.params
    try:
        catalog = load_catalog(params["catalog_file"])
        report = cost.compute_report(
            {
                "provider": params["provider"],
                "region": params["region"],
                "capacity": params["capacity"],
                "pricing": params["pricing"],
                "spot_price_history": params["spot_price_history"],
                "hours_per_month": params["hours_per_month"],
                "spot_basis": params["spot_basis"],
            },
            catalog=catalog,
        )
    except (cost.PricingError, CatalogError) as exc:
        module.fail_json(msg=f"cost report: {exc}")
    files = cost.render_files(report)
    changed = cost.write_files(files, Path(params["dest"]), check=module.check_mode)
    markdown = files[f"cost_report_{report.provider}.md"].decode()
    table = []
    for line in markdown.splitlines():
        if line.startswith("| Component") or (table and line.startswith("|")):
            table.append(line)
        elif table:
            break
    module.exit_json(
        changed=bool(changed),
        files=[str(Path(params["dest"]) / name) for name in files],
        changed_files=changed,
        markdown=markdown,
        table=table,
        report=report.as_dict(),
    )


if __name__ == "__main__":
    main()
