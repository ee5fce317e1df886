"""Minting (generated codes), products, serials, commitments, storage: on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import hmac
import random
import secrets

import pytest

from issuer import minting
from issuer.codes import CodeFormat
from issuer.core.commitment import code_commitment, derive_opening, openings
from issuer.core.leaf import CODE_FORM_EXACT, CODE_FORM_FOLDED, LEAF_VERSION, CardLeaf, currency_to_bytes3, leaf_hashes, sku_to_bytes32
from issuer.core.merkle import MerkleTree
from issuer.core.serial import SERIAL_BITS, format_serial, parse_serial
from issuer.errors import InvalidCount, UnsupportedCurrency
from issuer.minting import MAX_BATCH_CARDS, MintRequest, canonical_serials, manifest, manifest_hash, mint_batch
from issuer.products import InvalidProduct
from issuer.secrets_store import code_fingerprint, code_fingerprints
from issuer.storage import repository as repo
from tests.issuer.helpers import (
    ISSUER,
    all_stored_values,
    batch_keys,
    cards_of,
    code_forms,
    expected_commitment,
    mint,
    table_counts,
)

# --- serials ---------------------------------------------------------------------------------------


def test_canonical_serials_equal_format_serial_without_dashes():
    rng = random.Random(7)
    values = [0, 1, 31, 32, 36, 37, 2**SERIAL_BITS - 1, 2**SERIAL_BITS - 2, 2**79, 2**40 + 5]
    values += [rng.getrandbits(k) for k in range(1, SERIAL_BITS + 1)]
    values += [secrets.randbits(SERIAL_BITS) for _ in range(5000)]
    expected = [format_serial(v).replace("-", "") for v in values]
    assert canonical_serials(values) == expected
    raw = b"".join(v.to_bytes(10, "big") for v in values)
    assert canonical_serials(values, raw) == expected
    assert canonical_serials([]) == []
    assert canonical_serials([0]) == ["0000000000000000" + "0"]
    assert canonical_serials([2**80 - 1]) == [format_serial(2**80 - 1).replace("-", "")]


@pytest.mark.parametrize("bad", [-1, 2**80, "12"])
def test_canonical_serials_refuse_out_of_range(bad):
    with pytest.raises(ValueError):
        canonical_serials([5, bad])


def test_new_serial_values_are_distinct_80_bit():
    values = minting.new_serial_values(20_000)
    assert len(set(values)) == 20_000
    assert all(0 <= v < 2**80 for v in values)
    assert max(values).bit_length() > 70  # really 80 random bits, not a counter


# --- generated batches ----------------------------------------------------------------------------


def test_mint_generated_batch_stores_everything_consistently(sessions, master_key):
    res = mint(sessions, master_key, count=25, sku="STEAM-50", face_value="50", currency="eur",
               expires="2099-12-31")
    assert res.count == 25 and res.sku == "STEAM-50" and res.currency == "EUR" and res.face_value == 5000
    assert res.expiry == int(dt.datetime(2099, 12, 31, 23, 59, 59, tzinfo=dt.UTC).timestamp())
    assert res.batch_id.startswith("0x" + ISSUER[2:].lower()) and len(res.batch_id) == 66
    assert res.code_form == CODE_FORM_FOLDED  # generated codes: case-, space- and dash-insensitive
    cards = cards_of(sessions, master_key, res.batch_id)
    assert [c["index"] for c in cards] == list(range(25))

    with sessions() as s:
        batch = repo.get_batch(s, res.batch_id)
        assert batch.state == "minted" and batch.card_count == 25 and batch.root == res.root
        assert batch.anchor_tx is None and batch.issuer_address == repo.checksum_address(ISSUER)
        assert batch.code_form == CODE_FORM_FOLDED
        nodes = repo.load_tree(s, batch.id)

    # Codes: default format, distinct, 100 bits.
    codes = [c["code"] for c in cards]
    assert len(set(codes)) == 25
    fmt = CodeFormat()
    assert all(len(c) == fmt.display_length and fmt.ungroup(c).isalnum() for c in codes)
    # Serials: canonical 17-symbol form, valid check symbol, distinct.
    serials = [c["serial"] for c in cards]
    assert len(set(serials)) == 25
    assert all(len(s) == 17 and format_serial(parse_serial(s)).replace("-", "") == s for s in serials)
    # The commitment is the core's code_commitment with the card's own opening (derived per index, all
    # distinct); the fingerprint the secrets store's, of the code as stored (so that a generated code imported
    # again as printed clashes).
    assert len({c["opening"] for c in cards}) == 25
    for c in cards:
        assert c["commitment"] == code_commitment(c["opening"], c["code"], CODE_FORM_FOLDED)
        assert c["commitment"] == code_commitment(c["opening"], c["code"].lower().replace("-", ""), CODE_FORM_FOLDED)
        assert c["commitment"] != code_commitment(derive_opening(secrets.token_bytes(32), c["index"]), c["code"],
                                                  CODE_FORM_FOLDED)
        assert c["fingerprint"] == code_fingerprint(master_key.fingerprint_key(), c["code"])
    # The tree recomputes, and every card's leaf sits at its tree_pos.
    tree = MerkleTree.from_nodes(nodes, [c["tree_pos"] for c in cards])
    assert "0x" + tree.root.hex() == res.root
    bid = bytes.fromhex(res.batch_id[2:])
    leaves = [CardLeaf(LEAF_VERSION, bid, c["index"], parse_serial(c["serial"]), sku_to_bytes32("STEAM-50"), 5000,
                       currency_to_bytes3("EUR"), res.expiry, CODE_FORM_FOLDED, c["commitment"]) for c in cards]
    for c, h in zip(cards, leaf_hashes(leaves)):
        assert tree.node(c["tree_pos"]) == h
    # The manifest hash covers the public batch description.
    m = manifest(bid, res.issuer, "STEAM-50", 5000, "EUR", res.expiry, 25, tree.root, CODE_FORM_FOLDED)
    assert m["code_form"] == CODE_FORM_FOLDED
    assert "0x" + manifest_hash(m).hex() == res.manifest_hash


def test_openings_fast_path_equals_core():
    """Minting derives openings with precomputed HMAC pads (``openings``): the same bytes as derive_opening."""
    for key in (secrets.token_bytes(32), secrets.token_bytes(16), secrets.token_bytes(100)):
        assert openings(key, 0, 40) == [derive_opening(key, i) for i in range(40)]
        assert openings(key, 2**32 - 3, 2**32) == [derive_opening(key, i) for i in range(2**32 - 3, 2**32)]
        assert openings(key, 7, 7) == []


def test_minted_commitments_equal_core(master_key):
    """The minting fast path (openings, canonical codes, one SHA-256 each) gives code_commitment's bytes."""
    codes = ["A", "ABCDE-FGHJK-MNPQR-STVWX", "é-ünïcødé-✓", "x" * 128, "with space inside"]
    for form in (CODE_FORM_EXACT, CODE_FORM_FOLDED):
        job = minting._Job(b"\x01" * 32, sku_to_bytes32("X"), 1, b"USD", 0, form, secrets.token_bytes(32),
                           secrets.token_bytes(32), secrets.token_bytes(32))
        part = minting._compute_part(job, codes, list(range(1, len(codes) + 1)), 0, len(codes))
        assert part.commitments == [code_commitment(derive_opening(job.open_key, i), code, form)
                                    for i, code in enumerate(codes)]


@pytest.mark.parametrize("n", [1, 2, 3, 1001])
def test_parallel_minting_gives_the_same_kind_of_batch(sessions, master_key, monkeypatch, n):
    """workers=2 computes the second half of the cards in a forked process; everything must still line up."""
    monkeypatch.setattr(minting, "PARALLEL_MIN_CARDS", 1)
    res = mint(sessions, master_key, count=n, workers=2)
    cards = cards_of(sessions, master_key, res.batch_id)
    assert len(cards) == n == len({c["serial"] for c in cards}) == len({c["code"] for c in cards})
    codes = [c["code"] for c in cards]
    open_key, _ = batch_keys(sessions, master_key, res.batch_id)
    assert [c["opening"] for c in cards] == openings(open_key, 0, n)
    assert [c["commitment"] for c in cards] == [expected_commitment(c) for c in cards]
    assert [c["fingerprint"] for c in cards] == code_fingerprints(master_key.fingerprint_key(), codes)
    with sessions() as s:
        nodes = repo.load_tree(s, repo.get_batch(s, res.batch_id).id)
    tree = MerkleTree.from_nodes(nodes, [c["tree_pos"] for c in cards])
    assert "0x" + tree.root.hex() == res.root
    bid = bytes.fromhex(res.batch_id[2:])
    hashes = leaf_hashes([CardLeaf(LEAF_VERSION, bid, c["index"], parse_serial(c["serial"]),
                                   sku_to_bytes32("GC-20-USD"), 2000, b"USD", 0, res.code_form, c["commitment"])
                          for c in cards])
    assert all(tree.node(c["tree_pos"]) == h for c, h in zip(cards, hashes))


def test_serials_and_batches_are_unique_across_batches(sessions, master_key):
    a = mint(sessions, master_key, count=30)
    b = mint(sessions, master_key, count=30)
    assert a.batch_id != b.batch_id and a.root != b.root
    serials = [c["serial"] for r in (a, b) for c in cards_of(sessions, master_key, r.batch_id)]
    assert len(set(serials)) == 60


def test_custom_code_format(sessions, master_key):
    fmt = CodeFormat(alphabet="0123456789", length=31, group_size=4, separator=" ")
    res = mint_batch(sessions, master_key, ISSUER,
                     MintRequest(sku="X", face_value="1", currency="USD", count=5, code_format=fmt))
    assert res.code_form == CODE_FORM_FOLDED  # digits only: folding merges no two codes
    for c in cards_of(sessions, master_key, res.batch_id):
        assert len(c["code"]) == fmt.display_length and fmt.ungroup(c["code"]).isdigit()
        assert c["commitment"] == code_commitment(c["opening"], c["code"], CODE_FORM_FOLDED)
        assert c["commitment"] == code_commitment(c["opening"], fmt.ungroup(c["code"]), CODE_FORM_FOLDED)


def test_a_lower_case_alphabet_is_committed_exactly(sessions, master_key):
    """Folding would merge two codes of an alphabet with lower-case letters: such codes are committed exactly."""
    fmt = CodeFormat(alphabet="abcdefghjkmnpqrstvwxyz23456789", length=20, group_size=5)
    res = mint_batch(sessions, master_key, ISSUER,
                     MintRequest(sku="X", face_value="1", currency="USD", count=3, code_format=fmt))
    assert res.code_form == CODE_FORM_EXACT
    for c in cards_of(sessions, master_key, res.batch_id):
        assert c["code_form"] == CODE_FORM_EXACT
        assert c["commitment"] == code_commitment(c["opening"], c["code"], CODE_FORM_EXACT)
        assert c["commitment"] != code_commitment(c["opening"], c["code"].upper(), CODE_FORM_EXACT)


def test_no_plaintext_code_is_stored(sessions, master_key, engine, tmp_path):
    mint(sessions, master_key, count=40)
    (tmp_path / "in.csv").write_text("code\n" + "\n".join(f"IMPORTED-SECRET-{i:04d}" for i in range(10)) + "\n")
    mint(sessions, master_key, codes_csv=tmp_path / "in.csv")
    with sessions() as s:
        ids = [b.batch_id for b in repo.list_batches(s)]
    codes = [c["code"] for b in ids for c in cards_of(sessions, master_key, b)]
    assert len(codes) == 50
    stored = all_stored_values(sessions)
    assert stored
    for code in codes:
        for form in code_forms(code):
            enc = form.encode()
            for table, col, value in stored:
                assert (form not in value) if isinstance(value, str) else (enc not in value), (table, col)
    if engine.dialect.name == "sqlite":  # the database files themselves, pages and WAL
        engine.dispose()
        raw = b"".join(p.read_bytes() for p in tmp_path.glob("cardproof.db*"))
        assert raw and not any(form.encode() in raw for code in codes for form in code_forms(code))


# --- products and counts --------------------------------------------------------------------------


@pytest.mark.parametrize("currency", ["XXX", "XAU", "XTS", "US", "USDT", "", "   ", "D€M", "ZWD"])
def test_unsupported_currency(sessions, master_key, currency):
    before = table_counts(sessions)
    with pytest.raises(UnsupportedCurrency) as err:
        mint(sessions, master_key, currency=currency)
    assert "\n" not in str(err.value)
    assert table_counts(sessions) == before


@pytest.mark.parametrize("value,currency,minor", [
    ("20.00", "USD", 2000), ("20", "usd", 2000), ("0.01", "EUR", 1), ("500", "JPY", 500),
    ("1.234", "KWD", 1234), (" 7.5 ", "GBP", 750), (12, "USD", 1200),
])
def test_face_value_in_minor_units(sessions, master_key, value, currency, minor):
    res = mint(sessions, master_key, count=1, face_value=value, currency=currency)
    assert res.face_value == minor
    with sessions() as s:
        assert repo.get_batch(s, res.batch_id).face_value == minor


@pytest.mark.parametrize("value,currency", [
    ("0", "USD"), ("-1", "USD"), ("abc", "USD"), ("", "USD"), ("20.001", "USD"), ("1.5", "JPY"),
    ("NaN", "USD"), ("Infinity", "USD"), ("1e40", "USD"), (str(2**63), "JPY"),
])
def test_bad_face_value(sessions, master_key, value, currency):
    before = table_counts(sessions)
    with pytest.raises(InvalidProduct):
        mint(sessions, master_key, face_value=value, currency=currency)
    assert table_counts(sessions) == before


def test_largest_storable_face_value(sessions, master_key):
    res = mint(sessions, master_key, count=1, face_value=str(2**63 - 1), currency="JPY")
    with sessions() as s:
        assert repo.get_batch(s, res.batch_id).face_value == 2**63 - 1


@pytest.mark.parametrize("sku", ["", "   ", "x" * 33, "GC-€", "tab\there", None])
def test_bad_sku(sessions, master_key, sku):
    with pytest.raises(InvalidProduct):
        mint(sessions, master_key, sku=sku)


def test_sku_is_trimmed_and_may_hold_inner_spaces(sessions, master_key):
    assert mint(sessions, master_key, count=1, sku="  Gift Card 20  ").sku == "Gift Card 20"
    assert mint(sessions, master_key, count=1, sku="x" * 32).sku == "x" * 32


@pytest.mark.parametrize("expires", ["2001-01-01", "yesterday", "2030-02-30", "31/12/2099", "2099-13-01"])
def test_bad_expiry(sessions, master_key, expires):
    with pytest.raises(InvalidProduct):
        mint(sessions, master_key, expires=expires)


@pytest.mark.parametrize("count", [0, -1, -1000, MAX_BATCH_CARDS + 1, None, True, 2.0, "5"])
def test_bad_count(sessions, master_key, count):
    before = table_counts(sessions)
    with pytest.raises(InvalidCount) as err:
        mint(sessions, master_key, count=count)
    assert "\n" not in str(err.value)
    assert table_counts(sessions) == before


def test_bad_issuer_address(sessions, master_key):
    with pytest.raises(ValueError):
        mint(sessions, master_key, issuer="0x1234")


def test_commitment_is_keyed_per_batch(sessions, master_key, tmp_path):
    """The same code imported into two batches (once deleted) commits differently: per-batch keys."""
    (tmp_path / "a.csv").write_text("code\nSAME-CODE-123456\n")
    a = mint(sessions, master_key, codes_csv=tmp_path / "a.csv")
    ca = cards_of(sessions, master_key, a.batch_id)[0]
    with sessions.begin() as s:
        repo.delete_batch(s, repo.get_batch(s, a.batch_id))
    b = mint(sessions, master_key, codes_csv=tmp_path / "a.csv")
    cb = cards_of(sessions, master_key, b.batch_id)[0]
    assert ca["code"] == cb["code"] == "SAME-CODE-123456"
    assert ca["fingerprint"] == cb["fingerprint"]
    assert not hmac.compare_digest(ca["commitment"], cb["commitment"])


def test_a_failure_while_storing_leaves_nothing_behind(sessions, master_key, monkeypatch):
    mint(sessions, master_key, count=3)
    before = table_counts(sessions)

    def broken(*_a, **_k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(repo, "save_tree", broken)  # after the batch row and all its cards were inserted
    with pytest.raises(RuntimeError):
        mint(sessions, master_key, count=50)
    assert table_counts(sessions) == before
