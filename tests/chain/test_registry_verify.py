"""verifyCard and leaf hashing: Python's leaf/tree code (issuer.core) against the contract and OZ MerkleProof."""

from __future__ import annotations

import dataclasses
import random

import pytest
from eth_abi import encode as abi_encode
from eth_utils import keccak

from chain import errors
from chain.registry import CardStatus, ProductSpec
from issuer.core.commitment import code_commitment, derive_batch_keys, derive_opening
from issuer.core.leaf import (
    CODE_FORM_EXACT,
    CODE_FORM_FOLDED,
    LEAF_FIELDS,
    LEAF_VERSION,
    CardLeaf,
    encode_leaf,
    leaf_hash,
)
from issuer.core.merkle import build_tree
from tests.chain.registry_kit import MANIFEST, bid, same_address

LEAF_TYPES = [t for _, t in LEAF_FIELDS]

# ---------------------------------------------------------------- known answers
#
# Leaf version 2. Computed with @openzeppelin/merkle-tree 1.0.8 (node_modules) by tests/core/make_kats.mjs
# (`chain`), independently of the Python code:
#   StandardMerkleTree.of(values, ["uint16","bytes32","uint32","uint80","bytes32","uint128","bytes3","uint64",
#   "uint8","bytes32"]) over the five KAT_LEAVES below (batch 0xaf14...0253d + 11 zero bytes + 0x07), then .root,
#   .leafHash(values[0]) and .getProof(0).
KAT_ISSUER = "0xAf1435509AA6aB5AFA7f8939D2c006373Ea0253d"  # tests/chainkit.py's "issuer" (key 0x1000)
KAT_BATCH = bytes.fromhex(KAT_ISSUER[2:].lower()) + bytes(11) + b"\x07"
KAT_ROOT = bytes.fromhex("cc5930f1b8782e297d6d9479dcaf7ff8567067dd77e2d000a6005745132edffc")
KAT_LEAF0_HASH = bytes.fromhex("8735c3070b72096ca918f39b80f18d36f1404a10af487a6908b070252aa28d51")
KAT_PROOF0 = [
    bytes.fromhex("35ec0f1a8c72614e7d90a3f7cd118ec32dc42e88448f94172d71b35694df46f8"),
    bytes.fromhex("7d14338bb07dc1f4f76a10aa811068fd3bbd4108a91eec75d736dc7d833f2bf8"),
]
KAT_SKU = b"GC-100-EUR".ljust(32, b"\x00")
KAT_LEAVES = [
    CardLeaf(LEAF_VERSION, KAT_BATCH, i, 0x1234567890ABCDEF1234 + i, KAT_SKU, 10_000, b"EUR",
             0 if i == 4 else 1_893_456_000, i % 2, bytes([0x11 * i]) * 32)
    for i in range(5)
]


def random_leaves(rng: random.Random, batch_id: bytes, count: int, expiry: int = 0) -> list[CardLeaf]:
    """Random leaves of one batch (one product and expiry, as a batch is anchored with), with real v2
    commitments (codes and openings as an issuer makes them)."""
    open_key, _ = derive_batch_keys(rng.randbytes(32))
    sku = f"SKU-{rng.randrange(10, 99)}".encode().ljust(32, b"\x00")
    face, currency = rng.getrandbits(64) | 1, rng.choice([b"EUR", b"USD", b"JPY"])
    out = []
    for i in range(count):
        form = rng.choice([CODE_FORM_EXACT, CODE_FORM_FOLDED])
        code = "-".join(rng.randbytes(5).hex().upper() for _ in range(3))
        out.append(CardLeaf(LEAF_VERSION, batch_id, i, rng.getrandbits(80), sku, face, currency, expiry, form,
                            code_commitment(derive_opening(open_key, i), code, form)))
    return out


def product_of(leaf: CardLeaf) -> ProductSpec:
    return ProductSpec(leaf.sku, leaf.face_value, leaf.currency)


def replace(leaf: CardLeaf, **changes) -> CardLeaf:
    return dataclasses.replace(leaf, **changes)


def anchor_tree(env, leaves: list[CardLeaf], card_count: int | None = None):
    """Anchor the tree of `leaves` with the first leaf's product and expiry (the batch's)."""
    tree = build_tree([leaf_hash(leaf) for leaf in leaves])
    env.registry("issuer").anchor_batch(leaves[0].batch_id, tree.root, card_count or len(leaves), MANIFEST,
                                        product_of(leaves[0]), leaves[0].expiry)
    return tree


def proof_of(tree, i: int) -> list[bytes]:
    return tree.proof(tree.tree_index(i))


# ---------------------------------------------------------------- tests


def test_kat_leaf_hash_python_matches_oz_and_abi():
    """No chain: leaf.py's encoding and hash against eth_abi/eth_utils and the recorded OZ answers."""
    leaf = KAT_LEAVES[0]
    values = list(leaf.as_tuple())
    assert encode_leaf(leaf) == abi_encode(LEAF_TYPES, values)
    assert keccak(keccak(abi_encode(LEAF_TYPES, values))) == KAT_LEAF0_HASH
    assert leaf_hash(leaf) == KAT_LEAF0_HASH
    tree = build_tree([leaf_hash(x) for x in KAT_LEAVES])
    assert tree.root == KAT_ROOT
    assert proof_of(tree, 0) == KAT_PROOF0


def test_kat_on_chain(chain_env):
    assert chain_env.address("issuer") == KAT_ISSUER
    reg = chain_env.registry()
    for leaf in KAT_LEAVES:
        assert reg.leaf_hash(leaf.as_tuple()) == leaf_hash(leaf)
    assert reg.leaf_hash(KAT_LEAVES[0].as_tuple()) == KAT_LEAF0_HASH
    chain_env.registry("issuer").anchor_batch(KAT_BATCH, KAT_ROOT, len(KAT_LEAVES), MANIFEST,
                                              product_of(KAT_LEAVES[0]), KAT_LEAVES[0].expiry)
    assert reg.verify_card(KAT_LEAVES[0].as_tuple(), KAT_PROOF0) == (True, CardStatus.VALID)


def test_every_proof_of_a_random_batch_verifies(chain_env):
    rng = random.Random(20240611)
    leaves = random_leaves(rng, bid(chain_env), 13)
    tree = anchor_tree(chain_env, leaves)
    reg = chain_env.registry()
    assert reg.batch(leaves[0].batch_id).root == tree.root
    for i, leaf in enumerate(leaves):
        assert reg.leaf_hash(leaf.as_tuple()) == leaf_hash(leaf)
        assert reg.verify_card(leaf.as_tuple(), proof_of(tree, i)) == (True, CardStatus.VALID), i


def test_single_card_batch_has_an_empty_proof(chain_env):
    (leaf,) = random_leaves(random.Random(1), bid(chain_env), 1)
    tree = anchor_tree(chain_env, [leaf])
    assert tree.root == leaf_hash(leaf) and proof_of(tree, 0) == []
    assert chain_env.registry().verify_card(leaf.as_tuple(), []) == (True, CardStatus.VALID)


def test_statuses(chain_env):
    now = chain_env.now()
    batch_id = bid(chain_env)
    leaves = random_leaves(random.Random(7), batch_id, 6, expiry=now + 10_000)
    tree = anchor_tree(chain_env, leaves)
    # A batch's cards share one expiry: the card that never expires comes from a batch anchored with expiry 0.
    (forever,) = random_leaves(random.Random(8), bid(chain_env, n=2), 1, expiry=0)
    anchor_tree(chain_env, [forever])
    reg = chain_env.registry()
    issuer = chain_env.registry("issuer")

    def status(i: int):
        if i == 5:
            return reg.verify_card(forever.as_tuple(), [])
        return reg.verify_card(leaves[i].as_tuple(), proof_of(tree, i))

    assert [status(i) for i in range(6)] == [(True, CardStatus.VALID)] * 6
    issuer.revoke_cards(batch_id, [1], 1)
    issuer.mark_redeemed(batch_id, [2])
    assert status(1) == (True, CardStatus.REVOKED)
    assert status(2) == (True, CardStatus.REDEEMED)

    chain_env.set_next_timestamp(now + 20_000)  # well past the expiry, whatever block a call runs on
    assert status(0) == (True, CardStatus.EXPIRED)
    assert status(5) == (True, CardStatus.VALID)  # expiry 0
    assert status(1) == (True, CardStatus.REVOKED)  # revoked and redeemed win over expired
    assert status(2) == (True, CardStatus.REDEEMED)

    issuer.revoke_batch(batch_id, 3)
    issuer.revoke_batch(forever.batch_id, 3)
    # Redeemed is reported before a batch-level revocation: card 2 was used before its batch was revoked (and the
    # escrow pays for it); card 1, revoked on its own, stays revoked; the rest are revoked with the batch.
    assert [status(i)[1] for i in range(6)] == [CardStatus.REVOKED, CardStatus.REVOKED, CardStatus.REDEEMED,
                                                 CardStatus.REVOKED, CardStatus.REVOKED, CardStatus.REVOKED]


def test_redeemed_before_revoked(chain_env):
    """A card redeemed before its batch was revoked stays Redeemed; one revoked on its own stays Revoked; after the
    batch revocation no card can be redeemed any more."""
    batch_id = bid(chain_env)
    leaves = random_leaves(random.Random(11), batch_id, 300)  # two bitmap words
    tree = anchor_tree(chain_env, leaves)
    reg = chain_env.registry()
    issuer = chain_env.registry("issuer")
    issuer.mark_redeemed(batch_id, [0, 255, 256, 299])
    issuer.revoke_cards(batch_id, [1, 257], 1)
    issuer.revoke_batch(batch_id, 3)

    def status(i: int):
        return reg.verify_card(leaves[i].as_tuple(), proof_of(tree, i))

    for i in (0, 255, 256, 299):
        assert status(i) == (True, CardStatus.REDEEMED)
    for i in (1, 257, 2, 298):
        assert status(i) == (True, CardStatus.REVOKED)
    with pytest.raises(errors.CardRevoked):
        issuer.mark_redeemed(batch_id, [2])


def test_unknown_cards(chain_env):
    rng = random.Random(99)
    batch_id = bid(chain_env)
    leaves = random_leaves(rng, batch_id, 7)
    # Anchored with fewer cards than the tree holds: leaves 5 and 6 are out of range.
    tree = anchor_tree(chain_env, leaves, card_count=5)
    reg = chain_env.registry()
    unknown = (False, CardStatus.UNKNOWN)
    leaf, proof = leaves[3], proof_of(tree, 3)
    assert reg.verify_card(leaf.as_tuple(), proof) == (True, CardStatus.VALID)

    bad_proof = [bytes([proof[0][0] ^ 1]) + proof[0][1:], *proof[1:]]
    assert reg.verify_card(leaf.as_tuple(), bad_proof) == unknown
    assert reg.verify_card(leaf.as_tuple(), proof[:-1]) == unknown
    assert reg.verify_card(leaf.as_tuple(), []) == unknown
    assert reg.verify_card(leaf.as_tuple(), proof_of(tree, 2)) == unknown  # another card's proof

    for tampered in (
        replace(leaf, face_value=leaf.face_value + 1),
        replace(leaf, code_form=1 - leaf.code_form),
        replace(leaf, code_commitment=bytes(32)),
    ):
        assert reg.verify_card(tampered.as_tuple(), proof) == unknown
    # A leaf of another version hashes differently (the Python side refuses to even build one).
    other_version = (3,) + leaf.as_tuple()[1:]
    assert reg.verify_card(other_version, proof) == unknown

    # Wrong batch: the same root anchored under another id does not vouch for this batch's leaves.
    other = bid(chain_env, n=2)
    chain_env.registry("issuer").anchor_batch(other, tree.root, 7, MANIFEST, product_of(leaf), leaf.expiry)
    moved = replace(leaf, batch_id=other)
    assert reg.verify_card(moved.as_tuple(), proof) == unknown

    for i in (5, 6):  # authentic leaf and proof, but index >= cardCount
        assert reg.verify_card(leaves[i].as_tuple(), proof_of(tree, i)) == unknown

    unanchored = replace(leaf, batch_id=bid(chain_env, n=3))
    assert reg.verify_card(unanchored.as_tuple(), proof) == unknown


def test_leaf_hash_on_chain_equals_python_for_random_leaves(chain_env):
    """CardRegistry.leafHash (Solidity abi.encode of the struct) against issuer.core.leaf_hash, both code forms,
    every field at its extremes and at random."""
    rng = random.Random(0xC0DE)
    reg = chain_env.registry()
    leaves = []
    for n in range(48):
        def pick(bits: int) -> int:
            return rng.choice([0, 1, 2**bits - 1, rng.getrandbits(bits)])

        sku = "".join(rng.choice("ABCXYZ-_ 0123456789") for _ in range(rng.randrange(1, 33))).strip() or "X"
        leaves.append(CardLeaf(LEAF_VERSION, rng.randbytes(32) if n % 3 else bytes(20) + rng.randbytes(12),
                               pick(32), pick(80), sku.encode().ljust(32, b"\x00"), pick(128),
                               bytes(rng.choice(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(3)), pick(64),
                               n % 2, rng.choice([bytes(32), b"\xff" * 32, rng.randbytes(32)])))
    for leaf in leaves:
        assert reg.leaf_hash(leaf.as_tuple()) == leaf_hash(leaf), leaf


def test_every_issuer_proof_of_a_minted_batch_verifies(chain_env, tmp_path, sqlite_template):
    """The supplier's whole path: mint (issuer.minting), anchor (issuer.anchoring), export (cards.csv with code
    and opening, tree.json); then every leaf of the dump verifies on chain with its proof, and every card's
    code opens its leaf's commitment with its opening, in the batch's code form."""
    import csv

    from chain.registry import Registry
    from issuer.anchoring import anchor_batch
    from issuer.core.commitment import opens, parse_opening
    from issuer.core.dump import load_dump
    from issuer.core.serial import format_serial
    from issuer.export import export_batch
    from issuer.minting import MintRequest, mint_batch
    from issuer.secrets_store import MasterKey
    from issuer.storage.db import session_factory
    from tests import dbutil

    engine = dbutil.sqlite_engine_from(sqlite_template, tmp_path / "issuer.db")
    try:
        sessions = session_factory(engine)
        master_key = MasterKey.generate()
        issuer = Registry(chain_env.client("issuer"), chain_env.registry_address)
        minted = mint_batch(sessions, master_key, chain_env.address("issuer"),
                            MintRequest(sku="GC-25-EUR", face_value="25.00", currency="EUR", count=37,
                                        expires="2031-12-31"))
        assert minted.code_form == CODE_FORM_FOLDED  # generated codes
        anchor_batch(sessions, issuer, minted.batch_id)
        result = export_batch(sessions, master_key, minted.batch_id, tmp_path / "export", "https://cards.example",
                              qr=False)
    finally:
        engine.dispose()

    batch_id = bytes.fromhex(minted.batch_id[2:])
    reg = chain_env.registry()
    on_chain = reg.batch(batch_id)
    assert on_chain.root.hex() == minted.root[2:] and on_chain.card_count == 37
    assert same_address(on_chain.issuer, chain_env.address("issuer"))

    tree_text = (tmp_path / "export" / "tree.json").read_text()
    loaded = load_dump(tree_text)
    assert loaded.tree.root == on_chain.root and len(loaded.leaves) == 37
    with open(result.cards_csv, newline="", encoding="utf-8") as f:
        cards = {int(row["index"]): row for row in csv.DictReader(f)}
    assert sorted(cards) == list(range(37))
    for i, leaf in enumerate(loaded.leaves):
        assert (leaf.version, leaf.batch_id, leaf.code_form) == (LEAF_VERSION, batch_id, CODE_FORM_FOLDED)
        proof = loaded.tree.proof_for(i)
        assert reg.leaf_hash(leaf.as_tuple()) == leaf_hash(leaf)
        assert reg.verify_card(leaf.as_tuple(), proof) == (True, CardStatus.VALID), i
        card = cards[leaf.index]
        assert card["serial"] == format_serial(leaf.serial)
        opening = parse_opening(card["opening"])
        assert opens(card["code"], opening, leaf.code_form, leaf.code_commitment)
        assert opens(card["code"].lower().replace("-", " "), opening, leaf.code_form, leaf.code_commitment)
        assert not opens(card["code"], parse_opening(cards[(leaf.index + 1) % 37]["opening"]), leaf.code_form,
                         leaf.code_commitment)
        # The public dump carries neither the code nor the opening.
        assert card["code"] not in tree_text and card["opening"] not in tree_text
        assert opening.hex() not in tree_text
