"""Generate ABN Bulk Extract files in the real format, for tests, benchmarks and drills.

    python -m agency_os_spot.abn.fixture --records N --seed S --out DIR [--files K] [--zip] [--bad-every M]
        [--layout published|compact] [--pretty]

Writes `YYYYMMDD_Public01.xml` ... `YYYYMMDD_PublicKK.xml`, or with `--zip` two archives split
like `public_split_1_10.zip` / `public_split_11_20.zip`. By default (`--layout published`) the files
are in the layout data.gov.au publishes: a first line `<?xml version="1.0"?>` padded to 310
characters, three lines of 50 spaces, the `<Transfer error="none" ...>` root, one `<ABR>` record
per line, empty elements as `" />`; `--layout compact` writes each file as one line. Files without
bad records validate against the publisher's schema (bulkextract.xsd) in either layout.
Every ABN is unique across the files and carries a valid checksum. The records cover the edge
cases of the real extract: upper- and mixed-case names with literal double quotes, `&`, `@` and
`.`; individuals with a family name only or with up to two given names and an optional title;
empty State/Postcode, postcode 0000, the AAT territory code, cancelled ABNs, empty ASICNumber;
the nameless main DGR (`<DGR status="ACT" DGRStatusFromDate="..." />`) and DGRs with a name;
a long tail of OtherEntity elements (most records 0-3, some dozens, a rare few hundreds, more
than 300 at times); about one record in 100 with every value at the publisher's field limit
(names 200/100/50, title 50, EntityTypeText 100, Postcode 50). With `--bad-every M`, every M-th
record is made invalid in one of several ways (bad checksum, missing ABN, short ABN, no entity
type, no name, bad date, or a value beyond its field limit: State, Postcode, names, title,
EntityTypeText, ASICNumber); `manifest.json` lists the expected valid and rejected counts per
file, by the reason the parser gives (`BAD_KINDS`).

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
    "Harbour", "Coastal", "Summit", "Koala", "Wattle", "Reef", "Outback", "Southern", "Cross", "Eucalypt",
    "Banksia", "Murray", "Darling", "Pacific", "Tasman", "Arafura", "Golden", "Blue", "Wesfarmers",
    "Federation", "Insurance", "Mallee", "Kimberley", "Bayside",
)  # fmt: skip
_SUFFIXES = (
    "PTY LTD", "Pty Ltd", "Pty. Ltd.", "LIMITED", "Limited", "TRUST", "Trust", "& SONS PTY LTD", "& Co",
    "Holdings Pty Ltd", "CO-OP", "Incorporated", "Inc.",
)  # fmt: skip
_GIVEN = ("JOHN", "MARY", "WEI", "PRIYA", "LIAM", "OLIVIA", "NGUYEN", "AROHA", "JACK", "CHLOE", "ZOË", "Mary-Jane")
_FAMILY = ("SMITH", "NGUYEN", "O'BRIEN", "WILLIAMS", "BROWN", "TAYLOR", "CHEN", "PATEL", "KELLY", "van der Berg")
_TITLES = ("MR", "MRS", "MS", "DR", "MISS", "", "", "")
_OTHER_TYPES = ("TRD", "BN", "OTN")
_FEW = (0, 0, 0, 1, 1, 2, 3)
_GIVEN_COUNTS = (0, 1, 1, 2, 2, 2)
# Reasons the parser gives (the start of them): a bad record of each kind is rejected with it.
_LIMIT_KINDS = {
    "NonIndividualNameText longer than 200 characters": ("NonIndividualNameText", 200),
    "GivenName longer than 100 characters": ("GivenName", 100),
    "FamilyName longer than 50 characters": ("FamilyName", 50),
    "NameTitle longer than 50 characters": ("NameTitle", 50),
    "EntityTypeText longer than 100 characters": ("EntityTypeText", 100),
    "State longer than 3 characters": ("State", 3),
    "Postcode longer than 50 characters": ("Postcode", 50),
    "ASICNumber is not up to 9 digits": ("ASICNumber", 9),
}
BAD_KINDS = (
    "invalid ABN checksum",
    "missing ABN",
    "ABN is not 11 digits",
    "missing EntityTypeInd",
    "missing entity name",
    "invalid recordLastUpdatedDate",
    *_LIMIT_KINDS,
)
_PERSON_KINDS = frozenset(
    k for k, (what, _) in _LIMIT_KINDS.items() if what in ("GivenName", "FamilyName", "NameTitle")
)
_COMPANY_KINDS = frozenset(
    k for k, (what, _) in _LIMIT_KINDS.items() if what in ("NonIndividualNameText", "ASICNumber")
)


def _company_name(rng: random.Random) -> str:  # noqa: PLR0911  one return per form of name
    """A name as the register holds them: upper or mixed case, literal double quotes, '&', '@', '.'."""
    w1, w2, w3 = rng.sample(_WORDS, 3)
    family = rng.choice(_FAMILY).title()
    suffix = rng.choice(_SUFFIXES)
    form = rng.randrange(10)
    if form == 0:
        return f"{w1} {w2} {suffix}".upper()
    if form == 1:
        return f'"{w1} {w2} {w3}"'
    if form == 2:
        return f'The Trustee for the "{w1}" {family} Family Trust'
    if form == 3:
        return f"{family} & {rng.choice(_FAMILY).title()} {w1}"
    if form == 4:
        return f"Cafe @ {w1} {w2}"
    if form == 5:
        return f"{w1}{w2}.com.au".lower()
    if form == 6:
        return f"J. & M. {family} {suffix}"
    if form == 7:
        return f"{w1}'s {w2} Café"
    return f"{w1} {w2} {suffix}"


def _fill(text: str, length: int) -> str:
    """`text` repeated to exactly `length` characters, without white space at either end."""
    filled = text
    while len(filled) < length:
        filled += " " + text
    return filled[: length - 1] + "."


# Pools drawn from per record (built once, escaped for XML): a record picks from them cheaply.
_POOL = random.Random(2026)
_NAMES = tuple(escape(_company_name(_POOL)) for _ in range(4096))
_PLAIN_NAMES = tuple(n for n in _NAMES if "&" not in n and n.isascii())
_OTHERS = tuple(
    f'<OtherEntity><NonIndividualName type="{_POOL.choice(_OTHER_TYPES)}">'
    f"<NonIndividualNameText>{_POOL.choice(_NAMES)}</NonIndividualNameText></NonIndividualName></OtherEntity>"
    for _ in range(16384)
)
# Values at the publisher's field limits (ASCII and without entities: as many bytes as characters).
_AT_LIMIT_NAMES = tuple(_fill(_POOL.choice(_PLAIN_NAMES), 200) for _ in range(64))
_AT_LIMIT_GIVEN = tuple(_fill(g, 100) for g in _GIVEN if g.isascii())
_AT_LIMIT_FAMILY = tuple(_fill(f, 50) for f in _FAMILY)
_AT_LIMIT_TITLE = _fill("Air Vice-Marshal", 50)
_AT_LIMIT_POSTCODE = _fill("GPO Box 1234", 50)
_GIVEN_XML = tuple(escape(g) for g in _GIVEN)
_FAMILY_XML = tuple(escape(f) for f in _FAMILY)
_POSTCODES = tuple(f"{p:04d}" for p in range(800, 8000))


def _dates(start_year: int, end_year: int) -> tuple[str, ...]:
    return tuple(
        f"{y}{m:02d}{d:02d}" for y in range(start_year, end_year + 1) for m in range(1, 13) for d in range(1, 29)
    )


_DATES = _dates(1999, 2026)
_UPDATED = _dates(2000, 2026)
_N_DATES, _N_UPDATED, _N_NAMES, _N_POSTCODES = len(_DATES), len(_UPDATED), len(_NAMES), len(_POSTCODES)


@dataclass
class FileStats:
    name: str
    records: int = 0
    valid: int = 0
    bad: int = 0
    bad_reasons: dict[str, int] = field(default_factory=dict)


def _beyond(text: str, kind: str, rng: random.Random) -> str:
    """`text` made longer than the limit of the bad kind's field."""
    return _fill(text, _LIMIT_KINDS[kind][1] + rng.randint(1, 20))


def _address(rng: random.Random, at_limit: bool, bad_kind: str | None) -> str:
    rand = rng.random
    state = _STATES[int(rand() * len(_STATES))]
    roll = rand()
    if state == "" or roll < 0.03:
        postcode = ""
    elif roll < 0.04:
        postcode = "0000"
    else:
        postcode = _AT_LIMIT_POSTCODE if at_limit else _POSTCODES[int(rand() * _N_POSTCODES)]
    if bad_kind == "State longer than 3 characters":
        state = (state or "NSW").ljust(3, "X") + "X"
    elif bad_kind == "Postcode longer than 50 characters":
        postcode = _beyond(postcode or "0000", bad_kind, rng)
    return (
        f"<BusinessAddress><AddressDetails><State>{state}</State>"
        f"<Postcode>{postcode}</Postcode></AddressDetails></BusinessAddress>"
    )


def record_xml(index: int, seed: int, bad_kind: str | None = None) -> str:  # noqa: PLR0912, PLR0915  one branch per edge case
    """One `<ABR>` element for record number `index` (deterministic for a given seed), empty
    elements written `"/>` (the compact layout)."""
    rng = random.Random(seed * 1_000_003 + index)
    rand = rng.random
    base = (index * _STRIDE + seed * 7919) % 10**9
    abn = abn_from_base(base)
    status = "CAN" if rand() < 0.12 else "ACT"
    updated = _UPDATED[int(rand() * _N_UPDATED)]
    individual = rand() < 0.35
    if bad_kind in _PERSON_KINDS:
        individual = True
    elif bad_kind in _COMPANY_KINDS:
        individual = False
    at_limit = rand() < 0.01  # every value of the record as long as the publisher allows
    parts: list[str] = []

    if bad_kind == "invalid ABN checksum":
        abn = abn[:-1] + str((int(abn[-1]) + 1) % 10)
    elif bad_kind == "ABN is not 11 digits":
        abn = abn[:10]
    elif bad_kind == "invalid recordLastUpdatedDate":
        updated = "20241345"
    if bad_kind != "missing ABN":
        parts.append(f'<ABN status="{status}" ABNStatusFromDate="{_DATES[int(rand() * _N_DATES)]}">{abn}</ABN>')

    code, text = (
        ("IND", "Individual/Sole Trader") if individual else _NON_INDIVIDUAL[int(rand() * len(_NON_INDIVIDUAL))]
    )
    if at_limit:
        text = _fill(text, 100)
    if bad_kind == "EntityTypeText longer than 100 characters":
        text = _beyond(text, bad_kind, rng)
    if bad_kind == "missing EntityTypeInd":
        parts.append(f"<EntityType><EntityTypeText>{text}</EntityTypeText></EntityType>")
    else:
        parts.append(
            f"<EntityType><EntityTypeInd>{code}</EntityTypeInd><EntityTypeText>{text}</EntityTypeText></EntityType>"
        )

    if individual:
        names = []
        title = _AT_LIMIT_TITLE if at_limit else _TITLES[int(rand() * len(_TITLES))]
        if bad_kind == "NameTitle longer than 50 characters":
            title = _beyond(title or "DR", bad_kind, rng)
        if title:
            names.append(f"<NameTitle>{title}</NameTitle>")
        givens = _AT_LIMIT_GIVEN if at_limit else _GIVEN_XML
        count = _GIVEN_COUNTS[int(rand() * 6)]
        for _ in range(count):
            names.append(f"<GivenName>{givens[int(rand() * len(givens))]}</GivenName>")
        if bad_kind == "GivenName longer than 100 characters":  # in place of the last one (at most two)
            names[len(names) - (count > 0) :] = [f"<GivenName>{_beyond('MAXIMILIAN', bad_kind, rng)}</GivenName>"]
        family = _AT_LIMIT_FAMILY[int(rand() * len(_FAMILY))] if at_limit else _FAMILY_XML[int(rand() * len(_FAMILY))]
        if bad_kind == "FamilyName longer than 50 characters":
            family = _beyond("WOLFESCHLEGELSTEINHAUSEN", bad_kind, rng)
        if bad_kind != "missing entity name":
            names.append(f"<FamilyName>{family}</FamilyName>")
        parts.append(
            f'<LegalEntity><IndividualName type="LGL">{"".join(names)}</IndividualName>'
            f"{_address(rng, at_limit, bad_kind)}</LegalEntity>"
        )
    else:
        name = _AT_LIMIT_NAMES[int(rand() * len(_AT_LIMIT_NAMES))] if at_limit else _NAMES[int(rand() * _N_NAMES)]
        if bad_kind == "NonIndividualNameText longer than 200 characters":
            name = _beyond("Wesfarmers Federation Insurance", bad_kind, rng)
        main = "" if bad_kind == "missing entity name" else f"<NonIndividualNameText>{name}</NonIndividualNameText>"
        parts.append(
            f'<MainEntity><NonIndividualName type="MN">{main}</NonIndividualName>'
            f"{_address(rng, at_limit, bad_kind)}</MainEntity>"
        )
        if bad_kind == "ASICNumber is not up to 9 digits":
            parts.append(f'<ASICNumber ASICNumberType="undetermined">{rng.randrange(10**9, 10**10)}</ASICNumber>')
        elif code in ("PRV", "PUB") or rand() < 0.2:
            asic = "" if rand() < 0.1 else f"{int(rand() * 10**9):09d}"
            parts.append(f'<ASICNumber ASICNumberType="undetermined">{asic}</ASICNumber>')

    roll = rand()
    if roll < 0.55:
        parts.append(f'<GST status="ACT" GSTStatusFromDate="{_DATES[int(rand() * _N_DATES)]}"/>')
    elif roll < 0.75:
        parts.append('<GST status="NON" GSTStatusFromDate="19000101"/>')
    elif roll < 0.85:
        parts.append(f'<GST status="CAN" GSTStatusFromDate="{_DATES[int(rand() * _N_DATES)]}"/>')

    if not individual and rand() < 0.05:
        # The main DGR carries no name (its status written before its date); others carry one.
        main_dgr = rand() < 0.7
        if main_dgr:
            parts.append(f'<DGR status="ACT" DGRStatusFromDate="{_DATES[int(rand() * _N_DATES)]}"/>')
        for _ in range(int(rand() * 3) if main_dgr else 1 + int(rand() * 2)):
            parts.append(
                f'<DGR DGRStatusFromDate="{_DATES[int(rand() * _N_DATES)]}"><NonIndividualName type="DGR">'
                f"<NonIndividualNameText>{_NAMES[int(rand() * _N_NAMES)]}</NonIndividualNameText>"
                "</NonIndividualName></DGR>"
            )
    # Most records have 0-3 other names, some dozens, a rare few hundreds (more than 300 at times).
    roll = rand()
    count = 100 + int(rand() * 260) if roll < 0.0005 else 10 + int(rand() * 50) if roll < 0.02 else _FEW[int(roll * 7)]
    if count:
        bits = rng.getrandbits
        parts.extend([_OTHERS[bits(14)] for _ in range(count)])
        if at_limit:
            parts.append(
                f'<OtherEntity><NonIndividualName type="TRD"><NonIndividualNameText>{_AT_LIMIT_NAMES[bits(6)]}'
                "</NonIndividualNameText></NonIndividualName></OtherEntity>"
            )
    replaced = "Y" if rand() < 0.01 else "N"
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
    layout: str = "published",
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
    layout: str = "published",
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
        default="published",
        help="published: the data.gov.au layout, one record per line (default); compact: each file one line",
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
