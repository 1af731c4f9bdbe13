"""Generate ABN Bulk Extract files in the real format, for tests, benchmarks and drills.

    python -m agency_os_spot.abn.fixture --records N --seed S --out DIR [--files K] [--zip] [--bad-every M]
        [--layout compact|published] [--pretty]

Writes `YYYYMMDD_Public01.xml` ... `YYYYMMDD_PublicKK.xml`, or with `--zip` two archives split
like `public_split_1_10.zip` / `public_split_11_20.zip`. `--layout compact` (the default) writes
each file as one line; `--layout published` writes the layout data.gov.au publishes: a first line
`<?xml version="1.0"?>` padded to 310 characters, three lines of 50 spaces, the
`<Transfer error="none" ...>` root, one `<ABR>` record per line, empty elements as `" />`.
Every ABN is unique across the files and carries a valid checksum. The records cover the edge
cases of the real extract: individuals with 0-2 given names and an optional title, empty
State/Postcode, the AAT territory code, cancelled ABNs, several OtherEntity and DGR elements,
empty ASICNumber, names that need XML escaping. With `--bad-every M`, every M-th record is made
invalid in one of several ways (bad checksum, missing ABN, short ABN, no entity type, no name,
bad date); `manifest.json` lists the expected valid and rejected counts per file.

The last line printed is the manifest summary as JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from xml.sax.saxutils import escape

from agency_os_spot.abn.checksum import abn_from_base

# A multiplier coprime with 10**9 turns record numbers into distinct nine-digit ABN bases.
_STRIDE = 387_420_489  # 3**18
_STATES = ("NSW", "VIC", "QLD", "WA", "SA", "TAS", "ACT", "NT", "AAT", "")
_NON_INDIVIDUAL = (
    ("PRV", "Australian Private Company"),
    ("TRT", "Discretionary Trading Trust"),
    ("PUB", "Australian Public Company"),
    ("SGE", "State Government Entity"),
    ("OIE", "Other Incorporated Entity"),
    ("SMF", "ATO Regulated Self-Managed Superannuation Fund"),
    ("FPT", "Family Partnership"),
)
_WORDS = (
    "HARBOUR",
    "COASTAL",
    "SUMMIT",
    "KOALA",
    "WATTLE",
    "REEF",
    "OUTBACK",
    "SOUTHERN",
    "CROSS",
    "EUCALYPT",
    "BANKSIA",
    "MURRAY",
    "DARLING",
    "PACIFIC",
    "TASMAN",
    "ARAFURA",
    "GOLDEN",
    "BLUE",
)
_SUFFIXES = ("PTY LTD", "PTY. LTD.", "LIMITED", "TRUST", "& SONS PTY LTD", "HOLDINGS PTY LTD", "CO-OP")
_GIVEN = ("JOHN", "MARY", "WEI", "PRIYA", "LIAM", "OLIVIA", "NGUYEN", "AROHA", "JACK", "CHLOE", "ZOË")
_FAMILY = ("SMITH", "NGUYEN", "O'BRIEN", "WILLIAMS", "BROWN", "TAYLOR", "CHEN", "PATEL", "KELLY")
_TITLES = ("MR", "MRS", "MS", "DR", "")
BAD_KINDS = (
    "invalid ABN checksum",
    "missing ABN",
    "ABN is not 11 digits",
    "missing EntityTypeInd",
    "missing entity name",
    "invalid recordLastUpdatedDate",
)


@dataclass
class FileStats:
    name: str
    records: int = 0
    valid: int = 0
    bad: int = 0
    bad_reasons: dict[str, int] = field(default_factory=dict)


def _date(rng: random.Random, start_year: int = 1999, end_year: int = 2026) -> str:
    return f"{rng.randint(start_year, end_year)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"


def _name(rng: random.Random) -> str:
    return f"{rng.choice(_WORDS)} {rng.choice(_WORDS)} {rng.choice(_SUFFIXES)}"


def _address(rng: random.Random) -> str:
    state = rng.choice(_STATES)
    postcode = "" if state == "" or rng.random() < 0.03 else f"{rng.randint(800, 7999):04d}"
    return (
        f"<BusinessAddress><AddressDetails><State>{state}</State>"
        f"<Postcode>{postcode}</Postcode></AddressDetails></BusinessAddress>"
    )


def record_xml(index: int, seed: int, bad_kind: str | None = None) -> str:  # noqa: PLR0912  one branch per edge case
    """One `<ABR>` element for record number `index` (deterministic for a given seed)."""
    rng = random.Random(seed * 1_000_003 + index)
    base = (index * _STRIDE + seed * 7919) % 10**9
    abn = abn_from_base(base)
    status = "CAN" if rng.random() < 0.12 else "ACT"
    updated = _date(rng, 2000, 2026)
    individual = rng.random() < 0.35
    parts: list[str] = []

    if bad_kind == "invalid ABN checksum":
        abn = abn[:-1] + str((int(abn[-1]) + 1) % 10)
    elif bad_kind == "ABN is not 11 digits":
        abn = abn[:10]
    elif bad_kind == "invalid recordLastUpdatedDate":
        updated = "20241345"
    if bad_kind != "missing ABN":
        parts.append(f'<ABN status="{status}" ABNStatusFromDate="{_date(rng)}">{abn}</ABN>')

    code, text = ("IND", "Individual/Sole Trader") if individual else rng.choice(_NON_INDIVIDUAL)
    if bad_kind == "missing EntityTypeInd":
        parts.append(f"<EntityType><EntityTypeText>{text}</EntityTypeText></EntityType>")
    else:
        parts.append(
            f"<EntityType><EntityTypeInd>{code}</EntityTypeInd><EntityTypeText>{text}</EntityTypeText></EntityType>"
        )

    if individual:
        names = []
        title = rng.choice(_TITLES)
        if title:
            names.append(f"<NameTitle>{title}</NameTitle>")
        for _ in range(rng.choice((0, 1, 1, 2, 2, 2))):
            names.append(f"<GivenName>{escape(rng.choice(_GIVEN))}</GivenName>")
        if bad_kind != "missing entity name":
            names.append(f"<FamilyName>{escape(rng.choice(_FAMILY))}</FamilyName>")
        parts.append(
            f'<LegalEntity><IndividualName type="LGL">{"".join(names)}</IndividualName>{_address(rng)}</LegalEntity>'
        )
    else:
        main = (
            ""
            if bad_kind == "missing entity name"
            else f"<NonIndividualNameText>{escape(_name(rng))}</NonIndividualNameText>"
        )
        parts.append(f'<MainEntity><NonIndividualName type="MN">{main}</NonIndividualName>{_address(rng)}</MainEntity>')
        if code in ("PRV", "PUB") or rng.random() < 0.2:
            asic = "" if rng.random() < 0.1 else f"{rng.randint(0, 999_999_999):09d}"
            parts.append(f'<ASICNumber ASICNumberType="undetermined">{asic}</ASICNumber>')

    roll = rng.random()
    if roll < 0.55:
        parts.append(f'<GST status="ACT" GSTStatusFromDate="{_date(rng)}"/>')
    elif roll < 0.75:
        parts.append('<GST status="NON" GSTStatusFromDate="19000101"/>')
    elif roll < 0.85:
        parts.append(f'<GST status="CAN" GSTStatusFromDate="{_date(rng)}"/>')

    if not individual and rng.random() < 0.05:
        for _ in range(rng.randint(1, 2)):
            parts.append(
                f'<DGR DGRStatusFromDate="{_date(rng)}"><NonIndividualName type="DGR">'
                f"<NonIndividualNameText>{escape(_name(rng))}</NonIndividualNameText></NonIndividualName></DGR>"
            )
    for _ in range(rng.choice((0, 0, 0, 1, 1, 2, 3))):
        kind = rng.choice(("TRD", "BN", "OTN"))
        parts.append(
            f'<OtherEntity><NonIndividualName type="{kind}">'
            f"<NonIndividualNameText>{escape(_name(rng))}</NonIndividualNameText></NonIndividualName></OtherEntity>"
        )
    replaced = "Y" if rng.random() < 0.01 else "N"
    return f'<ABR recordLastUpdatedDate="{updated}" replaced="{replaced}">{"".join(parts)}</ABR>'


LAYOUTS = ("compact", "published")
# The publisher's header (checked against 20250528_Public01.xml): the declaration padded to 310
# characters, three lines of 50 spaces, then the root element with its required `error` attribute.
_PUBLISHED_HEAD = (
    '<?xml version="1.0"?>'.ljust(310)
    + "\n"
    + (" " * 50 + "\n") * 3
    + '<Transfer error="none" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
    + ' xsi:noNamespaceSchemaLocation="BulkExtract.xsd">'
)


def _published(xml: str) -> str:
    """One record as a line of the published files: empty elements written `" />`."""
    return xml.replace('"/>', '" />') + "\n"


def _pretty(xml: str) -> str:
    return xml.replace("><", ">\n  <")


def _split(total: int, parts: int) -> list[int]:
    size, extra = divmod(total, parts)
    return [size + (1 if i < extra else 0) for i in range(parts)]


def _records(first: int, count: int, seed: int, bad_every: int) -> Iterator[tuple[str, str | None]]:
    for index in range(first, first + count):
        bad = None
        if bad_every and (index + 1) % bad_every == 0:
            bad = BAD_KINDS[((index + 1) // bad_every) % len(BAD_KINDS)]
        yield record_xml(index, seed, bad), bad


def write_file(
    out: IO[bytes],
    *,
    seq: int,
    first: int,
    count: int,
    seed: int,
    bad_every: int,
    pretty: bool,
    stats: FileStats,
    layout: str = "compact",
) -> None:
    info = (
        f"<TransferInfo><FileSequenceNumber>{seq}</FileSequenceNumber><RecordCount>{count}</RecordCount>"
        "<ExtractTime>2026-06-24T06:00:00</ExtractTime></TransferInfo>"
    )
    published = layout == "published"
    if published:
        head = _PUBLISHED_HEAD + info + "\n"
    else:
        head = '<?xml version="1.0" encoding="UTF-8"?><Transfer error="none">' + info
    out.write((_pretty(head) + "\n" if pretty else head).encode())
    chunk: list[str] = []
    for xml, bad in _records(first, count, seed, bad_every):
        stats.records += 1
        if bad:
            stats.bad += 1
            stats.bad_reasons[bad] = stats.bad_reasons.get(bad, 0) + 1
        else:
            stats.valid += 1
        chunk.append(_pretty(xml) + "\n" if pretty else _published(xml) if published else xml)
        if len(chunk) >= 2000:
            out.write("".join(chunk).encode())
            chunk.clear()
    out.write(("".join(chunk) + "</Transfer>").encode())


def generate(
    records: int,
    seed: int,
    out_dir: Path,
    *,
    files: int = 20,
    use_zip: bool = False,
    bad_every: int = 0,
    pretty: bool = False,
    extract_date: str = "20260624",
    layout: str = "compact",
) -> dict:
    """Write the extract and its manifest; return the manifest."""
    if records < 0 or files < 1 or bad_every < 0:
        raise ValueError("records >= 0, files >= 1 and bad_every >= 0 are required")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = _split(records, files)
    names = [f"{extract_date}_Public{seq:02d}.xml" for seq in range(1, files + 1)]
    stats = [FileStats(name) for name in names]
    archives: list[str] = []
    with ExitStack() as stack:
        zips: list[zipfile.ZipFile] = []
        if use_zip:
            half = (files + 1) // 2
            groups = [(1, half), (half + 1, files)] if files > 1 else [(1, 1)]
            for lo, hi in groups:
                archive = f"public_split_{lo}_{hi}.zip"
                archives.append(archive)
                zf = zipfile.ZipFile(out_dir / archive, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1)
                zips.append(stack.enter_context(zf))
        first = 0
        for seq, (name, count) in enumerate(zip(names, sizes, strict=True), start=1):
            if use_zip:
                zf = zips[0] if seq <= (files + 1) // 2 else zips[-1]
                with zf.open(name, "w", force_zip64=True) as member:
                    write_file(
                        member,
                        seq=seq,
                        first=first,
                        count=count,
                        seed=seed,
                        bad_every=bad_every,
                        pretty=pretty,
                        stats=stats[seq - 1],
                        layout=layout,
                    )
            else:
                with (out_dir / name).open("wb") as fh:
                    write_file(
                        fh,
                        seq=seq,
                        first=first,
                        count=count,
                        seed=seed,
                        bad_every=bad_every,
                        pretty=pretty,
                        stats=stats[seq - 1],
                        layout=layout,
                    )
            first += count
    manifest = {
        "records": records,
        "valid": sum(s.valid for s in stats),
        "bad": sum(s.bad for s in stats),
        "seed": seed,
        "extract_date": extract_date,
        "layout": layout,
        "sources": archives if use_zip else names,
        "files": [s.__dict__ for s in stats],
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agency-os-spot abn-fixture", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, required=True, help="total records across all files")
    parser.add_argument("--seed", type=int, default=1, help="random seed (same seed, same files)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--files", type=int, default=20, help="number of XML files (default 20, like the real extract)")
    parser.add_argument("--zip", action="store_true", help="write two ZIP archives like public_split_1_10.zip")
    parser.add_argument("--bad-every", type=int, default=0, metavar="M", help="make every M-th record invalid")
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="compact",
        help="compact: each file one line (default); published: the data.gov.au layout, one record per line",
    )
    parser.add_argument("--pretty", action="store_true", help="one element per line instead of compact XML")
    args = parser.parse_args(argv)
    try:
        manifest = generate(
            args.records,
            args.seed,
            args.out,
            files=args.files,
            use_zip=args.zip,
            bad_every=args.bad_every,
            pretty=args.pretty,
            layout=args.layout,
        )
    except ValueError as exc:
        parser.error(str(exc))
    summary = {k: manifest[k] for k in ("records", "valid", "bad", "seed", "sources")}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
