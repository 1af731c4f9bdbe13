"""`agency-os-spot`: one command line for the project's tools.

    agency-os-spot COMMAND [ARGS...]      (agency-os-spot COMMAND --help for each)

Each command is the module's own entry point, imported only when it runs (a node's drain or
watcher must not pay for Prefect's import).
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "dead-letters": ("agency_os_spot.runtime.dead_letters", "main", "list, show and replay dead-lettered jobs"),
    "ingest-abn": ("agency_os_spot.abn.cli", "run_cli", "ingest ABN extract files without orchestration"),
    "abn-fixture": ("agency_os_spot.abn.fixture", "main", "generate an ABN extract fixture"),
    "worker": ("agency_os_spot.worker", "main", "consume the bulk queue without orchestration"),
    "catalog": ("agency_os_spot.catalog", "main", "read the flow catalog"),
    "drain": ("agency_os_spot.node.drain", "main", "drain this node's Prefect worker (ExecStop)"),
    "watcher": ("agency_os_spot.node.watcher", "main", "watch the cloud's interruption notices and drain the node"),
    "metadata-emulator": ("agency_os_spot.node.metadata_emulator", "main", "emulate AWS/GCP metadata (local nodes)"),
    "deploy": ("agency_os_spot.deploy", "main", "pool template and deployment bodies from the catalog (JSON)"),
    "cost-report": ("agency_os_spot.reporting.cost", "main", "the cost of the bulk flows on Railway and on spot"),
    "migration-status": ("agency_os_spot.reporting.migration", "main", "where each flow of the catalog runs, and how"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_}" for name, (_m, _f, help_) in COMMANDS.items()]
    return "usage: agency-os-spot COMMAND [ARGS...]\n\ncommands:\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    if args[0] not in COMMANDS:
        print(f"agency-os-spot: unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, function, _help = COMMANDS[args[0]]
    return int(getattr(importlib.import_module(module), function)(args[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
