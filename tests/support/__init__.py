"""What the tests share: real services (PostgreSQL, Redis, a Prefect server, a worker), the
recorded Prefect history, the fake GCP Compute API, the repository root, and a loader for the
repository's Ansible plugins (they are files, not an installed package)."""

import importlib.util
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_plugin(name: str, relative_path: str) -> types.ModuleType:
    """The plugin file at `relative_path` (from the repository root) imported as module `name`."""
    spec = importlib.util.spec_from_file_location(name, ROOT / relative_path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
