"""Ansible lookup plugin: the validated flow catalog (src/agency_os_spot/catalog.yml) as data.

The catalog is parsed and validated by the same Python code the flows use
(`agency_os_spot.catalog.load_catalog`), so a playbook can never read a catalog the flows
would refuse, and nothing restates a flow's tier, tags or pool in YAML vars.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

DOCUMENTATION = r"""
name: flow_catalog
author: Agency OS
version_added: "0.1.0"
short_description: Read the validated Agency OS flow catalog
description:
  - Returns the flow catalog of this repository (C(src/agency_os_spot/catalog.yml)), validated and with
    each tier's tags, work pool, queue and retries resolved onto its flows.
  - With a term, returns the entry of that flow (exact name or a C(prefix/*) family).
options:
  _terms:
    description: Optional flow name to look up. Without it, the whole catalog is returned.
    required: false
  file:
    description: Another catalog file to read (default the packaged C(src/agency_os_spot/catalog.yml)).
    type: str
"""

EXAMPLES = r"""
- name: Show every bulk flow
  ansible.builtin.debug:
    msg: "{{ lookup('flow_catalog').flows | selectattr('tier', 'eq', 'bulk') | map(attribute='name') }}"
- name: One flow
  ansible.builtin.debug:
    msg: "{{ lookup('flow_catalog', 'abn_bulk_ingestion').work_pool }}"
"""

RETURN = r"""
_raw:
  description: The catalog (source, spot_pool, tiers, flows) or one flow entry.
  type: list
  elements: dict
"""


def _import_catalog():
    try:
        from agency_os_spot import catalog  # noqa: PLC0415  (installed into the controller venv by make setup)
    except ImportError:
        # Fall back to the repository checkout this plugin lives in.
        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
        from agency_os_spot import catalog  # noqa: PLC0415
    return catalog


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        catalog_mod = _import_catalog()
        try:
            catalog = catalog_mod.load_catalog(self.get_option("file"))
        except catalog_mod.CatalogError as exc:
            raise AnsibleLookupError(f"flow catalog is invalid: {exc}") from exc
        if not terms:
            return [catalog.as_dict()]
        entries = {f["name"]: f for f in catalog.as_dict()["flows"]}
        result = []
        for term in terms:
            try:
                result.append(entries[catalog.get(term).name])
            except KeyError as exc:
                raise AnsibleLookupError(str(exc.args[0])) from exc
        return result
