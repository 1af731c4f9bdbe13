"""Writing a report's files: only those whose content changed, each replaced atomically."""

from __future__ import annotations

from pathlib import Path


def write_files(files: dict[str, bytes], dest: Path, check: bool = False) -> list[str]:
    """Write the files whose content differs; return their paths (what would change in check mode)."""
    changed = []
    for name, content in files.items():
        path = dest / name
        if path.exists() and path.read_bytes() == content:
            continue
        changed.append(str(path))
        if not check:
            dest.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_bytes(content)
            tmp.replace(path)
    return changed
