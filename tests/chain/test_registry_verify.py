"""verifyCard and leaf hashing: Python's leaf/tree code (issuer.core) against the contract and OZ MerkleProof."""

from __future__ import annotations

import random

from eth_abi import encode as abi_encode
from eth_utils import keccak

from chain.registry import CardStatus
from issuer.core.leaf import LEAF_FIELDS, CardLeaf, encode_leaf, leaf_hash
from issuer.core.merkle import build_tree
from tests.chain.registry_kit import MANIFEST, bid

LEAF_TYPES = [t for _, t in LEAF_FIELDS]

# ---------------------------------------------------------------- known answers
#
# Computed with @openzeppelin/merkle-tree 1.0.8 (node_modules), independently of the Python code:
#   StandardMerkleTree.of(values, ["bytes32","uint32","uint80","bytes32","uint128","bytes3","uint64","bytes32"])
# over the five KAT_LEAVES below (batch 0xaf14...0253d + 11 zero bytes + 0x07), then .root, .leafHash(values[0])
# and .getProof(0).
KAT_ISSUER = "0xAf1435509AA6aB5AFA7f8939D2c006373Ea0253d"  # tests/chainkit.py's "issuer" (key 0x1000)
KAT_BATCH = bytes.fromhex(KAT_ISSUER[2:].lower()) + bytes(11) + b"\x07"
KAT_ROOT = bytes.fromhex("567252dfa56337ef33eb2bd020e03e07f03165b50890e39a056d8ee68e35f3b2")
KAT_LEAF0_HASH = bytes.fromhex("7d4350d0bcca013c283471bcd6649db9e8f3db8d3ca6c75b46373c637d288949")
KAT_PROOF0 = [
    bytes.fromhex("7ade849ccbeaae987de4ff7922f96d01cd9e21571aa5cbb5b0ed50fa2232670e"),
    bytes.fromhex("a9249c6279fda91797b8c634b8fe5043a8b75e162bc3f363ee14fbcefe000f2b"),
]
KAT_SKU = b"GC-100-EUR".ljust(32, b"\x00")
KAT_LEAVES = [
    CardLeaf(KAT_BATCH, i, 0x1234567890ABCDEF1234 + i, KAT_SKU, 10_000, b"EUR",
             0 if i == 4 else 1_893_456_000, bytes([0x11 * i]) * 32)
    for i in range(5)
]


def random_leaves(rng: random.Random, batch_id: bytes, count: int, expiry: int = 0) -> list[CardLeaf]:
    return [
        CardLeaf(batch_id, i, rng.getrandbits(80), f"SKU-{rng.randrange(10, 99)}".encode().ljust(32, b"\x00"),
                 rng.getrandbits(64), rng.choice([b"EUR", b"USD", b"JPY"]), expiry, rng.randbytes(32))
        for i in range(count)
    ]


def anchor_tree(env, leaves: list[CardLeaf], card_count: int | None = None):
    tree = build_tree([leaf_hash(leaf) for leaf in leaves])
    env.registry("issuer").anchor_batch(leaves[0].batch_id, tree.root, card_count or len(leaves), MANIFEST)
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
    chain_env.registry("issuer").anchor_batch(KAT_BATCH, KAT_ROOT, len(KAT_LEAVES), MANIFEST)
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
    leaves[5] = CardLeaf(*(leaves[5].as_tuple()[:6] + (0,) + leaves[5].as_tuple()[7:]))  # never expires
    tree = anchor_tree(chain_env, leaves)
    reg = chain_env.registry()
    issuer = chain_env.registry("issuer")

    def status(i: int):
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
    assert [status(i)[1] for i in range(6)] == [CardStatus.REVOKED] * 6  # a redeemed card too


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

    tampered = CardLeaf(*(leaf.as_tuple()[:4] + (leaf.face_value + 1,) + leaf.as_tuple()[5:]))
    assert reg.verify_card(tampered.as_tuple(), proof) == unknown

    # Wrong batch: the same root anchored under another id does not vouch for this batch's leaves.
    other = bid(chain_env, n=2)
    chain_env.registry("issuer").anchor_batch(other, tree.root, 7, MANIFEST)
    moved = CardLeaf(other, *leaf.as_tuple()[1:])
    assert reg.verify_card(moved.as_tuple(), proof) == unknown

    for i in (5, 6):  # authentic leaf and proof, but index >= cardCount
        assert reg.verify_card(leaves[i].as_tuple(), proof_of(tree, i)) == unknown

    unanchored = CardLeaf(bid(chain_env, n=3), *leaf.as_tuple()[1:])
    assert reg.verify_card(unanchored.as_tuple(), proof) == unknown
