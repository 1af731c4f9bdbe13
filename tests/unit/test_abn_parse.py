"""ABN Bulk Extract parsing: checksum, the edge cases of real extracts, rejects with reasons."""

from __future__ import annotations

import io
import json
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


def test_both_layouts_take_the_fast_path_and_give_identical_records_and_rejects(tmp_path):
    manifests = {
        layout: generate(2000, 5, tmp_path / layout, files=1, bad_every=17, layout=layout)
        for layout in ("compact", "published")
    }
    compact, compact_fast = _parse_all(tmp_path / "compact" / manifests["compact"]["sources"][0])
    published, published_fast = _parse_all(tmp_path / "published" / manifests["published"]["sources"][0])
    assert published == compact
    valid = manifests["compact"]["valid"]
    assert sum(isinstance(r, Record) for r in compact) == valid
    # Every valid generated record is in the layout the fast path takes, in both layouts.
    assert compact_fast == published_fast == valid
    assert (tmp_path / "published" / manifests["published"]["sources"][0]).read_bytes().count(b"\n<ABR ") == 2000


@pytest.mark.parametrize("layout", ["compact", "published"])
def test_generated_files_validate_against_the_publishers_schema(tmp_path, layout):
    xsd = Path("/work/shared/reference/abn/bulkextract.xsd")
    if not xsd.exists():
        pytest.skip("the publisher's schema is not on this machine")
    schema = etree.XMLSchema(etree.parse(str(xsd)))
    manifest = generate(500, 3, tmp_path, files=1, layout=layout)
    document = etree.parse(str(tmp_path / manifest["sources"][0]))
    assert schema.validate(document), schema.error_log
