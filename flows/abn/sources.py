"""Where ABN Bulk Extract files come from: local paths or URLs of the ZIPs or XML files.

`plan()` turns the sources a user gives into one job per XML file (a ZIP holds ten), with a
stable id, so several workers can split the 20 files through the queue and a rerun resumes the
same jobs. `open_xml()` streams one file's bytes: from disk, from inside a ZIP (never
extracted whole), or over HTTP(S) (a ZIP is downloaded once into the cache directory, because a
ZIP's index is at its end).

`fixture://abn?records=N&files=K&seed=S&bad_every=M` stands for a generated extract (see
flows.abn_fixture), so a canary run needs no data on the node.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

# The data.gov.au resources of the dataset "ABN Bulk Extract" (weekly full snapshot, CC-BY 3.0 AU).
DEFAULT_SOURCES = (
    "https://data.gov.au/data/dataset/5bd7fcab-e315-42cb-8daf-50b7efc2027e/resource/"
    "0ae4d427-6fa8-4d40-8e76-c6909b5a071b/download/public_split_1_10.zip",
    "https://data.gov.au/data/dataset/5bd7fcab-e315-42cb-8daf-50b7efc2027e/resource/"
    "635fcb95-7864-4509-9fa7-a62a6e32b62d/download/public_split_11_20.zip",
)
JOB_TYPE = "abn_file"
HTTP_TIMEOUT_S = 60


def default_cache_dir() -> Path:
    return Path(os.environ.get("AGENCY_OS_CACHE_DIR", Path(tempfile.gettempdir()) / "agency-os-cache"))


@dataclass(frozen=True)
class FileJob:
    """One XML file of an extract: the unit of work on the queue and in the ledger."""

    id: str
    source: str
    member: str | None
    name: str

    def to_job(self) -> dict[str, Any]:
        return {"type": JOB_TYPE, **asdict(self)}

    @classmethod
    def from_job(cls, job: dict[str, Any]) -> FileJob:
        try:
            return cls(id=str(job["id"]), source=str(job["source"]), member=job.get("member"), name=str(job["name"]))
        except KeyError as exc:
            raise ValueError(f"abn_file job without {exc.args[0]!r}: {job!r}") from None


class SourceError(ValueError):
    """A source cannot be read (missing file, not an extract, HTTP error)."""


def _is_url(source: str) -> bool:
    return urllib.parse.urlsplit(source).scheme in ("http", "https")


def _fixture_params(source: str) -> dict[str, int]:
    parts = urllib.parse.urlsplit(source)
    query = dict(urllib.parse.parse_qsl(parts.query))
    try:
        params = {
            "records": int(query.get("records", "1000")),
            "files": int(query.get("files", "1")),
            "seed": int(query.get("seed", "1")),
            "bad_every": int(query.get("bad_every", "0")),
        }
    except ValueError as exc:
        raise SourceError(f"bad fixture source {source!r}: {exc}") from None
    if params["records"] < 0 or params["files"] < 1:
        raise SourceError(f"bad fixture source {source!r}: records >= 0 and files >= 1")
    return params


def _url_fingerprint(url: str) -> str:
    request = urllib.request.Request(url, method="HEAD")  # noqa: S310  (http/https checked by the caller)
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as resp:  # noqa: S310
            tag = resp.headers.get("ETag") or resp.headers.get("Last-Modified") or ""
            size = resp.headers.get("Content-Length") or ""
    except OSError as exc:
        raise SourceError(f"cannot reach {url}: {exc}") from None
    return hashlib.sha256(f"{url}|{tag}|{size}".encode()).hexdigest()[:12]


def _local_fingerprint(path: Path) -> str:
    try:
        stat = path.stat()
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror}") from None
    return hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]


def fetch(url: str, cache_dir: Path | None = None) -> Path:
    """Download `url` into the cache (once; keyed by URL, ETag and size)."""
    cache_dir = cache_dir or default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / f"{_url_fingerprint(url)}-{Path(urllib.parse.urlsplit(url).path).name or 'download'}"
    if target.exists():
        return target
    partial = target.with_suffix(target.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as resp, partial.open("wb") as out:  # noqa: S310
            shutil.copyfileobj(resp, out, 1 << 20)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise SourceError(f"cannot download {url}: {exc}") from None
    partial.replace(target)
    return target


def _zip_members(path: Path, label: str) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            members = sorted(n for n in zf.namelist() if n.lower().endswith(".xml"))
    except zipfile.BadZipFile:
        raise SourceError(f"{label} is not a ZIP archive") from None
    if not members:
        raise SourceError(f"{label} holds no .xml file")
    return members


def plan(sources: list[str] | tuple[str, ...], cache_dir: Path | None = None) -> list[FileJob]:
    """One FileJob per XML file of the given sources, in order."""
    jobs: list[FileJob] = []
    for source in sources:
        if source.startswith("fixture://"):
            p = _fixture_params(source)
            for n in range(1, p["files"] + 1):
                key = f"fixture:{p['seed']}:{p['records']}:{p['files']}:{p['bad_every']}:{n}"
                jobs.append(FileJob(id=f"abn:{key}", source=source, member=str(n), name=f"fixture_Public{n:02d}.xml"))
            continue
        is_url = _is_url(source)
        name = Path(urllib.parse.urlsplit(source).path if is_url else source).name
        fingerprint = _url_fingerprint(source) if is_url else _local_fingerprint(Path(source))
        if name.lower().endswith(".zip"):
            local = fetch(source, cache_dir) if is_url else Path(source)
            for member in _zip_members(local, source):
                member_name = Path(member).name
                jobs.append(
                    FileJob(id=f"abn:{member_name}:{fingerprint}", source=source, member=member, name=member_name)
                )
        else:
            jobs.append(FileJob(id=f"abn:{name}:{fingerprint}", source=source, member=None, name=name))
    names = [j.name for j in jobs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SourceError(f"the same file name appears twice in the sources: {', '.join(duplicates)}")
    return jobs


@contextmanager
def open_xml(job: FileJob, cache_dir: Path | None = None) -> Iterator[IO[bytes]]:
    """A binary stream of the job's XML file."""
    source = job.source
    with ExitStack() as stack:
        if source.startswith("fixture://"):
            from flows.abn_fixture import generate  # noqa: PLC0415  (only canaries and tests use it)

            p = _fixture_params(source)
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="abn-fixture-")))
            manifest = generate(p["records"], p["seed"], tmp, files=p["files"], bad_every=p["bad_every"])
            stream: IO[bytes] = stack.enter_context((tmp / manifest["sources"][int(job.member or 1) - 1]).open("rb"))
        elif _is_url(source) and job.member is None:
            try:
                stream = stack.enter_context(urllib.request.urlopen(source, timeout=HTTP_TIMEOUT_S))  # noqa: S310
            except OSError as exc:
                raise SourceError(f"cannot read {source}: {exc}") from None
        else:
            local = fetch(source, cache_dir) if _is_url(source) else Path(source)
            try:
                if job.member is None:
                    stream = stack.enter_context(local.open("rb"))
                else:
                    archive = stack.enter_context(zipfile.ZipFile(local))
                    stream = stack.enter_context(archive.open(job.member))
            except FileNotFoundError:
                raise SourceError(f"{source}: no such file") from None
            except zipfile.BadZipFile:
                raise SourceError(f"{source} is not a ZIP archive") from None
            except KeyError:
                raise SourceError(f"{source} has no member {job.member!r}") from None
        yield stream
