"""Streaming parser for ABN Bulk Extract XML, with per-record validation.

A file is read in blocks (never whole) and cut at `</ABR>` boundaries: a closing tag can
not occur inside text, so each piece is exactly one record. Each record is then parsed by
one of two paths that give identical results:

* a fast path: one compiled regular expression for the element order the schema defines
  (ABN, EntityType, MainEntity|LegalEntity, ASICNumber?, GST?, DGR*, OtherEntity*), for records
  without line breaks or control characters inside them, in either layout: compact (records run
  on) or published (one record per line, empty elements as `" />`). It runs in C;
* the full path: lxml on that one record, for anything the fast path does not recognise
  (entities such as `&amp;`, another attribute order, self-closing empty elements, comments,
  and every malformed record, whose reject reason it determines).

`iter_records()` yields `Record` (valid) or `Reject` objects with the record's index in the
file, so a resumed run can skip exactly the records already committed.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from operator import mul
from typing import IO, NamedTuple

from lxml import etree

from agency_os_spot.abn.checksum import WEIGHTS, abn_is_valid

# sum(w * (c - 48)) - 10 over the ASCII codes c of the ABN (see agency_os_spot.abn.checksum).
_CHECKSUM_OFFSET = ord("0") * sum(WEIGHTS) + 10

BLOCK_SIZE = 1 << 20
_END = b"</ABR>"
_START = b"<ABR"  # no other element of the extract starts so

# Column order of the abn_entity table (the writers rely on it).
COLUMNS = (
    "abn",
    "abn_status",
    "abn_status_from",
    "entity_type_code",
    "entity_type_text",
    "entity_name",
    "given_names",
    "family_name",
    "state",
    "postcode",
    "gst_status",
    "gst_status_from",
    "asic_number",
    "dgr_status_from",
    "other_names",
    "record_last_updated",
    "replaced",
    "source_file",
)


class Record(NamedTuple):
    """One valid ABR record: a row of abn_entity (COLUMNS order, without source_file), plus its index.

    Dates are ISO strings (YYYY-MM-DD): PostgreSQL's date input and SQLite's text both take
    them, and they compare in date order.
    """

    abn: str
    abn_status: str
    abn_status_from: str | None
    entity_type_code: str
    entity_type_text: str | None
    entity_name: str
    given_names: str | None
    family_name: str | None
    state: str | None
    postcode: str | None
    gst_status: str | None
    gst_status_from: str | None
    asic_number: str | None
    dgr_status_from: str | None
    other_names: str  # JSON list of {"type", "name"}
    record_last_updated: str
    replaced: bool
    index: int


@dataclass(frozen=True, slots=True)
class Reject:
    """A record that failed validation, with the reason (goes to abn_reject)."""

    index: int
    abn: str | None
    reason: str


class ExtractFormatError(ValueError):
    """The file is not an ABN Bulk Extract (or is truncated); the whole file is unusable."""


class RecordError(ValueError):
    def __init__(self, reason: str, abn: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.abn = abn


# The publisher's field limits (its readme, "Field limits"): the most characters a value may hold. The
# columns hold every value within them; a record beyond them, or with a control character in any
# field, is rejected with a reason naming the field and its limit. Dates are YYYYMMDD, the ABN is
# 11 digits and ASICNumber up to 9 digits (or empty).
LIMITS = {
    "ABN @status": 3,
    "EntityTypeInd": 4,
    "EntityTypeText": 100,
    "NonIndividualNameText": 200,
    "NameTitle": 50,
    "GivenName": 100,
    "FamilyName": 50,
    "State": 3,
    "Postcode": 50,
    "ASICNumber": 9,
    "GST @status": 3,
    "NonIndividualName @type": 3,
}


# Text as the compact files hold it: nothing, or no whitespace at either end (anything else takes
# the full path, which strips), and at most `limit` bytes. A value within its limit in bytes is
# within it in characters too (entities and UTF-8 only shrink when decoded); a longer one takes the
# full path, which counts characters and rejects what is beyond the limit.
def _text_re(limit: int) -> bytes:  # may be empty
    return rb"((?:[^<\s](?:[^<]{0,%d}[^<\s])?)?)" % (limit - 2)


def _text1_re(limit: int) -> bytes:  # not empty
    return rb"([^<\s](?:[^<]{0,%d}[^<\s])?)" % (limit - 2)


_FAST = re.compile(
    rb"\s*<ABR\s+recordLastUpdatedDate=\"(\d{8})\"\s+replaced=\"([YN])\"\s*>\s*"
    rb"<ABN\s+status=\"([A-Z]{1,3})\"\s+ABNStatusFromDate=\"(\d{8})\"\s*>(\d{11})</ABN>\s*"
    rb"<EntityType>\s*<EntityTypeInd>([A-Z]{1,4})</EntityTypeInd>\s*"
    rb"(?:<EntityTypeText>" + _text_re(100) + rb"</EntityTypeText>\s*)?</EntityType>\s*"
    rb"(?:<MainEntity>\s*<NonIndividualName\s+type=\"MN\"\s*>\s*"
    rb"<NonIndividualNameText>" + _text1_re(200) + rb"</NonIndividualNameText>\s*</NonIndividualName>\s*"
    rb"|<LegalEntity>\s*<IndividualName\s+type=\"LGL\"\s*>\s*(?:<NameTitle>[^<&]{0,50}</NameTitle>\s*)?"
    rb"(?:<GivenName>" + _text_re(100) + rb"</GivenName>\s*)?(?:<GivenName>" + _text_re(100) + rb"</GivenName>\s*)?"
    rb"<FamilyName>" + _text1_re(50) + rb"</FamilyName>\s*</IndividualName>\s*)"
    rb"<BusinessAddress>\s*<AddressDetails>\s*<State>" + _text_re(3) + rb"</State>\s*"
    rb"<Postcode>" + _text_re(50) + rb"</Postcode>\s*"
    rb"</AddressDetails>\s*</BusinessAddress>\s*</(?:MainEntity|LegalEntity)>\s*"
    rb"(?:<ASICNumber\s+ASICNumberType=\"[^\"<&]*\"\s*>(\d{0,9})</ASICNumber>\s*)?"
    rb"(?:<GST\s+status=\"([A-Z]{1,3})\"\s+GSTStatusFromDate=\"(\d{8})\"\s*/>\s*)?",
)
# A DGR or OtherEntity element with its name; or, with no name, the main DGR as the publisher writes
# it: `<DGR status="ACT" DGRStatusFromDate="20060301" />` (type and name then match empty).
_OTHER_ELEMENT = (
    rb"\s*<(DGR|OtherEntity)(?:\s+status=\"[A-Z]{1,3}\")?(?:\s+DGRStatusFromDate=\"(\d{8})\")?\s*"
    rb"(?:/>|>\s*<NonIndividualName\s+type=\"([A-Z]{1,3})\"\s*>\s*<NonIndividualNameText>"
    + _text1_re(200)
    + rb"</NonIndividualNameText>\s*</NonIndividualName>\s*</(?:DGR|OtherEntity)>)\s*"
)
_OTHER = re.compile(_OTHER_ELEMENT)
_OTHERS_ALL = re.compile(
    rb"(?:"
    + _OTHER_ELEMENT.replace(b"(DGR|OtherEntity)", b"(?:DGR|OtherEntity)")
    .replace(b"(\\d{8})", b"\\d{8}")
    .replace(b"([A-Z]{1,3})", b"[A-Z]{1,3}")
    + rb")*\s*"
)
# Bytes that send a record to the full path: a backslash, tab or line break (so no fast-path value
# ever needs COPY escaping) and every other ASCII control character (a bad record: the full path
# gives the reason). Deleting them and comparing lengths costs what four `in` tests did.
_FAST_DECLINES = bytes(range(0x20)) + b"\x7f\\"
_C1 = re.compile("[\x80-\x9f]")  # the C1 control characters (only in non-ASCII records)
_CONTROL_CHARS = re.compile("[\x00-\x1f\x7f-\x9f]")


@lru_cache(maxsize=65536)
def _iso(text: str) -> str | None:
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:])).isoformat()
    except ValueError:
        return None


def parse_date(value: str | bytes | None, what: str, required: bool = False) -> str | None:
    """YYYYMMDD -> 'YYYY-MM-DD'. Empty is None (or an error when required)."""
    if value is None or value in ("", b""):
        if required:
            raise RecordError(f"missing {what}")
        return None
    text = value.decode() if isinstance(value, bytes) else value
    iso = _iso(text) if len(text) == 8 and text.isdigit() else None
    if iso is None:
        raise RecordError(f"invalid {what} {text!r}")
    return iso


_ENTITY = re.compile(r"&(?:(lt|gt|amp|quot|apos)|#([0-9]{1,7})|#x([0-9A-Fa-f]{1,6}));")
_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}


class _NotXml(ValueError):
    """Text the fast path cannot decode exactly as XML would; the full path decides."""


def _unescape(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(1):
            return _NAMED[match.group(1)]
        code = int(match.group(2)) if match.group(2) else int(match.group(3), 16)
        if code < 0x20 or 0x7F <= code <= 0x9F or code > 0x10FFFF or code == 0x5C:
            # a control character (or not a character), or a backslash (the fast path's values go to
            # COPY unescaped): the full path decides
            raise _NotXml(text)
        return chr(code)

    decoded = _ENTITY.sub(one, text)
    if "&" in _ENTITY.sub("", text):
        raise _NotXml(text)  # an entity XML does not define, or a bare '&': malformed
    return decoded


def _b(value: bytes | None) -> bytes | None:
    """Text of a fast-path field as UTF-8 bytes: entities decoded, stripped, empty is None
    (an empty <Postcode></Postcode> is NULL)."""
    if not value:
        return None
    if b"&" in value:
        value = _unescape(value.decode()).encode()
    return value.strip() or None


def _s(value: bytes | None) -> str | None:
    value = _b(value)
    return None if value is None else value.decode()


_VALID_DATES: dict[bytes, str] = {}  # YYYYMMDD -> ISO; dates repeat (~10k distinct in an extract)


def _check_date(value: bytes | None) -> bytes | None:
    if value is None or value in _VALID_DATES:
        return value
    iso = _iso(value.decode())
    if iso is None:
        raise RecordError("invalid date")
    if len(_VALID_DATES) < 200_000:
        _VALID_DATES[value] = iso
    return value


NULL = b"\\N"  # PostgreSQL COPY's NULL: the fast path's tuples are ready for COPY as they are


def fast_fields(raw: bytes) -> tuple | None:  # noqa: PLR0911  one exit per layout it declines
    """The regex path: the 17 data fields as bytes ready for COPY (NULL for a missing value, dates
    as validated YYYYMMDD, `replaced` as b"t"/b"f", other names as JSON with the backslashes of its
    escapes doubled for COPY), or None when the record is not in the usual layout or not valid (the
    full path then decides, and gives the reject reason). Whitespace around the element (the line breaks between the published file's records) is
    ignored; a record with a backslash, tab, line break or other control character inside it takes
    the full path, so no value here ever needs COPY escaping; the regex bounds every text by its
    field limit (LIMITS), so a value it takes is always within it."""
    # The published files hold one record per line: the bytes cut out between two `</ABR>` start
    # with the line break (and may end with blanks). Whitespace outside the element is not part of
    # it; only what lies inside decides (strip() returns the same object when there is none).
    raw = raw.strip()
    match = _FAST.match(raw)
    if match is None or len(raw.translate(None, _FAST_DECLINES)) != len(raw):
        return None
    if not raw.isascii() and not _utf8_without_c1(raw):
        return None
    (updated, replaced, status, status_from, abn, code, code_text, main_name, given1, given2, family,
     state, postcode, asic, gst, gst_from) = match.groups()  # fmt: skip
    if (sum(map(mul, WEIGHTS, abn)) - _CHECKSUM_OFFSET) % 89:
        return None  # the full path produces the reject with its reason
    # What follows GST: the DGR and OtherEntity elements (then the closing </ABR>, if given).
    rest = raw[match.end() : len(raw) - len(_END) if raw.endswith(_END) else len(raw)]
    # The regex took texts only without whitespace at their ends: without an entity they are final
    # as they are; with one they are unescaped (and checked: an undefined entity is malformed).
    plain = b"&" not in raw
    text = _plain if plain else _b
    try:
        others = b"[]"
        dgr_from = None
        if rest:
            others, dgr_from = _others(rest, plain)
            if others is None:
                return None
        if main_name is not None:
            name = text(main_name)
            given_names = family_name = None
        else:
            given_names = b" ".join(g for g in (text(given1), text(given2)) if g) or None
            family_name = text(family)
            name = given_names + b" " + family_name if given_names and family_name else family_name
        if not name:
            return None
        dates = _VALID_DATES
        for date in (status_from, gst_from, dgr_from, updated):
            if date is not None and date not in dates:
                _check_date(date)
        return (
            abn,
            status,
            status_from or NULL,
            code,
            text(code_text) or NULL,
            name,
            given_names or NULL,
            family_name or NULL,
            text(state) or NULL,
            text(postcode) or NULL,
            gst or NULL,
            gst_from or NULL,
            text(asic) or NULL,
            dgr_from or NULL,
            others,
            updated,
            b"t" if replaced == b"Y" else b"f",
        )
    except (RecordError, _NotXml, UnicodeDecodeError):
        return None


_CONTROL = re.compile(rb"[\x00-\x1f]")


def _utf8_without_c1(raw: bytes) -> bool:
    """The bytes go to PostgreSQL as they are: they must be valid UTF-8 (and free of the C1
    control characters, which only a non-ASCII record can hold)."""
    try:
        return _C1.search(raw.decode()) is None
    except UnicodeDecodeError:
        return False


def _plain(value: bytes | None) -> bytes | None:
    return value or None


def _others(rest: bytes, plain: bool) -> tuple[bytes | None, bytes | None]:
    """DGR and OtherEntity names as JSON bytes, and the first DGR date; (None, None) when the
    elements are not in the usual layout."""
    if _OTHERS_ALL.fullmatch(rest) is None:
        return None, None
    items = _OTHER.findall(rest)  # (element, DGR date, name type, name); a nameless DGR: b"", b""
    dgr_from = None
    nameless = False
    for element, date, kind, _name in items:
        if element == b"DGR":
            if dgr_from is None and date:
                dgr_from = date
            nameless = nameless or not kind
        elif date or not kind:
            return None, None  # a date on an OtherEntity, or one without a name: the full path decides
    if nameless:
        items = [item for item in items if item[2]]  # a DGR without a name adds its date only
    if plain and not any(b'"' in n or b"\\" in n or _CONTROL.search(n) for _, _, _, n in items):
        return b"[" + b", ".join(
            b'{"type": "' + t + b'", "name": "' + n + b'"}' for _, _, t, n in items
        ) + b"]", dgr_from
    names = [(t.decode(), (n if plain else (_b(n) or b"")).decode()) for _, _, t, n in items]
    # JSON escapes (a quote in a name is `\"`) hold the only backslashes: doubled, the text is COPY text.
    return other_names_json(names).replace("\\", "\\\\").encode(), dgr_from


def _fast(index: int, raw: bytes) -> Record | None:
    """The fast path as a Record (decoded strings, ISO dates)."""
    fields = fast_fields(raw)
    if fields is None:
        return None
    values = [None if v == NULL else v.decode() for v in fields[:14]]
    others = fields[14].decode()
    if "\\" in others:
        others = others.replace("\\\\", "\\")  # COPY text back to JSON (see _others)
    for i in (2, 11, 13):
        if values[i] is not None:
            values[i] = _VALID_DATES[fields[i]]
    return _new_record(Record, (*values, others, _VALID_DATES[fields[15]], fields[16] == b"t", index))


_new_record = tuple.__new__


def _text(element) -> str | None:
    if element is None:
        return None
    value = (element.text or "").strip()
    return value or None


def _show(value: str) -> str:
    return repr(value) if len(value) <= 60 else repr(value[:60]) + "..."


def _check(value: str | None, what: str) -> None:
    """Raise the reject reason when `value` breaks its field's limit or holds a control character."""
    if value is None:
        return
    limit = LIMITS[what]
    if len(value) > limit:
        raise RecordError(f"{what} longer than {limit} characters ({len(value)}): {_show(value)}")
    if _CONTROL_CHARS.search(value):
        raise RecordError(f"control character in {what}: {_show(value)}")


def _check_limits(record: Record, title: str | None, givens: list[str], others: Sequence[tuple[str, str]]) -> None:
    """The field limits on a parsed record (and on the parts of it no column keeps as they are)."""
    for value, what in (
        (record.abn_status, "ABN @status"),
        (record.entity_type_code, "EntityTypeInd"),
        (record.entity_type_text, "EntityTypeText"),
        (record.entity_name if record.family_name is None else None, "NonIndividualNameText"),
        (title, "NameTitle"),
        *((given, "GivenName") for given in givens),
        (record.family_name, "FamilyName"),
        (record.state, "State"),
        (record.postcode, "Postcode"),
        (record.gst_status, "GST @status"),
    ):
        _check(value, what)
    asic = record.asic_number
    if asic is not None and not (len(asic) <= LIMITS["ASICNumber"] and asic.isascii() and asic.isdigit()):
        raise RecordError(f"ASICNumber is not up to {LIMITS['ASICNumber']} digits: {_show(asic)}")
    for kind, name in others:
        _check(kind, "NonIndividualName @type")
        _check(name, "NonIndividualNameText")


_XML_ILLEGAL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")  # control characters XML 1.0 does not allow
_TAG = re.compile(rb"<([A-Za-z]+)")
_RAW_ABN = re.compile(rb"<ABN[^>]*>\s*(\d{11})\s*</ABN>")


def _control_error(raw: bytes) -> RecordError | None:
    """For a record lxml refuses: when a control character is the cause, the reject reason names
    the element (or element's attributes) holding it, like the limit checks do."""
    found = _XML_ILLEGAL.search(raw)
    if found is None:
        return None
    at = found.start()
    start = raw.rfind(b"<", 0, at)
    tag = _TAG.match(raw, start) if start >= 0 else None
    what = tag.group(1).decode() if tag else "ABR"
    if tag and raw.find(b">", start, at) < 0:
        what += " attributes"
    end = raw.find(b"<", at)
    text = raw[raw.rfind(b">", 0, at) + 1 : end if end >= 0 else len(raw)]
    abn = _RAW_ABN.search(raw)
    return RecordError(
        f"control character in {what}: {_show(text.decode(errors='replace'))}", abn.group(1).decode() if abn else None
    )


def _full(index: int, raw: bytes) -> Record:
    """Parse one record with lxml; raise RecordError with the reject reason."""
    try:
        abr = etree.fromstring((raw if raw.rstrip().endswith(_END) else raw + _END).strip(), parser=_PARSER)
    except etree.XMLSyntaxError as exc:
        raise _control_error(raw) or RecordError(f"malformed XML: {exc.msg}") from None
    if abr.tag != "ABR":
        raise RecordError(f"unexpected element <{abr.tag}>")
    abn_el = abr.find("ABN")
    abn = _text(abn_el)
    if abn_el is None or abn is None:
        raise RecordError("missing ABN")
    if len(abn) != 11 or not abn.isdigit():
        raise RecordError("ABN is not 11 digits", abn)
    if not abn_is_valid(abn):
        raise RecordError("invalid ABN checksum", abn)
    try:
        status = abn_el.get("status")
        if not status:
            raise RecordError("missing ABN status")
        code = _text(abr.find("EntityType/EntityTypeInd"))
        if code is None:
            raise RecordError("missing EntityTypeInd")
        main, legal = abr.find("MainEntity"), abr.find("LegalEntity")
        if (main is None) == (legal is None):
            raise RecordError("expected exactly one of MainEntity / LegalEntity")
        given_names = family_name = title = None
        givens: list[str] = []
        if main is not None:
            name = _text(main.find("NonIndividualName/NonIndividualNameText"))
            holder = main
        else:
            person = legal.find("IndividualName")
            givens = [g for g in (_text(e) for e in person.findall("GivenName")) if g] if person is not None else []
            family_name = _text(person.find("FamilyName")) if person is not None else None
            title = _text(person.find("NameTitle")) if person is not None else None
            given_names = " ".join(givens) or None
            name = f"{given_names} {family_name}" if given_names and family_name else family_name
            holder = legal
        if not name:
            raise RecordError("missing entity name")
        gst = abr.find("GST")
        dgr_dates = [d.get("DGRStatusFromDate") for d in abr.findall("DGR") if d.get("DGRStatusFromDate")]
        others = tuple(
            (n.get("type") or "", _text(n.find("NonIndividualNameText")) or "")
            for n in abr.iterfind("*/NonIndividualName")
            if n.getparent().tag in ("DGR", "OtherEntity")
        )
        record = Record(
            abn,
            status,
            parse_date(abn_el.get("ABNStatusFromDate"), "ABNStatusFromDate"),
            code,
            _text(abr.find("EntityType/EntityTypeText")),
            name,
            given_names,
            family_name,
            _text(holder.find("BusinessAddress/AddressDetails/State")),
            _text(holder.find("BusinessAddress/AddressDetails/Postcode")),
            (gst.get("status") or None) if gst is not None else None,
            parse_date(gst.get("GSTStatusFromDate"), "GSTStatusFromDate") if gst is not None else None,
            _text(abr.find("ASICNumber")),
            parse_date(dgr_dates[0], "DGRStatusFromDate") if dgr_dates else None,
            other_names_json(others),
            parse_date(abr.get("recordLastUpdatedDate"), "recordLastUpdatedDate", required=True),
            abr.get("replaced") == "Y",
            index,
        )
        _check_limits(record, title, givens, others)
        return record
    except RecordError as exc:
        exc.abn = abn
        raise


_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_comments=True)


def parse_record(index: int, raw: bytes) -> Record | Reject:
    """Parse the bytes of one `<ABR ...>...</ABR>` element."""
    record = _fast(index, raw)
    if record is not None:
        return record
    try:
        return _full(index, raw)
    except RecordError as exc:
        return Reject(index=index, abn=exc.abn, reason=exc.reason)


def iter_raw_blocks(
    stream: IO[bytes], block_size: int = BLOCK_SIZE, *, head: bool = True, tail: bool = True
) -> Iterator[list[bytes]]:
    """Yield the ABR elements of an extract a block at a time (`block_size` bytes read at once),
    each as its bytes up to but without the closing `</ABR>` (no copy per record).

    `head`/`tail` say whether the stream holds the file's start (checked for the `<Transfer>`
    root) and its end (checked for `</Transfer>`: a truncated file is refused); a `RecordRange`
    that starts or ends inside the file holds records only, and must end with a whole record."""
    buffer = b""
    started = not head
    while True:
        block = stream.read(block_size)
        if not block:
            break
        buffer += block
        if not started:
            start = buffer.find(_START)
            if start < 0:
                if len(buffer) > 1 << 20:
                    raise ExtractFormatError("no <ABR> record in the first MiB: not an ABN Bulk Extract file")
                continue
            if b"<Transfer" not in buffer[:start]:
                raise ExtractFormatError("no <Transfer> root element: not an ABN Bulk Extract file")
            buffer = buffer[start:]
            started = True
        cut = buffer.rfind(_END)
        if cut < 0:
            continue
        pieces = buffer[:cut].split(_END)
        buffer = buffer[cut + len(_END) :]
        yield pieces
    rest = buffer.strip()
    if not started:
        if b"<Transfer" in rest:
            return  # an extract file (or the start of one) with no records
        raise ExtractFormatError("no <ABR> record and no <Transfer> root: not an ABN Bulk Extract file")
    # A range ends before another record, or at the file's end; one that starts inside the file
    # after its last record holds nothing.
    if not tail or (not head and not rest):
        if rest not in (b"", b"</Transfer>"):
            raise ExtractFormatError(f"a record without its </ABR> before the next record: {rest[:60]!r}")
        return
    if rest != b"</Transfer>":
        raise ExtractFormatError(
            f"file does not end with </Transfer> after the last record (truncated?): {rest[:60]!r}"
        )


class RecordRange:
    """The records of an extract stream whose `<ABR>` starts at a byte offset in [start, end)
    (`end` None: to the end of the file), as a stream for `iter_raw_blocks(head=..., tail=...)`.

    A job that covers part of a large file reads its bytes through this. The bytes before `start`
    are read once and only counted (the number of `</ABR>` before the range's first record is that
    record's index in the file, so progress and rejects keep file-wide indices); reading stops right
    before the first record that starts at or after `end`. Ranges that tile a file, [0, b1),
    [b1, b2), ..., [bn, None), hold each of its records exactly once, whatever the boundaries."""

    def __init__(self, stream: IO[bytes], start: int = 0, end: int | None = None, block_size: int = BLOCK_SIZE):
        if start < 0 or (end is not None and end <= start):
            raise ValueError(f"bad byte range [{start}, {end})")
        self._stream, self._end, self._block_size = stream, end, block_size
        self.head = start == 0  # holds the file's <Transfer> start
        self.tail = end is None  # runs to the file's end
        self.first_index = 0  # index in the file of the range's first record
        self._buf = b""
        self._pos = 0  # offset in the file of self._buf[0]
        self._done = False  # self._buf holds all that is left of the range
        if start:
            self._skip_to_first(start)

    def _skip_to_first(self, start: int) -> None:
        count = 0
        while True:
            rel = start - self._pos
            found = self._buf.find(_START, max(rel, 0)) if rel < len(self._buf) else -1
            if found >= 0:
                self.first_index = count + self._buf.count(_END, 0, found)
                self._pos += found
                self._buf = self._buf[found:]
                if self._end is not None and self._pos >= self._end:  # no record starts in the range
                    self._buf, self._done = b"", True
                else:
                    self._cut_at_end(1)
                return
            # All of the buffer lies before the range's first record. Keep a few bytes: a tag cut by
            # the read is found once the next block is appended (they hold no whole `</ABR>`).
            count += self._buf.count(_END)
            keep = min(len(self._buf), len(_END) - 1)
            self._pos += len(self._buf) - keep
            self._buf = self._buf[len(self._buf) - keep :]
            block = self._stream.read(self._block_size)
            if not block:
                self.first_index, self._buf, self._done = count, b"", True
                return
            self._buf += block

    def _cut_at_end(self, searched: int) -> None:
        """Cut the buffer before the first record that starts at or after the range's end, if the
        buffer reaches it (positions before `searched` were looked at already)."""
        if self._end is not None and self._pos + len(self._buf) > self._end:
            found = self._buf.find(_START, max(self._end - self._pos, searched))
            if found >= 0:
                self._buf, self._done = self._buf[:found], True

    def _fill(self) -> None:
        searched = max(len(self._buf) - len(_START) + 1, 0)
        block = self._stream.read(self._block_size)
        if not block:
            self._done = True
            return
        self._buf += block
        self._cut_at_end(searched)

    def read(self, size: int = -1) -> bytes:
        size = self._block_size if size is None or size < 0 else size
        while not self._done and len(self._buf) < size + len(_START):
            self._fill()
        # Until the range's end is found, the last bytes could begin the next range's first record.
        n = min(size, len(self._buf) if self._done else len(self._buf) - len(_START) + 1)
        out, self._buf = self._buf[:n], self._buf[n:]
        self._pos += n
        return out


def iter_raw_records(stream: IO[bytes], block_size: int = BLOCK_SIZE) -> Iterator[bytes]:
    """Yield each ABR element's bytes (without the closing `</ABR>`; the parsers take either)."""
    for pieces in iter_raw_blocks(stream, block_size):
        yield from pieces


def iter_records(stream: IO[bytes], skip: int = 0, block_size: int = BLOCK_SIZE) -> Iterator[Record | Reject]:
    """Parse an extract stream; the first `skip` records are read but not parsed (resume)."""
    for index, raw in enumerate(iter_raw_records(stream, block_size)):
        if index >= skip:
            yield parse_record(index, raw)


def other_names_json(others: Sequence[tuple[str, str]]) -> str:
    """other_names as a JSON list of {"type", "name"} objects."""
    if not others:
        return "[]"
    if all(_PLAIN_JSON.fullmatch(n) for _, n in others):
        # Names without quotes, backslashes or control characters need no escaping.
        return "[" + ", ".join(f'{{"type": "{t}", "name": "{n}"}}' for t, n in others) + "]"
    return json.dumps([{"type": t, "name": n} for t, n in others], ensure_ascii=False)


_PLAIN_JSON = re.compile(r'[^"\\\x00-\x1f]*')
