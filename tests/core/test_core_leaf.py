"""The card leaf: definition against the contract and docs, validation, JSON form, encoding, hash."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from core_testlib import MAX_LEAF, REPO, kat_leaf, leaves
from eth_abi import encode as abi_encode
from hypothesis import given, settings
from hypothesis import strategies as st

from issuer.core import leaf as leafmod
from issuer.core.errors import CoreError, InvalidLeaf
from issuer.core.keccak import keccak256
from issuer.core.leaf import (
    CODE_FORM_EXACT,
    CODE_FORM_FOLDED,
    LEAF_ATTRS,
    LEAF_ENCODING,
    LEAF_FIELDS,
    LEAF_VERSION,
    CardLeaf,
    bytes3_to_currency,
    bytes32_to_sku,
    currency_to_bytes3,
    encode_leaf,
    leaf_fields_markdown,
    leaf_hash,
    leaf_hashes,
    leaf_hashes_from_json,
    sku_to_bytes32,
)

# Leaf version 2. Computed once with @openzeppelin/merkle-tree 1.0.8 by tests/core/make_kats.mjs (which writes
# the leaves out in JSON form itself) and pinned: `katLeaf0Hash`, `maxLeafHash`.
KAT_LEAF0_HASH = "432510e961a9196f1831bad9949c0c3add00f75b89437ff0cc06b58297ab1e04"
KAT_MAX_LEAF_HASH = "565c22746e2c4c32538dcdcd8252f5fa596ac270d6b24016294a6f6d178780aa"
ENCODING_V2 = ["uint16", "bytes32", "uint32", "uint80", "bytes32", "uint128", "bytes3", "uint64", "uint8", "bytes32"]


# -- the definition ------------------------------------------------------------------------


def test_leaf_fields_are_the_contract_struct():
    sol = (REPO / "contracts" / "ICardRegistry.sol").read_text()
    body = re.search(r"struct CardLeaf \{(.*?)\}", sol, re.S).group(1)
    body = re.sub(r"///[^\n]*", "", body)
    fields = re.findall(r"(\w+)\s+(\w+)\s*;", body)
    assert tuple((name, t) for t, name in fields) == LEAF_FIELDS


def test_leaf_encoding_and_attrs():
    assert LEAF_ENCODING == ENCODING_V2
    assert LEAF_VERSION == 2 and (CODE_FORM_EXACT, CODE_FORM_FOLDED) == (0, 1)
    assert LEAF_ATTRS == tuple(f.name for f in dataclasses.fields(CardLeaf))
    assert LEAF_ATTRS == (
        "version", "batch_id", "index", "serial", "sku", "face_value", "currency", "expiry", "code_form",
        "code_commitment",
    )
    # The validation table CardLeaf.__init__ is written against.
    assert [(a, n) for a, n, _, _ in leafmod._CHECKS] == list(zip(LEAF_ATTRS, [n for n, _ in LEAF_FIELDS]))


def test_docs_leaf_md_matches_leaf_fields():
    doc = (REPO / "docs" / "leaf.md").read_text()
    m = re.search(r"<!-- BEGIN GENERATED: LEAF_FIELDS -->\n(.*?)<!-- END GENERATED: LEAF_FIELDS -->", doc, re.S)
    assert m, "docs/leaf.md lost its generated LEAF_FIELDS table markers"
    assert m.group(1) == leaf_fields_markdown(), (
        "docs/leaf.md disagrees with LEAF_FIELDS: replace the generated table with "
        "issuer.core.leaf.leaf_fields_markdown()"
    )
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \| `(\w+)` \|", m.group(1), re.M)
    assert [(n, t) for _, n, t in rows] == list(LEAF_FIELDS)
    assert "`leafEncoding` (the tree's `LEAF_ENCODING`): `" + json.dumps(ENCODING_V2, separators=(",", ":")) in doc
    # The prose after the table describes the current format, and says it is frozen.
    related = doc.split("## Related formats", 1)[1]
    for needle in ("cardproof/code/v2", "cardproof/opening/v2", "cardproof/open/v2", "cardproof/enc/v1",
                   "codeForm", "LEAF_VERSION", "frozen", "new version number", "320 bytes"):
        assert needle in doc, needle
    assert "HMAC-SHA256(commit_key" not in doc and "cardproof/commit/v1" not in doc
    assert "frozen" in related


# -- known answers -------------------------------------------------------------------------


def test_kat_leaf_hash():
    assert leaf_hash(kat_leaf(0)).hex() == KAT_LEAF0_HASH
    assert leaf_hash(MAX_LEAF).hex() == KAT_MAX_LEAF_HASH


def test_kat_encoding_layout():
    for i, form in ((2, 0), (3, 1)):
        leaf = kat_leaf(i)
        enc = encode_leaf(leaf)
        assert len(enc) == 320
        words = [enc[j : j + 32] for j in range(0, 320, 32)]
        assert words[0] == bytes(31) + b"\x02"
        assert words[1] == bytes.fromhex("a1b2c3d4e5f60718293a4b5c6d7e8f9012345678") + (1).to_bytes(12, "big")
        assert words[2] == i.to_bytes(32, "big")
        assert words[3] == (0x0123456789ABCDEF0123 + i).to_bytes(32, "big")
        assert words[4] == b"GC-EUR-25" + bytes(23)
        assert words[5] == (2500).to_bytes(32, "big")
        assert words[6] == b"EUR" + bytes(29)
        assert words[7] == (1893456000).to_bytes(32, "big")
        assert words[8] == bytes(31) + bytes([form])
        assert words[9] == leaf.code_commitment
        assert leaf_hash(leaf) == keccak256(keccak256(enc))


def test_version_and_code_form_are_hashed():
    """Every field is in the hash: a leaf of the other code form is another leaf."""
    leaf = kat_leaf(0)
    other = dataclasses.replace(leaf, code_form=CODE_FORM_FOLDED)
    assert leaf.code_form == CODE_FORM_EXACT and leaf_hash(other) != leaf_hash(leaf)
    assert encode_leaf(other)[:256] == encode_leaf(leaf)[:256] and encode_leaf(other)[288:] == encode_leaf(leaf)[288:]


# -- validation ----------------------------------------------------------------------------

GOOD = kat_leaf(0)


@pytest.mark.parametrize(
    "field, bad",
    [
        ("version", 1),
        ("version", 3),
        ("version", 0),
        ("version", 2**16 - 1),
        ("version", 2**16 + 2),
        ("version", -2),
        ("version", True),
        ("version", 2.0),
        ("version", "2"),
        ("version", None),
        ("code_form", 2),
        ("code_form", 255),
        ("code_form", 256),
        ("code_form", -1),
        ("code_form", True),
        ("code_form", False),
        ("code_form", 1.0),
        ("code_form", "1"),
        ("code_form", None),
        ("batch_id", b"\x00" * 31),
        ("batch_id", "0x" + "00" * 32),
        ("batch_id", None),
        ("index", -1),
        ("index", 2**32),
        ("index", True),
        ("index", 1.0),
        ("index", "1"),
        ("serial", 2**80),
        ("sku", b"\x00" * 32),
        ("sku", b"GC\x00X" + bytes(28)),
        ("sku", b" GC" + bytes(29)),
        ("sku", "GC-EUR-25"),
        ("sku", b"\xffGC" + bytes(29)),
        ("face_value", 2**128),
        ("currency", b"eur"),
        ("currency", b"EU"),
        ("currency", b"EU1"),
        ("currency", "EUR"),
        ("expiry", 2**64),
        ("expiry", -5),
        ("code_commitment", b"\x01" * 33),
        ("code_commitment", bytearray(31)),
    ],
)
def test_invalid_fields(field, bad):
    with pytest.raises(InvalidLeaf):
        dataclasses.replace(GOOD, **{field: bad})


def test_an_unknown_version_is_refused_by_name():
    with pytest.raises(InvalidLeaf, match="version 1 is not supported"):
        dataclasses.replace(GOOD, version=1)
    with pytest.raises(InvalidLeaf, match="codeForm 2 is not defined"):
        dataclasses.replace(GOOD, code_form=2)
    v1_value = GOOD.to_json()
    v1_value[0] = "1"
    with pytest.raises(InvalidLeaf, match="version"):
        CardLeaf.from_json(v1_value)
    with pytest.raises(InvalidLeaf):
        CardLeaf.from_json(GOOD.to_json()[1:8] + GOOD.to_json()[9:])  # version-1 shape: no version, no codeForm


def test_bytes_like_are_copied_to_bytes_and_frozen():
    leaf = dataclasses.replace(
        GOOD, batch_id=bytearray(GOOD.batch_id), code_commitment=memoryview(GOOD.code_commitment)
    )
    assert type(leaf.batch_id) is bytes and type(leaf.code_commitment) is bytes
    assert leaf == GOOD and hash(leaf) == hash(GOOD)
    with pytest.raises(dataclasses.FrozenInstanceError):
        leaf.index = 3  # type: ignore[misc]
    assert isinstance(InvalidLeaf("x"), (CoreError, ValueError))


def test_sku_and_currency_helpers():
    assert sku_to_bytes32("GC-EUR-25") == b"GC-EUR-25" + bytes(23)
    assert bytes32_to_sku(sku_to_bytes32("A B")) == "A B"
    assert bytes32_to_sku(sku_to_bytes32("X" * 32)) == "X" * 32
    for bad in ["", "X" * 33, " A", "A ", "é", "A\tB", "A\x00B"]:
        with pytest.raises(InvalidLeaf):
            sku_to_bytes32(bad)
    assert currency_to_bytes3("eur") == b"EUR"
    assert bytes3_to_currency(b"USD") == "USD"
    for bad in ["EU", "EURO", "E1R", "ÉUR", ""]:
        with pytest.raises(InvalidLeaf):
            currency_to_bytes3(bad)
    assert GOOD.sku_str == "GC-EUR-25" and GOOD.currency_str == "EUR"


def test_as_tuple_and_with_index():
    assert GOOD.as_tuple() == tuple(getattr(GOOD, a) for a in LEAF_ATTRS)
    assert GOOD.with_index(7) == dataclasses.replace(GOOD, index=7)


# -- JSON form -----------------------------------------------------------------------------


def test_to_json_form():
    assert kat_leaf(1).to_json() == [
        "2",
        "0xa1b2c3d4e5f60718293a4b5c6d7e8f9012345678000000000000000000000001",
        "1",
        str(0x0123456789ABCDEF0123 + 1),
        "0x" + (b"GC-EUR-25" + bytes(23)).hex(),
        "2500",
        "0x455552",
        "1893456000",
        "1",
        "0x" + kat_leaf(1).code_commitment.hex(),
    ]
    assert kat_leaf(2).to_json()[8] == "0"


def test_bulk_path_takes_other_forms_behind_a_cached_leaf():
    v = GOOD.to_json()
    alt = list(v)
    alt[2], alt[3], alt[9] = 0, hex(GOOD.serial), v[9].upper().replace("0X", "0x")
    assert leaf_hashes_from_json([v, alt, tuple(v)]) == [leaf_hash(GOOD)] * 3


def test_from_json_accepts_abi_utils_forms():
    v = GOOD.to_json()
    alt = [2, v[1].upper().replace("0X", "0x"), 0, hex(GOOD.serial), v[4], 2500, v[6], "0x70dbd880", "0x0", v[9]]
    assert CardLeaf.from_json(alt) == GOOD
    assert CardLeaf.from_json(tuple(v)) == GOOD
    other = CardLeaf.from_json(
        ["0x2", "0x" + "ab" * 32, "007", "0", v[4], "0", "0x555344", "0", "01", "0x" + "cd" * 32]
    )
    assert (other.version, other.index, other.code_form) == (2, 7, 1)


@pytest.mark.parametrize(
    "pos, bad",
    [
        (0, "1"),
        (0, "3"),
        (0, "0"),
        (0, ""),
        (0, "2.0"),
        (0, " 2"),
        (0, 2.0),
        (0, True),
        (0, None),
        (0, str(2**16 + 2)),
        (0, "0x" + "00" * 32),
        (1, "0x" + "00" * 31),
        (1, "00" * 33),
        (1, "0x" + "zz" * 32),
        (1, "0x" + "00 " * 21 + "0"),
        (1, 5),
        (2, "-1"),
        (2, "+1"),
        (2, "1_0"),
        (2, " 1"),
        (2, "١"),
        (2, ""),
        (2, 1.5),
        (2, True),
        (2, None),
        (2, str(2**32)),
        (3, "0x" + "f" * 21),
        (3, str(2**80)),
        (3, "12a"),
        (8, "2"),
        (8, "255"),
        (8, "-1"),
        (8, ""),
        (8, True),
        (8, 1.0),
        (8, "0x" + "00" * 31 + "02"),
        (9, "0x" + "zz" * 32),
        (9, "0x" + "00" * 31 + " 0"),
        (9, "0x" + "00" * 31),
        (9, "1x" + "00" * 32),
        (9, b"\x00" * 32),
        (6, "0x455552ff"),
        (6, "0x657572"),
        (4, "0x" + "00" * 32),
    ],
)
def test_from_json_rejects(pos, bad):
    v = GOOD.to_json()
    v[pos] = bad
    with pytest.raises(InvalidLeaf):
        CardLeaf.from_json(v)
    with pytest.raises(InvalidLeaf):
        leaf_hashes_from_json([GOOD.to_json(), v])


@pytest.mark.parametrize(
    "bad", ["abcdefghij", b"1234567890", 5, None, {"a": 1}, [], ["0x"] * 8, ["0x"] * 9, ["0x"] * 10, ["0x"] * 11]
)
def test_from_json_rejects_shapes(bad):
    with pytest.raises(InvalidLeaf):
        CardLeaf.from_json(bad)


def test_a_dict_is_no_leaf_value_even_with_leaf_like_keys():
    v = GOOD.to_json()
    other = GOOD.with_index(1).to_json()
    as_dict = dict.fromkeys(other)  # keys in the order of a valid value (all 10 distinct)
    assert len(as_dict) == 10
    with pytest.raises(InvalidLeaf):
        CardLeaf.from_json(as_dict)
    with pytest.raises(InvalidLeaf):
        leaf_hashes_from_json([v, as_dict])  # behind a cached leaf of the same batch


# -- properties ----------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(leaves())
def test_encoding_is_abi_encode(leaf):
    assert encode_leaf(leaf) == abi_encode(LEAF_ENCODING, list(leaf.as_tuple()))
    assert leaf_hash(leaf) == keccak256(keccak256(abi_encode(LEAF_ENCODING, list(leaf.as_tuple()))))


@settings(max_examples=200, deadline=None)
@given(st.lists(leaves(), min_size=1, max_size=5))
def test_json_round_trip_and_bulk_paths_agree(batch):
    values = [leaf.to_json() for leaf in batch]
    assert [CardLeaf.from_json(v) for v in values] == batch
    assert [leafmod._parse_json_slow(v) for v in values] == [leaf.as_tuple() for leaf in batch]
    expected = [leaf_hash(leaf) for leaf in batch]
    assert leaf_hashes(batch) == expected
    assert leaf_hashes_from_json(values) == expected


_junk = st.one_of(
    st.text(max_size=70),
    st.text(alphabet="0123456789abcdefABCDEFx \t_+-٣", max_size=70),
    st.integers(-(2**130), 2**130),
    st.none(),
    st.booleans(),
    st.floats(),
)


@settings(max_examples=400, deadline=None)
@given(leaves(), st.integers(0, 9), _junk)
def test_fast_and_slow_json_parsers_agree(leaf, pos, junk):
    v = leaf.to_json()
    v[pos] = junk
    try:
        want = CardLeaf(*leafmod._parse_json_slow(v))
    except InvalidLeaf:
        want = None
    try:
        got = CardLeaf.from_json(v)
    except InvalidLeaf:
        got = None
    assert got == want
    try:
        bulk = leaf_hashes_from_json([v])
    except InvalidLeaf:
        bulk = None
    assert bulk == (None if want is None else [leaf_hash(want)])
    # Behind a good leaf of the same batch, through the cached-shared-fields path.
    try:
        bulk = leaf_hashes_from_json([leaf.to_json(), v])
    except InvalidLeaf:
        bulk = None
    assert bulk == (None if want is None else [leaf_hash(leaf), leaf_hash(want)])


def test_parallel_leaf_hashing_is_identical_and_reports_errors(monkeypatch):
    monkeypatch.setattr(leafmod, "PARALLEL_MIN_LEAVES", 10)
    n = 2001
    values = [kat_leaf(i % 50).with_index(i).to_json() for i in range(n)]
    serial = leaf_hashes_from_json(values)
    assert leaf_hashes_from_json(values, workers=2) == serial
    objs = [CardLeaf.from_json(v) for v in values]
    assert leaf_hashes(objs, workers=2) == serial
    assert leaf_hashes(iter(objs), workers=2) == serial
    for bad_at in (5, n - 5):  # in the parent's half, then in the forked child's
        broken = list(values)
        broken[bad_at] = list(values[bad_at])
        broken[bad_at][7] = str(2**64)
        with pytest.raises(InvalidLeaf, match="expiry"):
            leaf_hashes_from_json(broken, workers=2)
