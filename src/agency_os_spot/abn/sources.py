"""Where ABN Bulk Extract files come from: local paths or URLs of the ZIPs or XML files.

`plan()` turns the sources a user gives into jobs, each a byte range of one XML file (a ZIP
holds ten; a file larger than the chunk size is split into ranges of about that size, so several
workers share one large file and a job given back on a notice waits at most one chunk's time),
with a stable id, so a rerun resumes the same jobs. `open_xml()` streams one file's bytes: from disk, from inside a ZIP (never
extracted whole), or from a download kept in the cache directory (`fetch`): verified complete
(a body cut short is resumed with Range, never cached), shared by the processes that need it, and
bound to the content the job was planned from (ETag, Last-Modified, or the content's digest when
the server gives neither: next week's extract at the same address is another job).

`fixture://abn?records=N&files=K&seed=S&bad_every=M` stands for a generated extract (see
agency_os_spot.abn.fixture), so a canary run needs no data on the node.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO, Any

from agency_os_spot import settings

# The data.gov.au resources of the dataset "ABN Bulk Extract" (weekly full snapshot, CC-BY 3.0 AU).
DEFAULT_SOURCES = (
    "https://data.gov.au/data/dataset/5bd7fcab-e315-42cb-8daf-50b7efc2027e/resource/"
    "0ae4d427-6fa8-4d40-8e76-c6909b5a071b/download/public_split_1_10.zip",
    "https://data.gov.au/data/dataset/5bd7fcab-e315-42cb-8daf-50b7efc2027e/resource/"
    "635fcb95-7864-4509-9fa7-a62a6e32b62d/download/public_split_11_20.zip",
)
JOB_TYPE = "abn_file"
HTTP_TIMEOUT_S = 60
# MiB of XML per job: ~400,000 records of the real extract (650 MB and ~1M records per file, so
# three jobs per file). A job given back on a notice is taken again within one chunk's time;
# each job also reads the bytes before its range (to count the records there; inside a ZIP they
# must be inflated too: 470 MB/s here), which a smaller chunk makes cost more.
DEFAULT_CHUNK_MIB = 256


def default_cache_dir() -> Path:
    return settings.current().cache_dir


@dataclass(frozen=True)
class FileJob:
    """The records of one XML file of an extract whose `<ABR>` starts in the bytes
    [byte_start, byte_end) (byte_end None: to the end of the file): the unit of work on the queue
    and in the ledger. The whole file unless it was split (`plan`)."""

    id: str
    source: str
    member: str | None
    name: str
    # A URL source's content when it was planned (see `fetch`): the job reads that content or none.
    version: str | None = None
    byte_start: int = 0
    byte_end: int | None = None

    @property
    def whole_file(self) -> bool:
        return self.byte_start == 0 and self.byte_end is None

    @property
    def byte_range(self) -> str:
        """`start-end` (`start-` for the file's last range)."""
        return f"{self.byte_start}-{'' if self.byte_end is None else self.byte_end}"

    def to_job(self) -> dict[str, Any]:
        return {"type": JOB_TYPE, **asdict(self)}

    @classmethod
    def from_job(cls, job: dict[str, Any]) -> FileJob:
        try:
            return cls(
                id=str(job["id"]),
                source=str(job["source"]),
                member=job.get("member"),
                name=str(job["name"]),
                version=job.get("version"),
                byte_start=int(job.get("byte_start") or 0),
                byte_end=None if job.get("byte_end") is None else int(job["byte_end"]),
            )
        except KeyError as exc:
            raise ValueError(f"abn_file job without {exc.args[0]!r}: {job!r}") from None
        except (TypeError, ValueError):
            raise ValueError(f"abn_file job with a bad byte range: {job!r}") from None


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


class SourceUnavailable(ConnectionError):
    """A source could not be read this time (connection dropped, download cut short, server error):
    retrying later can succeed; a download's complete part is kept and resumed."""


class SourceChanged(SourceError):
    """The source's content is not the one the job was planned from (a new extract was published
    at the same address): this job cannot be completed from it; plan again."""


def _version_of(headers: Any) -> str | None:
    """The validator a server gives for its content (ETag, else Last-Modified), or None."""
    if etag := headers.get("ETag"):
        return f"etag:{etag}"
    if modified := headers.get("Last-Modified"):
        return f"modified:{modified}"
    return None


def _open(request: urllib.request.Request) -> Any:
    if not _is_url(request.full_url):
        raise SourceError(f"{request.full_url}: only http and https sources are downloaded")
    try:
        return urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S)  # noqa: S310  (http/https checked by callers)
    except urllib.error.HTTPError as exc:
        url = exc.url or request.full_url
        if exc.code >= 500 or exc.code in (408, 429):
            raise SourceUnavailable(f"{url}: HTTP {exc.code} {exc.reason}") from None
        raise SourceError(f"cannot read {url}: HTTP {exc.code} {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise SourceUnavailable(f"cannot reach {request.full_url}: {exc}") from None


def _remote_head(url: str) -> tuple[str | None, int | None]:
    """(the server's validator for `url`'s content, its length) from a HEAD request."""
    with _open(urllib.request.Request(url, method="HEAD")) as resp:  # noqa: S310  (_open checks the scheme)
        length = resp.headers.get("Content-Length")
        return _version_of(resp.headers), int(length) if length and length.isdigit() else None


def _remote_version(url: str) -> str | None:
    return _remote_head(url)[0]


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return f"sha256:{sha.hexdigest()}"


def _local_fingerprint(path: Path) -> str:
    try:
        stat = path.stat()
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror}") from None
    return hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]


def _url_fingerprint(url: str, version: str) -> str:
    return hashlib.sha256(f"{url}|{version}".encode()).hexdigest()[:12]


def _download(url: str, partial: Path, version: str | None) -> None:
    """Complete `partial` with the content at `url` (resuming with Range when it holds a part and
    the server gives a validator). Raises SourceUnavailable when the body is cut short (the part
    is kept), SourceChanged when the server's validator is not `version`."""
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url)  # noqa: S310  (_open checks the scheme)
    if have and version:
        request.add_header("Range", f"bytes={have}-")
        request.add_header("If-Range", version.split(":", 1)[1])  # a changed file comes back whole (200)
    with _open(request) as resp:
        got = _version_of(resp.headers)
        if version and got and got != version:
            raise SourceChanged(f"{url} changed since it was planned ({got}, planned {version}): plan it again")
        resumed = resp.status == 206 and resp.headers.get("Content-Range", "").startswith(f"bytes {have}-")
        if resumed:
            total = int(resp.headers["Content-Range"].rsplit("/", 1)[1])
        else:
            have, length = 0, resp.headers.get("Content-Length")
            total = int(length) if length is not None else None
        try:
            with partial.open("ab" if resumed else "wb") as out:
                shutil.copyfileobj(resp, out, 1 << 20)
        except (OSError, http.client.HTTPException) as exc:
            raise SourceUnavailable(f"download of {url} interrupted at {partial.stat().st_size} bytes: {exc}") from None
    size = partial.stat().st_size
    if total is not None and size != total:
        raise SourceUnavailable(f"download of {url} ended early: {size} of {total} bytes (kept; the next try resumes)")


def fetch(url: str, cache_dir: Path | None = None, version: str | None = None) -> Path:
    """`url`'s content in the cache, verified and complete (a cut-short download is never cached).

    `version` is what the job was planned from: the server's validator (`etag:...`, `modified:...`),
    or the content's digest (`sha256:...`) when the server gives no validator. Content that is not
    that version raises SourceChanged. Without `version` (planning), the current content is fetched.
    Processes that fetch the same file wait for each other (a lock file) and share one download.
    """
    return _fetch(url, cache_dir, version)[0]


def _fetch(url: str, cache_dir: Path | None, version: str | None) -> tuple[Path, str | None]:
    """`fetch`, with the version of what it returns (the validator, or the digest it computed)."""
    cache_dir = cache_dir or default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    name = Path(urllib.parse.urlsplit(url).path).name or "download"
    validator = version if version and not version.startswith("sha256:") else None
    if version is None or validator:
        current = _remote_version(url)
        if validator and current and current != validator:
            raise SourceChanged(f"{url} changed since it was planned ({current}, planned {validator}): plan it again")
        validator = validator or current
    key = validator or version  # None: no validator and nothing planned yet, the digest decides
    base = cache_dir / f"{_url_fingerprint(url, key or 'unversioned')}-{name}"
    with (cache_dir / f"{base.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one download per file; the others then find it cached
        if key and base.exists():
            return base, key
        partial = base.with_name(base.name + ".part")
        _download(url, partial, validator)
        if key and not key.startswith("sha256:"):
            partial.replace(base)
            return base, key
        digest = _digest(partial)
        if version and digest != version:
            partial.unlink()
            raise SourceChanged(
                f"{url} changed since it was planned (content {digest}, planned {version}): plan it again"
            )
        target = cache_dir / f"{_url_fingerprint(url, digest)}-{name}"
        partial.replace(target)
        return target, digest


def url_version(url: str, cache_dir: Path | None = None) -> tuple[str, Path | None, int | None]:
    """(the version a job of `url` is bound to, the cached file if this had to download it, the
    content's length when known)."""
    version, length = _remote_head(url)
    if version:
        return version, None, length
    local, digest = _fetch(url, cache_dir, None)  # no validator: the content's digest is the version
    return digest, local, local.stat().st_size


def _ranges(size: int | None, chunk_bytes: int) -> list[tuple[int, int | None]]:
    """[start, end) byte ranges of about `chunk_bytes` that tile a file of `size` bytes (the last
    one open-ended); one range, the whole file, when the size is unknown or within one chunk."""
    if size is None or size <= chunk_bytes:
        return [(0, None)]
    count = -(-size // chunk_bytes)
    bounds = [size * k // count for k in range(count)]
    return [(start, end) for start, end in zip(bounds, [*bounds[1:], None], strict=True)]


def _split(job: FileJob, size: int | None, chunk_bytes: int) -> list[FileJob]:
    ranges = _ranges(size, chunk_bytes)
    if len(ranges) == 1:
        return [job]
    parts = [replace(job, byte_start=start, byte_end=end) for start, end in ranges]
    return [replace(part, id=f"{job.id}:bytes:{part.byte_range}") for part in parts]


def _zip_members(path: Path, label: str) -> list[tuple[str, int]]:
    """(name, uncompressed size) of each XML file in the ZIP, by name."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = sorted((i.filename, i.file_size) for i in zf.infolist() if i.filename.lower().endswith(".xml"))
    except zipfile.BadZipFile:
        raise SourceError(f"{label} is not a ZIP archive") from None
    if not members:
        raise SourceError(f"{label} holds no .xml file")
    return members


def plan(
    sources: list[str] | tuple[str, ...], cache_dir: Path | None = None, chunk_mib: float = DEFAULT_CHUNK_MIB
) -> list[FileJob]:
    """The jobs of the given sources, in order: one per XML file, or, for a file larger than
    `chunk_mib` MiB whose size is known beforehand (on disk, in a ZIP, a URL's Content-Length),
    one per range of about that size. The ids depend on the chunk size: plan a run's retries with
    the same one."""
    if chunk_mib <= 0:
        raise ValueError(f"chunk_mib must be > 0, not {chunk_mib}")
    chunk_bytes = max(1, int(chunk_mib * (1 << 20)))
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
        version, local, size = url_version(source, cache_dir) if is_url else (None, Path(source), None)
        fingerprint = _url_fingerprint(source, version) if version else _local_fingerprint(Path(source))
        if name.lower().endswith(".zip"):
            local = local or fetch(source, cache_dir, version)
            for member, member_size in _zip_members(local, source):
                member_name = Path(member).name
                job = FileJob(f"abn:{member_name}:{fingerprint}", source, member, member_name, version=version)
                jobs += _split(job, member_size, chunk_bytes)
        else:
            if not is_url:
                size = Path(source).stat().st_size
            jobs += _split(FileJob(f"abn:{name}:{fingerprint}", source, None, name, version=version), size, chunk_bytes)
    names = [j.name for j in jobs if j.byte_start == 0]
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
            from agency_os_spot.abn.fixture import generate  # noqa: PLC0415  (only canaries and tests use it)

            p = _fixture_params(source)
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="abn-fixture-")))
            manifest = generate(p["records"], p["seed"], tmp, files=p["files"], bad_every=p["bad_every"])
            stream: IO[bytes] = stack.enter_context((tmp / manifest["sources"][int(job.member or 1) - 1]).open("rb"))
        else:
            local = fetch(source, cache_dir, job.version) if _is_url(source) else Path(source)
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
