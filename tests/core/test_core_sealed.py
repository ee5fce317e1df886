"""Sealed deliveries: the payload encoding, ECIES sealing, evidence keys, and what must fail."""

from __future__ import annotations

import hashlib
import os
import random
import struct
import time
import zlib

import ecies
import pytest
from core_testlib import KAT_BATCH_ID, kat_leaf, leaves
from hypothesis import given, settings
from hypothesis import strategies as st

from issuer.core import sealed
from issuer.core.commitment import code_commitment
from issuer.core.errors import InvalidKey, InvalidSealedDelivery, SealedDeliveryUnreadable
from issuer.core.keccak import keccak256
from issuer.core.leaf import CardLeaf, leaf_hash, leaf_hashes
from issuer.core.merkle import build_tree
from issuer.core.multiproof import multiproof, verify_multiproof
from issuer.core.sealed import (
    MAX_BODY_BYTES,
    SEALED_OVERHEAD,
    DeliveryCard,
    DeliveryPayload,
    decode_payload,
    encode_payload,
    evidence_key,
    open_sealed,
    open_with_evidence,
    public_key_of,
    seal,
    sealed_hash,
)

ESCROW = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"  # an EIP-55 test vector
EIP55 = ["0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359", "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
         "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb", ESCROW]
SK = bytes.fromhex("6f1c2bd4e0c54f1b2f8a3f4dd4c1b6f0a1e2d3c4b5a69788796a5b4c3d2e1f00")
OTHER_SK = bytes.fromhex("11" * 32)
HEAD = 136  # bytes of the body before the first card record
CARD = 156


def _codes_and_leaves(n: int, seed: int) -> tuple[list[str], list[bytes], list[CardLeaf]]:
    rng = random.Random(seed)
    codes = [f"GC-{rng.randrange(10**12):012d}-ü" if i % 7 == 3 else f"{rng.randrange(10**16):016d}" for i in range(n)]
    openings = [rng.randbytes(16) for _ in range(n)]
    base = kat_leaf(0).as_tuple()
    out = [CardLeaf(*base[:2], i, 10_000 + i, *base[4:8], 0, code_commitment(openings[i], codes[i], 0))
           for i in range(n)]
    return codes, openings, out


def _order(n: int, picked, seed: int = 1, order_id: int = 42) -> DeliveryPayload:
    codes, openings, lvs = _codes_and_leaves(n, seed)
    tree = build_tree(leaf_hashes(lvs))
    mp = multiproof(tree, picked)
    return DeliveryPayload(
        chain_id=8453, escrow=ESCROW, order_id=order_id, batch_id=KAT_BATCH_ID, root=tree.root,
        cards=tuple(DeliveryCard(lvs[i], codes[i], openings[i]) for i in mp.value_indices),
        proof=mp.proof, flags=mp.flags,
    )


@pytest.fixture(scope="module")
def payload() -> DeliveryPayload:
    return _order(23, [3, 4, 5, 11, 19])


def _verify(p: DeliveryPayload) -> None:
    verify_multiproof([leaf_hash(c.leaf) for c in p.cards], p.proof, p.flags, p.root)


# -- sealing ---------------------------------------------------------------------------------


def test_round_trip_with_compressed_and_uncompressed_keys(payload):
    uncompressed = ecies.keys.PrivateKey("secp256k1", SK).public_key.to_bytes(False)
    for pk in (public_key_of(SK), uncompressed):
        blob = seal(payload, pk)
        got = open_sealed(blob, SK)
        assert got == payload
        _verify(got)
        assert all(c.opens() for c in got.cards)
        assert sorted(c.index for c in got.cards) == [3, 4, 5, 11, 19]


def test_blob_layout_and_fresh_ephemeral_keys(payload):
    pk = public_key_of(SK)
    assert len(pk) == 33 and pk[0] in (2, 3)
    a, b = seal(payload, pk), seal(payload, pk)
    assert len(a) == len(b) == SEALED_OVERHEAD + len(encode_payload(payload))
    assert a[0] == b[0] == 4 and a[:65] != b[:65] and a[65:] != b[65:]
    assert sealed_hash(a) == keccak256(a) and len(sealed_hash(a)) == 32 and sealed_hash(a) != sealed_hash(b)
    # The plain eciespy (and eciesjs) default configuration opens it: no home-made format.
    assert decode_payload(ecies.decrypt(SK, a)) == payload


def _is_clean(e: BaseException) -> bool:
    """No library exception rides along (as cause or shown context)."""
    return e.__cause__ is None and (e.__context__ is None or e.__suppress_context__)


def test_wrong_key_fails(payload):
    blob = seal(payload, public_key_of(SK))
    for fn in (open_sealed, evidence_key):
        with pytest.raises(SealedDeliveryUnreadable) as ei:
            fn(blob, OTHER_SK)
        assert _is_clean(ei.value)


def test_tampered_blob_fails(payload):
    blob = seal(payload, public_key_of(SK))
    key = evidence_key(blob, SK)
    rng = random.Random(5)
    spots = [0, 1, 40, 64, 65, 80, 81, 96, 97, len(blob) - 1] + rng.sample(range(len(blob)), 10)
    bad = [(i, blob[:i] + bytes([blob[i] ^ 1 << rng.randrange(8)]) + blob[i + 1:]) for i in spots]
    bad += [(len(blob), t) for t in (blob[:-1], blob + b"\0", blob[:SEALED_OVERHEAD], blob[:10], b"")]
    for i, t in bad:
        with pytest.raises(SealedDeliveryUnreadable) as ei:
            open_sealed(t, SK)
        assert _is_clean(ei.value)
        if i >= 65:  # the evidence key is the AES key: it checks nonce, tag and ciphertext, not the ephemeral key
            with pytest.raises(SealedDeliveryUnreadable):
                open_with_evidence(t, key)


def test_evidence_key_opens_this_blob_only(payload):
    pk = public_key_of(SK)
    blob, other = seal(payload, pk), seal(_order(23, [0, 1], order_id=43), pk)
    key = evidence_key(blob, SK)
    assert len(key) == 32
    assert open_with_evidence(blob, key) == payload
    with pytest.raises(SealedDeliveryUnreadable):
        open_with_evidence(other, key)
    assert evidence_key(other, SK) != key
    assert evidence_key(blob, SK) == key  # a function of the blob and the key, not of chance
    assert seal(payload, pk) != blob and evidence_key(seal(payload, pk), SK) != key


def test_evidence_key_is_not_the_private_key_or_an_obvious_function_of_it(payload):
    blob = seal(payload, public_key_of(SK))
    key = evidence_key(blob, SK)
    pk = public_key_of(SK)
    obvious = {SK, SK[::-1], hashlib.sha256(SK).digest(), keccak256(SK), hashlib.sha3_256(SK).digest(),
               pk[1:], keccak256(pk), hashlib.sha256(pk).digest(), blob[1:33], blob[33:65],
               hashlib.sha256(blob[:65] + SK).digest(), hashlib.sha256(SK + blob[:65]).digest(),
               bytes(a ^ b for a, b in zip(SK, blob[1:33]))}
    assert key not in obvious
    with pytest.raises(SealedDeliveryUnreadable):
        open_with_evidence(blob, SK)
    # Keys of many deliveries to one recipient share nothing visible.
    keys = [evidence_key(seal(payload, pk), SK) for _ in range(8)]
    assert len(set(keys + [key])) == 9
    assert all(k.count(0) < 8 for k in keys)


def test_evidence_key_lets_a_malformed_payload_be_shown():
    """The key is checked against the tag only: a seller's garbage can still be opened by an arbiter."""
    blob = ecies.encrypt(public_key_of(SK), b"CPSD\x01not zlib")
    key = evidence_key(blob, SK)
    for f, k in ((open_with_evidence, key), (open_sealed, SK)):
        with pytest.raises(InvalidSealedDelivery):
            f(blob, k)


def test_malformed_keys_are_refused(payload):
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    blob = seal(payload, public_key_of(SK))
    for sk in (b"", bytes(32), n.to_bytes(32, "big"), (n + 1).to_bytes(32, "big"), SK[:31], SK + b"\0", SK.hex(),
               bytearray(SK)):
        for fn in (public_key_of, lambda k: open_sealed(blob, k), lambda k: evidence_key(blob, k)):
            with pytest.raises(InvalidKey) as ei:
                fn(sk)
            assert SK.hex() not in str(ei.value)
    pk = public_key_of(SK)
    uncompressed = ecies.keys.PrivateKey("secp256k1", SK).public_key.to_bytes(False)
    for bad in (b"", pk[:32], pk + b"\0", b"\x04" + pk[1:], b"\x02" + bytes(32), uncompressed[1:],
                b"\x04" + bytes(64), b"\x05" + uncompressed[1:], pk.hex()):
        with pytest.raises(InvalidKey):
            seal(payload, bad)
    for bad in (b"", SK[:31], SK.hex()):
        with pytest.raises(InvalidKey):
            open_with_evidence(blob, bad)


# -- the payload -----------------------------------------------------------------------------


def test_payload_is_canonical_and_compact(payload):
    b = encode_payload(payload)
    assert b[:5] == b"CPSD\x01" and encode_payload(decode_payload(b)) == b
    body = zlib.decompress(b[5:])
    assert len(body) == HEAD + len(payload.cards) * (CARD + 2) + sum(len(c.code.encode()) for c in payload.cards) \
        + 32 * len(payload.proof) + (len(payload.flags) + 7) // 8
    assert struct.unpack_from(">Q20s", body) == (8453, bytes.fromhex(ESCROW[2:]))


def test_escrow_is_an_eip55_address(payload):
    for addr in EIP55:
        q = DeliveryPayload(**{**_fields(payload), "escrow": addr})
        assert decode_payload(encode_payload(q)).escrow == addr
        for bad in (addr.lower(), addr.upper().replace("0X", "0x"), addr[2:], addr[:-1]):
            if bad != addr:
                with pytest.raises(InvalidSealedDelivery):
                    DeliveryPayload(**{**_fields(payload), "escrow": bad})


def _fields(p: DeliveryPayload) -> dict:
    return {k: getattr(p, k) for k in ("chain_id", "escrow", "order_id", "batch_id", "root", "cards", "proof", "flags")}


def test_payload_fields_are_checked(payload):
    f = _fields(payload)
    lt = payload.cards[0].leaf.as_tuple()
    other_batch = DeliveryCard(CardLeaf(lt[0], b"\x01" * 32, *lt[2:]), "X1", bytes(16))
    for change in ({"chain_id": 0}, {"chain_id": 2**64}, {"chain_id": True}, {"order_id": -1}, {"order_id": 2**256},
                   {"batch_id": b"\0" * 31}, {"root": "00" * 32}, {"cards": ()}, {"proof": f["proof"] + (b"\0" * 32,)},
                   {"flags": f["flags"][:-1]}, {"flags": tuple(int(x) for x in f["flags"])}, {"version": 2},
                   {"cards": (other_batch,) + f["cards"][1:]}, {"cards": ("not a card",) + f["cards"][1:]},
                   {"proof": (b"\0" * 33,) + f["proof"][1:]}):
        with pytest.raises(InvalidSealedDelivery):
            DeliveryPayload(**{**f, **change})
    leaf = payload.cards[0].leaf
    for code, opening in (("", bytes(16)), ("   ", bytes(16)), ("\ud800", bytes(16)), (7, bytes(16)),
                          ("A", b"\0" * 15), ("A", bytearray(16))):
        with pytest.raises(InvalidSealedDelivery):
            DeliveryCard(leaf, code, opening)


def test_secrets_stay_out_of_repr_and_errors(payload):
    card = payload.cards[0]
    assert card.code not in repr(card) and card.opening.hex() not in repr(card) and str(card.opening) not in repr(card)
    assert card.code not in repr(payload)


def _reencode(payload: DeliveryPayload, edit) -> bytes:
    body = bytearray(zlib.decompress(encode_payload(payload)[5:]))
    body = edit(body)
    return b"CPSD\x01" + zlib.compress(bytes(body))


def test_decode_rejects_malformed_payloads(payload):
    good = encode_payload(payload)
    nc, np_, nf = len(payload.cards), len(payload.proof), len(payload.flags)
    codes_at = HEAD + nc * (CARD + 2)

    def setb(pos, val):
        def edit(b):
            b[pos:pos + len(val)] = val
            return b
        return edit

    bad = [
        b"", b"CPSD", good[:4] + b"\x02" + good[5:], b"XPSD" + good[4:], good[:5] + b"not zlib", good[:-1],
        good + b"\0", good[:5] + zlib.compress(b""), good[:5] + zlib.compress(b"\0" * HEAD),
        _reencode(payload, lambda b: b[:-1]), _reencode(payload, lambda b: b + b"\0"),
        _reencode(payload, setb(HEAD - 12, struct.pack(">I", 0))),  # no cards
        _reencode(payload, setb(HEAD - 12, struct.pack(">I", nc + 1))),
        _reencode(payload, setb(HEAD - 12, struct.pack(">I", 2**32 - 1))),
        _reencode(payload, setb(HEAD - 8, struct.pack(">I", np_ + 1))),
        _reencode(payload, setb(HEAD - 4, struct.pack(">I", nf + 1))),
        _reencode(payload, setb(0, bytes(8))),  # chain id 0
        _reencode(payload, setb(HEAD, b"\0\x01")),  # leaf version 1
        _reencode(payload, setb(HEAD + 2, b"\x02")),  # first card of another batch
        _reencode(payload, setb(HEAD + 2 + 32 + 4 + 10 + 32 + 16, b"eur")),  # currency
        _reencode(payload, setb(HEAD + CARD - 49, b"\x07")),  # codeForm 7
        _reencode(payload, setb(codes_at, b"\xff")),  # code not UTF-8
        _reencode(payload, setb(codes_at, b"\xc0\x80")),  # overlong UTF-8
        _reencode(payload, setb(codes_at, b" " * len(payload.cards[0].code.encode()))),  # white space only
        _reencode(payload, setb(HEAD + nc * CARD, b"\xff\xff")),  # a code length past the end
        b"CPSD\x01" + zlib.compress(b"\0" * (MAX_BODY_BYTES + 1), 1),  # a decompression bomb
        "CPSD", None, 5,
    ]
    if nf % 8:
        bad.append(_reencode(payload, lambda b: b[:-1] + bytes([b[-1] | 1])))  # padding bit
    for i, b in enumerate(bad):
        with pytest.raises(InvalidSealedDelivery) as ei:
            decode_payload(b)
        assert _is_clean(ei.value), i
        assert not any(c.code in str(ei.value) for c in payload.cards), i


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.integers(0, 10**9))
def test_decode_fails_only_with_its_own_error(junk, seed):
    rng = random.Random(seed)
    good = bytearray(zlib.decompress(encode_payload(_order(5, [1, 3]))[5:]))
    pos = rng.randrange(len(good))
    mutated = bytes(good[:pos]) + junk[:8] + bytes(good[pos + rng.randrange(3):])
    for b in (junk, b"CPSD\x01" + junk, b"CPSD\x01" + zlib.compress(junk), b"CPSD\x01" + zlib.compress(mutated)):
        try:
            decode_payload(b)
        except InvalidSealedDelivery as e:
            assert _is_clean(e)


_codes = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40).filter(lambda s: s.strip())


@st.composite
def payloads(draw):
    batch_id = draw(st.binary(min_size=32, max_size=32))
    n = draw(st.integers(1, 6))
    cards = tuple(
        DeliveryCard(draw(leaves(batch_id)), draw(_codes), draw(st.binary(min_size=16, max_size=16))) for _ in range(n)
    )
    proof = tuple(draw(st.lists(st.binary(min_size=32, max_size=32), max_size=5)))
    flags = tuple(draw(st.lists(st.booleans(), min_size=n + len(proof) - 1, max_size=n + len(proof) - 1)))
    return DeliveryPayload(
        chain_id=draw(st.integers(1, 2**64 - 1)), escrow=sealed._checksum(draw(st.binary(min_size=20, max_size=20))),
        order_id=draw(st.integers(0, 2**256 - 1)), batch_id=batch_id, root=draw(st.binary(min_size=32, max_size=32)),
        cards=cards, proof=proof, flags=flags,
    )


@settings(max_examples=150, deadline=None)
@given(payloads())
def test_payload_round_trip(p):
    b = encode_payload(p)
    q = decode_payload(b)
    assert q == p and encode_payload(q) == b


def test_65535_card_delivery_round_trip():
    n = 65535
    t0 = time.perf_counter()
    p = _order(n, range(n), seed=9)
    blob = seal(p, public_key_of(SK))
    got = open_sealed(blob, SK)
    assert got == p and len(got.cards) == n
    assert open_with_evidence(blob, evidence_key(blob, SK)).order_id == p.order_id
    _verify(got)
    assert all(c.opens() for c in random.Random(3).sample(got.cards, 200))
    assert time.perf_counter() - t0 < 10
    assert len(blob) < 70 * n  # compact: about 62 bytes a card of this batch sealed


def test_random_key_round_trip(payload):
    sk = os.urandom(31) + b"\x01"
    assert open_sealed(seal(payload, public_key_of(sk)), sk) == payload
