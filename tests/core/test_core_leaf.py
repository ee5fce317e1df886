"""The card leaf: definition against the contract and docs, validation, JSON form, encoding, hash."""

from __future__ import annotations

import dataclasses
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
    LEAF_ATTRS,
    LEAF_ENCODING,
    LEAF_FIELDS,
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

# Computed once with @openzeppelin/merkle-tree 1.0.8 (tests/core/oz_tree.mjs) and pinned.
KAT_LEAF0_HASH = "d0329181e4ab52601f60dc04e39db8b3e1fc2ba1c60a4e43856fbcbf33f44d82"
KAT_MAX_LEAF_HASH = "15c0def815fc21ba47bdfb2f589203614f35ff86a3c01b044ec88aa4ac89e594"


# -- the definition ------------------------------------------------------------------------


def test_leaf_fields_are_the_contract_struct():
    sol = (REPO / "contracts" / "ICardRegistry.sol").read_text()
    body = re.search(r"struct CardLeaf \{(.*?)\}", sol, re.S).group(1)
    body = re.sub(r"///[^\n]*", "", body)
    fields = re.findall(r"(\w+)\s+(\w+)\s*;", body)
    assert tuple((name, t) for t, name in fields) == LEAF_FIELDS


def test_leaf_encoding_and_attrs():
    assert LEAF_ENCODING == ["bytes32", "uint32", "uint80", "bytes32", "uint128", "bytes3", "uint64", "bytes32"]
    assert LEAF_ATTRS == tuple(f.name for f in dataclasses.fields(CardLeaf))
    assert LEAF_ATTRS == (
        "batch_id", "index", "serial", "sku", "face_value", "currency", "expiry", "code_commitment"
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
    assert '["bytes32","uint32","uint80","bytes32","uint128","bytes3","uint64","bytes32"]' in doc


# -- known answers -------------------------------------------------------------------------


def test_kat_leaf_hash():
    assert leaf_hash(kat_leaf(0)).hex() == KAT_LEAF0_HASH
    assert leaf_hash(MAX_LEAF).hex() == KAT_MAX_LEAF_HASH


def test_kat_encoding_layout():
    enc = encode_leaf(kat_leaf(2))
    assert len(enc) == 256
    words = [enc[i : i + 32] for i in range(0, 256, 32)]
    assert words[0] == bytes.fromhex("a1b2c3d4e5f60718293a4b5c6d7e8f9012345678") + (1).to_bytes(12, "big")
    assert words[1] == (2).to_bytes(32, "big")
    assert words[2] == (0x0123456789ABCDEF0123 + 2).to_bytes(32, "big")
    assert words[3] == b"GC-EUR-25" + bytes(23)
    assert words[4] == (2500).to_bytes(32, "big")
    assert words[5] == b"EUR" + bytes(29)
    assert words[6] == (1893456000).to_bytes(32, "big")
    assert leaf_hash(kat_leaf(2)) == keccak256(keccak256(enc))


# -- validation ----------------------------------------------------------------------------

GOOD = kat_leaf(0)


@pytest.mark.parametrize(
    "field, bad",
    [
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
        "0xa1b2c3d4e5f60718293a4b5c6d7e8f9012345678000000000000000000000001",
        "1",
        str(0x0123456789ABCDEF0123 + 1),
        "0x" + (b"GC-EUR-25" + bytes(23)).hex(),
        "2500",
        "0x455552",
        "1893456000",
        "0x" + kat_leaf(1).code_commitment.hex(),
    ]


def test_bulk_path_takes_other_forms_behind_a_cached_leaf():
    v = GOOD.to_json()
    alt = list(v)
    alt[1], alt[2], alt[7] = 0, hex(GOOD.serial), v[7].upper().replace("0X", "0x")
    assert leaf_hashes_from_json([v, alt, tuple(v)]) == [leaf_hash(GOOD)] * 3


def test_from_json_accepts_abi_utils_forms():
    v = GOOD.to_json()
    alt = [v[0].upper().replace("0X", "0x"), 0, hex(GOOD.serial), v[3], 2500, v[5], "0x70dbd880", v[7]]
    assert CardLeaf.from_json(alt) == GOOD
    assert CardLeaf.from_json(tuple(v)) == GOOD
    assert CardLeaf.from_json(["0x" + "ab" * 32, "007", "0", v[3], "0", "0x555344", "0", "0x" + "cd" * 32]).index == 7


@pytest.mark.parametrize(
    "pos, bad",
    [
        (0, "0x" + "00" * 31),
        (0, "00" * 33),
        (0, "0x" + "zz" * 32),
        (0, "0x" + "00 " * 21 + "0"),
        (0, 5),
        (1, "-1"),
        (1, "+1"),
        (1, "1_0"),
        (1, " 1"),
        (1, "١"),
        (1, ""),
        (1, 1.5),
        (1, True),
        (1, None),
        (1, str(2**32)),
        (2, "0x" + "f" * 21),
        (2, str(2**80)),
        (2, "12a"),
        (7, "0x" + "zz" * 32),
        (7, "0x" + "00" * 31 + " 0"),
        (7, "0x" + "00" * 31),
        (7, "1x" + "00" * 32),
        (7, b"\x00" * 32),
        (5, "0x455552ff"),
        (5, "0x657572"),
        (3, "0x" + "00" * 32),
    ],
)
def test_from_json_rejects(pos, bad):
    v = GOOD.to_json()
    v[pos] = bad
    with pytest.raises(InvalidLeaf):
        CardLeaf.from_json(v)
    with pytest.raises(InvalidLeaf):
        leaf_hashes_from_json([GOOD.to_json(), v])


@pytest.mark.parametrize("bad", ["abcdefgh", b"12345678", 5, None, {"a": 1}, [], ["0x"] * 7, ["0x"] * 9])
def test_from_json_rejects_shapes(bad):
    with pytest.raises(InvalidLeaf):
        CardLeaf.from_json(bad)


def test_a_dict_is_no_leaf_value_even_with_leaf_like_keys():
    v = GOOD.to_json()
    other = GOOD.with_index(1).to_json()
    as_dict = dict.fromkeys(other)  # keys in the order of a valid value (all 8 distinct)
    assert len(as_dict) == 8
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
@given(leaves(), st.integers(0, 7), _junk)
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
        broken[bad_at][6] = str(2**64)
        with pytest.raises(InvalidLeaf, match="expiry"):
            leaf_hashes_from_json(broken, workers=2)
