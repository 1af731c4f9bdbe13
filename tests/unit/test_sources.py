"""Sources are verified: against a local HTTP server that cuts a body short, drops the connection,
changes the content between requests, gives no validator, or serves two processes at once.

A download is cached only complete, resumes with Range, is shared by processes that need it, and
a job reads the content it was planned from or none (a new extract at the same address is a new
job, even when the server sends no ETag).
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agency_os_spot.abn.sources import SourceChanged, SourceUnavailable, fetch, open_xml, plan
from agency_os_spot.runtime.retry import is_transient
from tests.support.services import http_server


@dataclass
class Publisher:
    """What the server serves, how it misbehaves, and what it was asked."""

    content: bytes = b""
    etag: str | None = None
    cut: str | None = None  # "eof": a clean close halfway, "reset": an RST halfway (next GET only)
    chunk_delay_s: float = 0.0
    gets: list[dict[str, str]] = field(default_factory=list)

    def publish(self, content: bytes, etag: str | None) -> None:
        self.content, self.etag = content, etag


class Handler(http.server.BaseHTTPRequestHandler):
    publisher: Publisher

    def log_message(self, *_args: object) -> None:
        pass

    def _headers(self, status: int, length: int, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        if self.publisher.etag:
            self.send_header("ETag", self.publisher.etag)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()

    def do_HEAD(self) -> None:
        self._headers(200, len(self.publisher.content))

    def do_GET(self) -> None:
        pub = self.publisher
        pub.gets.append(dict(self.headers))
        body, start = pub.content, 0
        wanted = self.headers.get("Range")
        if wanted and pub.etag and self.headers.get("If-Range") == pub.etag:
            start = int(wanted.removeprefix("bytes=").rstrip("-"))
            self._headers(206, len(body) - start, {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"})
        else:
            self._headers(200, len(body))
        body = body[start:]
        cut, pub.cut = pub.cut, None
        if cut:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            if cut == "reset":  # SO_LINGER 0: close with an RST
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        for i in range(0, len(body), 64 * 1024):
            self.wfile.write(body[i : i + 64 * 1024])
            time.sleep(pub.chunk_delay_s)


@pytest.fixture
def server() -> Iterator[tuple[str, Publisher]]:
    publisher = Publisher()
    handler = type("H", (Handler,), {"publisher": publisher})
    with http_server(handler) as url:
        yield f"{url}/20260101_Public01.xml", publisher


def _content(seed: int, size: int = 1 << 20) -> bytes:
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


def _cached(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir() if not p.name.endswith((".part", ".lock")))


@pytest.mark.parametrize("cut", ["eof", "reset"])
def test_a_download_cut_short_is_never_cached_and_resumes_with_range(server, tmp_path, cut):
    url, pub = server
    pub.publish(_content(1), '"v1"')
    pub.cut = cut
    with pytest.raises(SourceUnavailable) as caught:
        fetch(url, tmp_path)
    assert is_transient(caught.value)  # the job retries it in place, it is no failed attempt
    assert _cached(tmp_path) == []  # nothing half-written is ever taken for the file
    [part] = tmp_path.glob("*.part")
    kept = part.stat().st_size  # half on a clean close; an RST may discard what was not read yet
    assert kept == len(pub.content) // 2 if cut == "eof" else kept <= len(pub.content) // 2
    path = fetch(url, tmp_path)
    assert path.read_bytes() == pub.content
    assert pub.gets[-1].get("Range") == (f"bytes={kept}-" if kept else None)  # resumed, not started again
    assert _cached(tmp_path) == [path]


def test_a_source_that_changed_since_it_was_planned_is_refused(server, tmp_path):
    url, pub = server
    pub.publish(_content(1), '"week-1"')
    [job] = plan([url], tmp_path / "planner")
    pub.publish(_content(2), '"week-2"')  # next week's extract at the same address
    with pytest.raises(SourceChanged, match="changed since it was planned"), open_xml(job, tmp_path / "node"):
        pass
    [new_job] = plan([url], tmp_path / "planner")
    assert new_job.id != job.id
    with open_xml(new_job, tmp_path / "node") as stream:
        assert stream.read() == _content(2)


def test_without_a_validator_the_content_digest_binds_the_job(server, tmp_path):
    url, pub = server
    pub.publish(_content(1), None)  # no ETag, no Last-Modified; next week's file has the same size
    [job] = plan([url], tmp_path / "planner")
    pub.publish(_content(2), None)
    [new_job] = plan([url], tmp_path / "planner")
    assert new_job.id != job.id  # last week's completed job would otherwise swallow this week's file
    with pytest.raises(SourceChanged), open_xml(job, tmp_path / "node"):
        pass
    with open_xml(new_job, tmp_path / "node") as stream:
        assert stream.read() == _content(2)


def test_two_processes_fetching_one_file_share_one_download(server, tmp_path):
    url, pub = server
    pub.publish(_content(3, 4 << 20), '"v3"')
    pub.chunk_delay_s = 0.005  # a download that takes a while
    results: list[Path | BaseException] = []

    def one() -> None:
        try:
            results.append(fetch(url, tmp_path))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 2 and results[0] == results[1], results
    assert results[0].read_bytes() == pub.content
    assert len(pub.gets) == 1  # the second waited for the first and found the file cached
