"""Byte ranges of an extract file (RecordRange): ranges that tile a file hold each record once,
with its file-wide index, in both layouts and whatever the boundaries and read sizes."""

from __future__ import annotations

import io
import itertools
import random

import pytest

from agency_os_spot.abn.fixture import FileStats, write_file
from agency_os_spot.abn.parse import ExtractFormatError, RecordRange, iter_raw_blocks


def extract(layout: str, count: int = 300) -> bytes:
    out = io.BytesIO()
    write_file(
        out, seq=1, first=0, count=count, seed=7, bad_every=13, pretty=False, stats=FileStats("x"), layout=layout
    )
    return out.getvalue()


def records(data: bytes, start: int = 0, end: int | None = None, block_size: int = 1 << 20) -> tuple[int, list[bytes]]:
    rng = RecordRange(io.BytesIO(data), start, end, block_size=block_size)
    blocks = iter_raw_blocks(rng, block_size, head=rng.head, tail=rng.tail)
    # A record is compared without the whitespace around it (the published layout's line breaks).
    return rng.first_index, [r.strip() for block in blocks for r in block]


@pytest.mark.parametrize("layout", ["compact", "published"])
@pytest.mark.parametrize("block_size", [7, 64, 4096, 1 << 20])
def test_ranges_that_tile_a_file_hold_each_record_once_with_its_index(layout: str, block_size: int) -> None:
    data = extract(layout)
    _, whole = records(data)
    assert len(whole) == 300
    rnd = random.Random(block_size)
    for _ in range(20):
        cuts = sorted(rnd.sample(range(1, len(data)), rnd.randint(1, 12)))
        bounds = [0, *cuts, None]
        got: list[bytes] = []
        for start, end in itertools.pairwise(bounds):
            first, part = records(data, start, end, block_size)
            assert first == len(got), (start, end)  # the file-wide index of the range's first record
            got += part
        assert got == whole, cuts


def test_boundaries_on_tag_edges_and_empty_ranges() -> None:
    data = extract("published", 20)
    _, whole = records(data)
    starts = [i for i in range(len(data)) if data.startswith(b"<ABR", i)]
    for at in (starts[5] - 1, starts[5], starts[5] + 1, starts[5] + 4, len(data) - 3):
        a = records(data, 0, at)
        b = records(data, at)
        assert a[1] + b[1] == whole and b[0] == len(a[1])
    # A range inside one record holds nothing; the record belongs to the range where it starts.
    assert records(data, starts[3] + 2, starts[3] + 9) == (4, [])
    assert records(data, len(data) - 2) == (20, [])


def test_a_truncated_file_fails_its_last_range_only() -> None:
    data = extract("published", 50)
    cut = data[: len(data) - 200]
    middle = len(cut) // 2
    assert len(records(cut, 0, middle)[1]) > 0
    with pytest.raises(ExtractFormatError, match="truncated"):
        records(cut, middle)


def test_bad_ranges_are_refused() -> None:
    for start, end in ((-1, None), (10, 10), (10, 5)):
        with pytest.raises(ValueError, match="bad byte range"):
            RecordRange(io.BytesIO(b""), start, end)
