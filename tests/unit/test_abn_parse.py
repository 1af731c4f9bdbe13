"""ABN Bulk Extract parsing: checksum, the edge cases of real extracts, rejects with reasons."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from lxml import etree

from agency_os_spot.abn import parse
from agency_os_spot.abn.checksum import abn_from_base, abn_is_valid
from agency_os_spot.abn.fixture import BAD_KINDS, generate
from agency_os_spot.abn.parse import ExtractFormatError, Record, Reject, iter_records, parse_record

SAMPLE = (
    b'<ABR recordLastUpdatedDate="20240412" replaced="N">'
    b'<ABN status="ACT" ABNStatusFromDate="19991101">88712649015</ABN>'
    b"<EntityType><EntityTypeInd>SGE</EntityTypeInd><EntityTypeText>State Government Entity</EntityTypeText></EntityType>"
    b'<MainEntity><NonIndividualName type="MN"><NonIndividualNameText>STATE EMERGENCY SERVICE (NSW)</NonIndividualNameText>'
    b"</NonIndividualName><BusinessAddress><AddressDetails><State>NSW</State><Postcode>2500</Postcode></AddressDetails>"
    b"</BusinessAddress></MainEntity>"
    b'<GST status="ACT" GSTStatusFromDate="20000701"/>'
    b'<OtherEntity><NonIndividualName type="TRD"><NonIndividualNameText>NEW SOUTH WALES STATE EMERGENCY SERVICE'
    b"</NonIndividualNameText></NonIndividualName></OtherEntity>"
    b"</ABR>"
)
VALID = abn_from_base(123456789)


def individual(givens: list[str], title: str = "", state: str = "VIC", postcode: str = "3000") -> bytes:
    names = (f"<NameTitle>{title}</NameTitle>" if title else "") + "".join(
        f"<GivenName>{g}</GivenName>" for g in givens
    )
    return (
        f'<ABR recordLastUpdatedDate="20200101" replaced="N"><ABN status="CAN" ABNStatusFromDate="20010203">{VALID}</ABN>'
        "<EntityType><EntityTypeInd>IND</EntityTypeInd><EntityTypeText>Individual/Sole Trader</EntityTypeText></EntityType>"
        f'<LegalEntity><IndividualName type="LGL">{names}<FamilyName>NGUYEN</FamilyName></IndividualName>'
        f"<BusinessAddress><AddressDetails><State>{state}</State><Postcode>{postcode}</Postcode></AddressDetails>"
        "</BusinessAddress></LegalEntity></ABR>"
    ).encode()


def both_paths(raw: bytes) -> Record | Reject:
    """Parse with the public API and check the lxml path agrees with the regex path."""
    result = parse_record(0, raw)
    if isinstance(result, Record):
        assert parse._full(0, raw) == result
    return result


def test_abn_checksum():
    assert abn_is_valid("88712649015")  # the reference's sample
    assert abn_is_valid("51824753556")  # the ATO's published example
    assert not abn_is_valid("88712649016")
    assert not abn_is_valid("8871264901")
    assert not abn_is_valid("8871264901a")
    assert not abn_is_valid("\uff18\uff18712649015")  # full-width (non-ASCII) digits
    for base in (0, 1, 999_999_999, 387_420_489):
        assert abn_is_valid(abn_from_base(base))


def test_sample_record_from_the_reference():
    rec = both_paths(SAMPLE)
    assert isinstance(rec, Record)
    assert rec.abn == "88712649015"
    assert (rec.abn_status, rec.abn_status_from) == ("ACT", "1999-11-01")
    assert (rec.entity_type_code, rec.entity_type_text) == ("SGE", "State Government Entity")
    assert rec.entity_name == "STATE EMERGENCY SERVICE (NSW)"
    assert (rec.given_names, rec.family_name) == (None, None)
    assert (rec.state, rec.postcode) == ("NSW", "2500")
    assert (rec.gst_status, rec.gst_status_from) == ("ACT", "2000-07-01")
    assert rec.asic_number is None and rec.dgr_status_from is None
    assert json.loads(rec.other_names) == [{"type": "TRD", "name": "NEW SOUTH WALES STATE EMERGENCY SERVICE"}]
    assert rec.record_last_updated == "2024-04-12" and rec.replaced is False


@pytest.mark.parametrize(
    ("givens", "title", "name", "given_names"),
    [
        ([], "", "NGUYEN", None),
        (["WEI"], "DR", "WEI NGUYEN", "WEI"),
        (["MARY", "ANNE"], "MRS", "MARY ANNE NGUYEN", "MARY ANNE"),
    ],
)
def test_individuals_with_zero_to_two_given_names(givens, title, name, given_names):
    rec = both_paths(individual(givens, title))
    assert isinstance(rec, Record)
    assert (rec.entity_name, rec.given_names, rec.family_name) == (name, given_names, "NGUYEN")
    assert rec.abn_status == "CAN"  # cancelled ABNs are kept with their status


def test_empty_state_and_postcode_are_null_and_aat_is_kept():
    rec = both_paths(individual(["JO"], state="", postcode=""))
    assert (rec.state, rec.postcode) == (None, None)
    rec = both_paths(individual(["JO"], state="AAT", postcode="6798"))
    assert (rec.state, rec.postcode) == ("AAT", "6798")
    # a writer that emits empty elements self-closed takes the full path, same result
    raw = individual(["JO"]).replace(b"<State>VIC</State><Postcode>3000</Postcode>", b"<State/><Postcode />")
    assert parse._fast(0, raw) is None
    rec = parse_record(0, raw)
    assert (rec.state, rec.postcode) == (None, None)


def test_several_dgr_and_other_entities_and_escaped_names():
    raw = SAMPLE.replace(
        b"<OtherEntity>",
        b'<DGR DGRStatusFromDate="20050101"><NonIndividualName type="DGR"><NonIndividualNameText>FUND A &amp; B'
        b"</NonIndividualNameText></NonIndividualName></DGR>"
        b'<DGR DGRStatusFromDate="20070101"><NonIndividualName type="DGR"><NonIndividualNameText>FUND C'
        b"</NonIndividualNameText></NonIndividualName></DGR>"
        b'<OtherEntity><NonIndividualName type="BN"><NonIndividualNameText>O&apos;BRIEN &#x26; CO &quot;X&quot;'
        b"</NonIndividualNameText></NonIndividualName></OtherEntity><OtherEntity>",
    ).replace(b"(NSW)", b"(NSW) &lt;HQ&gt;")
    rec = both_paths(raw)
    assert rec.entity_name == "STATE EMERGENCY SERVICE (NSW) <HQ>"
    assert rec.dgr_status_from == "2005-01-01"
    assert json.loads(rec.other_names) == [
        {"type": "DGR", "name": "FUND A & B"},
        {"type": "DGR", "name": "FUND C"},
        {"type": "BN", "name": 'O\'BRIEN & CO "X"'},
        {"type": "TRD", "name": "NEW SOUTH WALES STATE EMERGENCY SERVICE"},
    ]


def test_the_nameless_main_dgr_and_names_with_quotes_at_and_mixed_case_take_the_fast_path():
    raw = SAMPLE.replace(
        b"<OtherEntity>",
        b'<DGR status="ACT" DGRStatusFromDate="20060301"/>'
        b'<DGR DGRStatusFromDate="20070101"><NonIndividualName type="DGR"><NonIndividualNameText>'
        b'"Wesfarmers Federation Insurance" Fund @ wesfarmers.com.au</NonIndividualNameText></NonIndividualName></DGR>'
        b"<OtherEntity>",
    ).replace(b"STATE EMERGENCY SERVICE (NSW)", b'The Trustee for the "Koala" Family Trust')
    for layout in (raw, _published(raw) + b"\n"):
        assert parse.fast_fields(layout) is not None
        rec = both_paths(layout)
        assert rec.entity_name == 'The Trustee for the "Koala" Family Trust'
        assert rec.dgr_status_from == "2006-03-01"  # the nameless main DGR's date comes first
        assert json.loads(rec.other_names) == [
            {"type": "DGR", "name": '"Wesfarmers Federation Insurance" Fund @ wesfarmers.com.au'},
            {"type": "TRD", "name": "NEW SOUTH WALES STATE EMERGENCY SERVICE"},
        ]
    # COPY text: the backslash of a JSON escape doubled; a backslash in a value takes the full path
    assert parse.fast_fields(raw)[14].count(b'\\\\"') == 2
    backslash = SAMPLE.replace(b"(NSW)", b"&#92;NSW&#x5c;")
    assert parse.fast_fields(backslash) is None and both_paths(backslash).entity_name.endswith("\\NSW\\")
    # at the limit in characters but not in bytes (an entity, a non-ASCII letter): the full path keeps it
    for name in (b"A &amp; B " + b"N" * 194, "Caf\u00e9 ".encode() + b"N" * 195):
        at_limit = SAMPLE.replace(b"STATE EMERGENCY SERVICE (NSW)", name)
        assert len(parse._full(0, at_limit).entity_name) == 200
        assert both_paths(_published(at_limit)) == both_paths(at_limit)


def test_asic_number_present_or_empty():
    with_asic = SAMPLE.replace(b"<GST", b'<ASICNumber ASICNumberType="undetermined">000123456</ASICNumber><GST')
    assert both_paths(with_asic).asic_number == "000123456"
    empty = SAMPLE.replace(b"<GST", b'<ASICNumber ASICNumberType="undetermined"></ASICNumber><GST')
    assert both_paths(empty).asic_number is None


def test_other_layouts_take_the_full_path_with_the_same_result():
    pretty = SAMPLE.replace(b"><", b">\n   <")
    swapped = SAMPLE.replace(
        b'recordLastUpdatedDate="20240412" replaced="N"', b'replaced="N" recordLastUpdatedDate="20240412"'
    )
    commented = SAMPLE.replace(b"<GST", b"<!-- note --><GST")
    expected = parse_record(0, SAMPLE)
    assert parse_record(0, pretty) == expected  # whitespace between tags: still the fast path
    for raw in (swapped, commented):
        assert parse._fast(0, raw) is None
        assert parse_record(0, raw) == expected


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda r: r.replace(b"88712649015", b"88712649016"), "invalid ABN checksum"),
        (lambda r: r.replace(b"88712649015", b"8871264901"), "ABN is not 11 digits"),
        (lambda r: r.replace(b'<ABN status="ACT" ABNStatusFromDate="19991101">88712649015</ABN>', b""), "missing ABN"),
        (lambda r: r.replace(b"<EntityTypeInd>SGE</EntityTypeInd>", b""), "missing EntityTypeInd"),
        (lambda r: r.replace(b"STATE EMERGENCY SERVICE (NSW)", b""), "missing entity name"),
        (lambda r: r.replace(b"20240412", b"20241345"), "invalid recordLastUpdatedDate '20241345'"),
        (lambda r: r.replace(b' recordLastUpdatedDate="20240412"', b""), "missing recordLastUpdatedDate"),
        (lambda r: r.replace(b"</EntityType>", b""), "malformed XML"),
        (lambda r: r.replace(b' status="ACT" ABNStatusFromDate', b" ABNStatusFromDate"), "missing ABN status"),
    ],
)
def test_bad_records_are_rejected_with_a_reason(mutate, reason):
    result = parse_record(7, mutate(SAMPLE))
    assert isinstance(result, Reject)
    assert result.index == 7
    assert result.reason.startswith(reason)


def test_reject_keeps_the_abn_when_there_is_one():
    result = parse_record(0, SAMPLE.replace(b"88712649015", b"88712649016"))
    assert result.abn == "88712649016"


def extract(*records: bytes, head: bytes | None = None, tail: bytes = b"</Transfer>") -> io.BytesIO:
    head = head or b'<?xml version="1.0"?><Transfer><TransferInfo><RecordCount>1</RecordCount></TransferInfo>'
    return io.BytesIO(head + b"".join(records) + tail)


def test_stream_is_read_in_blocks_and_cut_at_record_boundaries():
    records = [SAMPLE, individual(["A"]), SAMPLE.replace(b"88712649015", b"88712649016")]
    for block in (7, 64, 1 << 20):
        out = list(iter_records(extract(*records), block_size=block))
        assert [type(x).__name__ for x in out] == ["Record", "Record", "Reject"]
        assert [x[-1] if isinstance(x, Record) else x.index for x in out] == [0, 1, 2]


def test_resume_skips_records_already_committed():
    records = [SAMPLE, individual(["A"]), individual(["B"])]
    out = list(iter_records(extract(*records), skip=2))
    assert len(out) == 1 and out[0].given_names == "B" and out[0].index == 2


def test_truncated_or_foreign_files_fail_as_a_whole():
    with pytest.raises(ExtractFormatError, match="truncated"):
        list(iter_records(extract(SAMPLE, SAMPLE[:100], tail=b"")))
    with pytest.raises(ExtractFormatError, match="not an ABN Bulk Extract"):
        list(iter_records(io.BytesIO(b"<html><body>Not found</body></html>")))
    assert list(iter_records(extract())) == []  # a file with no records is fine


@pytest.mark.parametrize("pretty", [False, True])
def test_generated_extract_matches_its_manifest_and_both_paths_agree(tmp_path, pretty):
    manifest = generate(3000, 11, tmp_path, files=1, bad_every=13, pretty=pretty)
    reasons: dict[str, int] = {}
    abns = set()
    with (tmp_path / manifest["sources"][0]).open("rb") as fh:
        for raw in parse.iter_raw_records(fh):
            result = parse_record(0, raw)
            if isinstance(result, Reject):
                kind = next(k for k in BAD_KINDS if result.reason.startswith(k))
                reasons[kind] = reasons.get(kind, 0) + 1
            else:
                assert parse._full(0, raw) == result
                abns.add(result.abn)
    assert reasons == manifest["files"][0]["bad_reasons"]
    assert len(abns) == manifest["valid"]


def test_invalid_utf8_is_rejected_not_passed_on():
    raw = SAMPLE.replace(b"STATE EMERGENCY", b"STATE \xff\xfe EMERGENCY")
    assert parse.fast_fields(raw) is None  # never sent to the database as is
    result = parse_record(0, raw)
    assert isinstance(result, Reject) and result.reason.startswith("malformed XML")


@pytest.mark.parametrize(
    ("raw", "state", "postcode"),
    [
        (individual(["JO"], postcode="12345"), "VIC", "12345"),
        (individual(["JO"], postcode="P" * 50), "VIC", "P" * 50),
        (individual(["JO"], postcode="\u00e9" * 50), "VIC", "\u00e9" * 50),  # 50 characters, 100 bytes
        (individual(["JO"], state="", postcode="0000"), None, "0000"),
        (individual(["JO"], state="AAT", postcode="6798"), "AAT", "6798"),
    ],
)
def test_values_up_to_the_publishers_limits_are_kept(raw, state, postcode):
    rec = both_paths(raw)
    assert isinstance(rec, Record)
    assert (rec.state, rec.postcode) == (state, postcode)


def test_longest_legal_values_take_the_fast_path():
    longest = SAMPLE.replace(b"STATE EMERGENCY SERVICE (NSW)", b"N" * 200).replace(
        b"<GST", b'<ASICNumber ASICNumberType="undetermined">000123456</ASICNumber><GST'
    )
    assert parse._fast(0, longest) is not None
    assert both_paths(longest).entity_name == "N" * 200
    person = individual(["G" * 100, "H" * 100], title="T" * 50, postcode="P" * 50).replace(b"NGUYEN", b"F" * 50)
    assert parse._fast(0, person) is not None
    assert both_paths(person).given_names == "G" * 100 + " " + "H" * 100


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda r: r.replace(b"<State>VIC<", b"<State>VICT<"), "State longer than 3 characters (4): 'VICT'"),
        (lambda r: r.replace(b"3000", b"3" * 51), f"Postcode longer than 50 characters (51): {'3' * 51!r}"),
        (lambda r: r.replace(b"NGUYEN", b"N" * 51), "FamilyName longer than 50 characters (51)"),
        (lambda r: r.replace(b"<GivenName>JO", b"<GivenName>" + b"J" * 101), "GivenName longer than 100 characters"),
        (lambda r: r.replace(b"<GivenName>", b"<NameTitle>" + b"T" * 51 + b"</NameTitle><GivenName>"), "NameTitle"),
        (lambda r: r.replace(b"<GivenName>JO", b"<GivenName>J\x01O"), "control character in GivenName: 'J\\x01O'"),
        (lambda r: r.replace(b"<GivenName>JO", b"<GivenName>J&#9;O"), "control character in GivenName: 'J\\tO'"),
        (lambda r: r.replace(b"<GivenName>JO", b"<GivenName>J\x7fO"), "control character in GivenName: 'J\\x7fO'"),
        (lambda r: r.replace(b"<GivenName>JO", "<GivenName>J\u0085O".encode()), "control character in GivenName"),
        (lambda r: r.replace(b'status="CAN"', b'status="CANC"'), "ABN @status longer than 3 characters (4)"),
        (lambda r: r.replace(b"IND<", b"INDIV<"), "EntityTypeInd longer than 4 characters (5)"),
        (lambda r: r.replace(b"Individual/Sole Trader", b"X" * 101), "EntityTypeText longer than 100 characters"),
    ],
)
def test_values_beyond_the_limits_are_rejected_naming_field_and_limit(mutate, reason):
    raw = mutate(individual(["JO"]))
    assert parse.fast_fields(raw) is None
    result = parse_record(4, raw)
    assert isinstance(result, Reject), result
    assert result.reason.startswith(reason)
    assert result.abn == VALID


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda r: r.replace(b"(NSW)", b"(NSW)" + b"N" * 200), "NonIndividualNameText longer than 200 characters"),
        (lambda r: r.replace(b"NEW SOUTH", b"N" * 200), "NonIndividualNameText longer than 200 characters"),
        (lambda r: r.replace(b'type="TRD"', b'type="TRDX"'), "NonIndividualName @type longer than 3 characters"),
        (lambda r: r.replace(b'GST status="ACT"', b'GST status="ACTV"'), "GST @status longer than 3 characters"),
        (lambda r: r.replace(b"<GST", b'<ASICNumber ASICNumberType="u">00012345X</ASICNumber><GST'), "ASICNumber"),
        (lambda r: r.replace(b"<GST", b'<ASICNumber ASICNumberType="u">0001234567</ASICNumber><GST'), "ASICNumber"),
        (
            lambda r: r.replace(b"EMERGENCY SERVICE (NSW)", b"EMERGENCY &#x85; SERVICE"),
            "control character in NonIndividual",
        ),
    ],
)
def test_company_values_beyond_the_limits_are_rejected(mutate, reason):
    raw = mutate(SAMPLE)
    assert parse.fast_fields(raw) is None
    result = parse_record(0, raw)
    assert isinstance(result, Reject), result
    assert result.reason.startswith(reason)


def _published(raw: bytes) -> bytes:
    """A record as the published files cut it out: after the previous record's line break, `" />`."""
    return b"\n" + raw.replace(b'"/>', b'" />')


def test_a_published_layout_record_takes_the_fast_path_with_the_same_result():
    expected = parse_record(0, SAMPLE)
    for raw in (_published(SAMPLE), _published(SAMPLE) + b"\n", b"\r\n  " + SAMPLE + b" \t", _published(SAMPLE[:-6])):
        assert parse.fast_fields(raw) == parse.fast_fields(SAMPLE)
        assert parse._fast(0, raw) == expected
        assert parse._full(0, raw) == expected


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda r: r.replace(b"STATE EMERGENCY", b"STATE\nEMERGENCY"), "control character in NonIndividualNameText"),
        (lambda r: r.replace(b"STATE EMERGENCY", b"STATE\x01EMERGENCY"), "control character in NonIndividualName"),
        (lambda r: r.replace(b">NSW<", b">NSWX<"), "State longer than 3 characters (4)"),
        (lambda r: r.replace(b"88712649015", b"88712649016"), "invalid ABN checksum"),
    ],
)
def test_published_layout_records_are_still_checked(mutate, reason):
    # Only whitespace around the element is ignored: a line break or control character inside a
    # value, or a value beyond its limit, still leaves the fast path and is rejected with its reason.
    raw = _published(mutate(SAMPLE)) + b"\n"
    assert parse.fast_fields(raw) is None
    result = parse_record(3, raw)
    assert isinstance(result, Reject)
    assert result.reason.startswith(reason)


def _parse_all(path) -> tuple[list, int]:
    results, fast = [], 0
    with path.open("rb") as fh:
        for index, raw in enumerate(parse.iter_raw_records(fh)):
            result = parse_record(index, raw)
            fast += parse.fast_fields(raw) is not None
            results.append(result)
    return results, fast


_NAME_TEXT = re.compile(rb"<NonIndividualNameText>([^<]*)<")
_RECORD_FEATURES = {
    "nameless DGR": re.compile(rb'<DGR status="ACT" DGRStatusFromDate="\d{8}" ?/>'),
    "named DGR": re.compile(rb'<NonIndividualName type="DGR">'),
    "postcode 0000": re.compile(rb"<Postcode>0000<"),
    "empty state and postcode": re.compile(rb"<State></State><Postcode></Postcode>"),
    "AAT": re.compile(rb"<State>AAT<"),
    **{
        f"{field} at {limit}": re.compile(b"<%s>[^<]{%d}<" % (field.encode(), limit))
        for field, limit in (("NonIndividualNameText", 200), ("GivenName", 100), ("FamilyName", 50),
                             ("NameTitle", 50), ("Postcode", 50), ("EntityTypeText", 100))
    },
}  # fmt: skip
_NAME_FEATURES = {
    "double quotes": re.compile(rb'"'),
    "&amp;": re.compile(rb"&amp;"),
    "@": re.compile(rb"@"),
    ".": re.compile(rb"\."),
    "mixed case": re.compile(rb"[a-z]"),
}


def _features(raw: bytes) -> set[str]:
    """The edge cases of the real extract a generated record holds."""
    found = {name for name, pattern in _RECORD_FEATURES.items() if pattern.search(raw)}
    names = _NAME_TEXT.findall(raw)
    found |= {name for name, pattern in _NAME_FEATURES.items() if any(pattern.search(n) for n in names)}
    others = raw.count(b"<OtherEntity>")
    if others <= 3:
        found.add("0-3 other names")
    elif 10 <= others < 100:
        found.add("dozens of other names")
    elif others > 300:
        found.add("more than 300 other names")
    return found


def _from_copy(value: bytes) -> str:
    """A value of COPY text as PostgreSQL reads it (the fast path's only escape is a doubled backslash)."""
    assert re.fullmatch(rb"(?:[^\\\t\n\r]|\\\\)*", value), value
    return value.replace(b"\\\\", b"\\").decode()


FEATURES = {*_RECORD_FEATURES, *_NAME_FEATURES, "0-3 other names", "dozens of other names", "more than 300 other names"}


def test_both_layouts_take_the_fast_path_and_give_identical_records_and_rejects(tmp_path):
    # 20,000 records hold every edge case of the generator (a record with more than 300 other names
    # among them); the lxml path agrees with the fast path on every record of either layout.
    manifests = {
        layout: generate(20_000, 5, tmp_path / layout, files=1, bad_every=17, layout=layout)
        for layout in ("compact", "published")
    }
    results: dict[str, list] = {}
    for layout, manifest in manifests.items():
        found: set[str] = set()
        results[layout], fast = [], 0
        with (tmp_path / layout / manifest["sources"][0]).open("rb") as fh:
            for index, raw in enumerate(parse.iter_raw_records(fh)):
                result = parse_record(index, raw)
                fields = parse.fast_fields(raw)
                if isinstance(result, Record):
                    assert fields is not None, raw  # every valid generated record takes the fast path
                    assert parse._full(index, raw) == result
                    assert _from_copy(fields[5]) == result.entity_name
                    assert _from_copy(fields[14]) == result.other_names  # what COPY stores
                    found |= _features(raw)
                else:
                    assert fields is None
                fast += fields is not None
                results[layout].append(result)
        assert found == FEATURES, FEATURES - found
        assert fast == manifest["valid"]
    assert results["published"] == results["compact"]
    assert sum(isinstance(r, Record) for r in results["compact"]) == manifests["compact"]["valid"]
    assert max(len(json.loads(r.other_names)) for r in results["compact"] if isinstance(r, Record)) > 300
    published = (tmp_path / "published" / manifests["published"]["sources"][0]).read_bytes()
    assert published.count(b"\n<ABR ") == 20_000


# The ABR's bulkextract.xsd, the publisher's schema for the ABN Bulk Extract, as redistributed with its
# documentation (see tests/data/README.md).
SCHEMA = Path(__file__).resolve().parents[1] / "data" / "bulkextract.xsd"


@pytest.mark.parametrize("layout", ["compact", "published"])
def test_generated_files_validate_against_the_publishers_schema(tmp_path, layout):
    schema = etree.XMLSchema(etree.parse(str(SCHEMA)))
    manifest = generate(5000, 3, tmp_path, files=1, layout=layout)
    data = (tmp_path / manifest["sources"][0]).read_bytes()
    assert b'<DGR status="ACT" DGRStatusFromDate="' in data and re.search(rb"<Postcode>[^<]{50}<", data)
    document = etree.parse(str(tmp_path / manifest["sources"][0]))
    assert schema.validate(document), schema.error_log


def test_the_published_layout_is_the_default(tmp_path):
    manifest = generate(10, 1, tmp_path, files=1)
    data = (tmp_path / manifest["sources"][0]).read_bytes()
    assert manifest["layout"] == "published"
    assert data.startswith(b'<?xml version="1.0"?>' + b" " * 289 + b"\n" + (b" " * 50 + b"\n") * 3 + b"<Transfer ")
    assert data.count(b"\n<ABR ") == 10 and data.endswith(b"</ABR>\n</Transfer>")


def test_bad_records_go_beyond_the_limits_and_are_rejected_with_the_manifest_s_reasons(tmp_path):
    manifest = generate(len(BAD_KINDS) * 40, 2, tmp_path, files=1, bad_every=3)
    assert set(manifest["files"][0]["bad_reasons"]) == set(BAD_KINDS)
    reasons: dict[str, int] = {}
    with (tmp_path / manifest["sources"][0]).open("rb") as fh:
        for result in iter_records(fh):
            if isinstance(result, Reject):
                kind = next(k for k in BAD_KINDS if result.reason.startswith(k))
                reasons[kind] = reasons.get(kind, 0) + 1
    assert reasons == manifest["files"][0]["bad_reasons"]
