"""The flow catalog: one source of truth for what each flow is and where it runs.

`src/agency_os_spot/catalog.yml` is read here and nowhere else by hand: the Python flows take their
name, tags and retries from `load_catalog()`, and Ansible reads the same validated data
through the `flow_catalog` lookup plugin (which calls `load_catalog().as_dict()`).

Usage from the command line::

    python -m agency_os_spot.catalog                 # validate the packaged catalog, print a summary
    python -m agency_os_spot.catalog --json          # the resolved catalog as JSON
    python -m agency_os_spot.catalog --file X.yml    # validate another file
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import yaml

DEFAULT_PATH = Path(__file__).with_name("catalog.yml")

TIER_KEYS = {
    "description",
    "tags",
    "current_infra",
    "target_infra",
    "work_pool",
    "work_queue",
    "retries",
    "retry_delay_seconds",
}
FLOW_REQUIRED = {"name", "tier", "reason"}
FLOW_OPTIONAL = {
    "sla",
    "tolerance_hours",
    "extra_tags",
    "work_pool",
    "work_queue",
    "entrypoint",
    "schedule",
    "canary_parameters",
    "current_infra",
}
KNOWN_TIERS = ("bulk", "realtime")
# A flow name, or a family of flows: `prefix/*` (the wildcard is a whole, last segment).
_NAME = re.compile(r"^[a-z][a-z0-9_]*(/[a-z0-9_]+)*(/\*)?$")
# Module form (the code is installed on the nodes as the `flows` package): flows.module:function
_ENTRYPOINT = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


class CatalogError(ValueError):
    """The catalog file is malformed; the message says where and how to fix it."""


@dataclass(frozen=True)
class Tier:
    name: str
    description: str
    tags: tuple[str, ...]
    current_infra: str
    target_infra: str
    work_pool: str
    work_queue: str
    retries: int
    retry_delay_seconds: int


@dataclass(frozen=True)
class FlowSpec:
    """One catalog entry, with its tier's settings resolved onto it."""

    name: str
    tier: str
    reason: str
    tags: tuple[str, ...]
    current_infra: str
    target_infra: str
    work_pool: str
    work_queue: str
    retries: int
    retry_delay_seconds: int
    sla: str | None = None
    tolerance_hours: float | None = None
    entrypoint: str | None = None
    schedule: dict[str, Any] | None = None
    canary_parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def is_pattern(self) -> bool:
        """True for a family of flows such as `webhook_handlers/*`."""
        return self.name.endswith("/*")

    @property
    def code_in_repo(self) -> bool:
        """True when this repository holds the flow's code (it has an entrypoint)."""
        return self.entrypoint is not None

    @property
    def deployment_name(self) -> str:
        """The Prefect deployment name used for flows whose code lives here."""
        return self.name

    @property
    def placement_key(self) -> str:
        """Name of the Prefect Variable recording where this flow runs once cut over
        (written by the cutover, role prefect_placement; read by the deployment role so a redeploy keeps it)."""
        slug = self.name.replace("/*", "__family").replace("/", "__")
        return f"placement__{slug}"

    def matches(self, flow_name: str) -> bool:
        """Whether `flow_name` is this flow or a member of this family."""
        if self.is_pattern:
            return fnmatchcase(flow_name, self.name) and "/" not in flow_name[len(self.name) - 1 :]
        return flow_name == self.name

    def flow_options(self) -> dict[str, Any]:
        """Keyword arguments for `prefect.flow(...)` that the catalog decides.

        Tags are not among them: Prefect 3's `@flow` takes none (`@flow(tags=...)` would fail).
        A run gets the catalog's tags from its deployment (roles/prefect_deployments)."""
        options: dict[str, Any] = {"name": self.name, "description": self.reason}
        if self.retries:
            options["retries"] = self.retries
            options["retry_delay_seconds"] = self.retry_delay_seconds
        return options


@dataclass(frozen=True)
class Catalog:
    tiers: dict[str, Tier]
    flows: tuple[FlowSpec, ...]
    source: str

    def names(self) -> list[str]:
        return [f.name for f in self.flows]

    def get(self, flow_name: str) -> FlowSpec:
        """The entry for `flow_name` (exact name first, then a matching `prefix/*` family)."""
        for spec in self.flows:
            if spec.name == flow_name:
                return spec
        for spec in self.flows:
            if spec.is_pattern and spec.matches(flow_name):
                return spec
        raise KeyError(f"flow {flow_name!r} is not in the catalog; valid names: {', '.join(self.names())}")

    def by_tier(self, tier: str) -> list[FlowSpec]:
        return [f for f in self.flows if f.tier == tier]

    @property
    def spot_pool(self) -> str:
        return self.tiers["bulk"].work_pool

    def as_dict(self) -> dict[str, Any]:
        """Plain data for Ansible and JSON: tiers and flows with everything resolved."""
        flows = []
        for spec in self.flows:
            item = asdict(spec)
            item["tags"] = list(spec.tags)
            item["is_pattern"] = spec.is_pattern
            item["code_in_repo"] = spec.code_in_repo
            item["placement_key"] = spec.placement_key
            flows.append(item)
        tiers = {name: {**asdict(t), "tags": list(t.tags)} for name, t in self.tiers.items()}
        return {"source": self.source, "spot_pool": self.spot_pool, "tiers": tiers, "flows": flows}


def _require_mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CatalogError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _parse_tier(name: str, raw: Any, source: str) -> Tier:
    where = f"{source}: tier {name!r}"
    data = _require_mapping(raw, where)
    missing = TIER_KEYS - data.keys()
    if missing:
        raise CatalogError(f"{where}: missing {', '.join(sorted(missing))}")
    unknown = data.keys() - TIER_KEYS
    if unknown:
        raise CatalogError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    tags = data["tags"]
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        raise CatalogError(f"{where}: tags must be a list of non-empty strings")
    for key in ("retries", "retry_delay_seconds"):
        if not isinstance(data[key], int) or isinstance(data[key], bool) or data[key] < 0:
            raise CatalogError(f"{where}: {key} must be a whole number >= 0, got {data[key]!r}")
    return Tier(
        name=name,
        description=str(data["description"]),
        tags=tuple(tags),
        current_infra=str(data["current_infra"]),
        target_infra=str(data["target_infra"]),
        work_pool=str(data["work_pool"]),
        work_queue=str(data["work_queue"]),
        retries=data["retries"],
        retry_delay_seconds=data["retry_delay_seconds"],
    )


def _parse_flow(index: int, raw: Any, tiers: dict[str, Tier], source: str) -> FlowSpec:
    data = _require_mapping(raw, f"{source}: flows[{index}]")
    name = data.get("name")
    where = f"{source}: flow {name!r}" if isinstance(name, str) else f"{source}: flows[{index}]"
    missing = FLOW_REQUIRED - data.keys()
    if missing:
        raise CatalogError(f"{where}: missing {', '.join(sorted(missing))}")
    unknown = data.keys() - FLOW_REQUIRED - FLOW_OPTIONAL
    if unknown:
        raise CatalogError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))} "
            f"(allowed: {', '.join(sorted(FLOW_REQUIRED | FLOW_OPTIONAL))})"
        )
    if not isinstance(name, str) or not _NAME.match(name):
        hint = ""
        if isinstance(name, str) and "*" in name:
            hint = " a wildcard must be the whole last segment, as in 'webhook_handlers/*';"
        raise CatalogError(f"{where}: malformed name {name!r}:{hint} names are lower-case words separated by '/'")

    tier_name = data["tier"]
    if tier_name not in tiers:
        raise CatalogError(f"{where}: unknown tier {tier_name!r} (known tiers: {', '.join(sorted(tiers))})")
    tier = tiers[tier_name]

    extra = data.get("extra_tags", [])
    if not isinstance(extra, list) or not all(isinstance(t, str) and t for t in extra):
        raise CatalogError(f"{where}: extra_tags must be a list of non-empty strings")
    tags = tuple(dict.fromkeys([*tier.tags, *extra]))

    tolerance = data.get("tolerance_hours")
    if tolerance is not None and (
        not isinstance(tolerance, int | float) or isinstance(tolerance, bool) or tolerance <= 0
    ):
        raise CatalogError(f"{where}: tolerance_hours must be a positive number of hours, got {tolerance!r}")
    entrypoint = data.get("entrypoint")
    if entrypoint is not None:
        if not isinstance(entrypoint, str) or not _ENTRYPOINT.match(entrypoint):
            raise CatalogError(f"{where}: entrypoint must look like 'flows.module:function', got {entrypoint!r}")
        if name.endswith("/*"):
            raise CatalogError(f"{where}: a family of flows ('/*') cannot have one entrypoint")
    for key in ("schedule", "canary_parameters"):
        if key in data and not isinstance(data[key], dict):
            raise CatalogError(f"{where}: {key} must be a mapping")

    return FlowSpec(
        name=name,
        tier=tier_name,
        reason=str(data["reason"]),
        tags=tags,
        current_infra=str(data.get("current_infra", tier.current_infra)),
        target_infra=tier.target_infra,
        work_pool=str(data.get("work_pool", tier.work_pool)),
        work_queue=str(data.get("work_queue", tier.work_queue)),
        retries=tier.retries,
        retry_delay_seconds=tier.retry_delay_seconds,
        sla=data.get("sla"),
        tolerance_hours=tolerance,
        entrypoint=entrypoint,
        schedule=data.get("schedule"),
        canary_parameters=data.get("canary_parameters") or {},
    )


def _check_tier_rules(spec: FlowSpec, tiers: dict[str, Tier], where: str) -> None:
    known_infra = {t.current_infra for t in tiers.values()} | {t.target_infra for t in tiers.values()}
    if spec.current_infra not in known_infra:
        raise CatalogError(
            f"{where}: unknown current_infra {spec.current_infra!r} (known: {', '.join(sorted(known_infra))})"
        )
    spot_pool = tiers["bulk"].work_pool
    if spec.tier == "realtime":
        if spec.work_pool == spot_pool or "interruptible" in spec.tags or "infra:spot" in spec.tags:
            raise CatalogError(
                f"{where}: realtime flow mapped to the spot pool {spot_pool!r} or tagged interruptible; "
                "realtime flows stay on always-on compute (change its tier to bulk if it may be interrupted)"
            )
        if not spec.sla:
            raise CatalogError(f"{where}: realtime flow without an sla (e.g. sla: '<5s response')")
    if spec.tier == "bulk":
        if spec.tolerance_hours is None:
            raise CatalogError(
                f"{where}: bulk flow without tolerance_hours: say how long preemptions may delay it "
                "(e.g. tolerance_hours: 24)"
            )
        if "interruptible" not in spec.tags:
            raise CatalogError(f"{where}: bulk flow must carry the 'interruptible' tag")


def parse_catalog(data: Any, source: str = "<catalog>") -> Catalog:
    """Validate raw catalog data (as loaded from YAML) and resolve tiers onto flows."""
    root = _require_mapping(data, source)
    unknown = root.keys() - {"tiers", "flows"}
    if unknown:
        raise CatalogError(f"{source}: unknown top-level key(s) {', '.join(sorted(unknown))}")
    raw_tiers = _require_mapping(root.get("tiers"), f"{source}: tiers")
    for name in raw_tiers:
        if name not in KNOWN_TIERS:
            raise CatalogError(f"{source}: unknown tier {name!r} defined (known tiers: {', '.join(KNOWN_TIERS)})")
    for name in KNOWN_TIERS:
        if name not in raw_tiers:
            raise CatalogError(f"{source}: tier {name!r} is not defined")
    tiers = {name: _parse_tier(name, raw, source) for name, raw in raw_tiers.items()}
    if tiers["realtime"].work_pool == tiers["bulk"].work_pool:
        raise CatalogError(f"{source}: tiers realtime and bulk must not share the work pool")

    raw_flows = root.get("flows")
    if not isinstance(raw_flows, list) or not raw_flows:
        raise CatalogError(f"{source}: flows must be a non-empty list")
    flows: list[FlowSpec] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_flows):
        spec = _parse_flow(index, raw, tiers, source)
        if spec.name in seen:
            raise CatalogError(
                f"{source}: duplicate flow name {spec.name!r} (flows[{seen[spec.name]}] and flows[{index}])"
            )
        seen[spec.name] = index
        _check_tier_rules(spec, tiers, f"{source}: flow {spec.name!r}")
        flows.append(spec)
    return Catalog(tiers=tiers, flows=tuple(flows), source=source)


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Load and validate the catalog (the packaged `src/agency_os_spot/catalog.yml` by default)."""
    path = Path(path) if path else DEFAULT_PATH
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"cannot read the flow catalog {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not valid YAML: {exc}") from exc
    return parse_catalog(data, source=str(path))


def flow_options(flow_name: str) -> dict[str, Any]:
    """`@flow(**flow_options("abn_bulk_ingestion"))`: name, tags, retries from the catalog."""
    return load_catalog().get(flow_name).flow_options()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agency-os-spot catalog", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--file", help="catalog file to validate (default: the packaged src/agency_os_spot/catalog.yml)"
    )
    parser.add_argument("--json", action="store_true", help="print the resolved catalog as JSON")
    args = parser.parse_args(argv)
    try:
        catalog = load_catalog(args.file)
    except CatalogError as exc:
        print(f"catalog error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(catalog.as_dict(), indent=2))
    else:
        for spec in catalog.flows:
            window = f"sla {spec.sla}" if spec.tier == "realtime" else f"tolerance {spec.tolerance_hours}h"
            placement = f"{spec.work_pool}/{spec.work_queue}"
            print(f"{spec.name:28} {spec.tier:9} {placement:22} {window}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
