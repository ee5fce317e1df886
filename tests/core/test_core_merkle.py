"""The StandardMerkleTree construction: known roots, proofs, tampering, positions, parallel build."""

from __future__ import annotations

import os

import pytest
from core_testlib import kat_leaf, leaves
from hypothesis import given, settings
from hypothesis import strategies as st

from issuer.core import merkle
from issuer.core.errors import InvalidProof, InvalidTree
from issuer.core.keccak import keccak256
from issuer.core.leaf import leaf_hash, leaf_hashes
from issuer.core.merkle import (
    MerkleTree,
    build_tree,
    hash_pair,
    process_proof,
    proof_positions,
    verify_proof,
)

# Roots of StandardMerkleTree.of([kat_leaf(0), ..., kat_leaf(k-1)], LEAF_ENCODING) (leaf version 2), computed once
# with @openzeppelin/merkle-tree 1.0.8 by tests/core/make_kats.mjs (`katRoots`) and pinned.
KAT_ROOTS = {
    1: "432510e961a9196f1831bad9949c0c3add00f75b89437ff0cc06b58297ab1e04",
    2: "898752139b73ece99406f887a78466a51d5d441368ce8f043bbb982290d2f7bf",
    3: "a46463f903737a5dbc73c2d8377df8cad1bfbf91fb7a2ccca1f1057c0e494509",
    4: "8da1a29a0b4640404aff2cfedc67e6fba8f9785a0bb4509fdcc46b162613966e",
    5: "3e4d1ea3635be04fbae25ad587a3ae3ac3ba59e2d0efe816b746e1d423e7e59c",
    6: "d46ee6e4bf3f221245dd24286ea403e73af5017fae9726fd9001f2d81a6a0ef9",
    7: "7c210d2652c2427bd82259764a1d5cd9b96ee8645f39d23a627809140e787758",
}

hashes32 = st.binary(min_size=32, max_size=32)


@pytest.mark.parametrize("k", sorted(KAT_ROOTS))
def test_kat_roots(k):
    batch = [kat_leaf(i) for i in range(k)]
    tree = build_tree(leaf_hashes(batch))
    assert tree.root.hex() == KAT_ROOTS[k]
    assert build_tree(leaf_hashes(batch[::-1])).root == tree.root  # order of input does not matter
    for i, leaf in enumerate(batch):
        verify_proof(leaf_hash(leaf), tree.proof_for(i), tree.root)


def _reference_tree(hs: list[bytes]) -> tuple[list[bytes], list[int]]:
    """Straight transcription of OZ's prepare() + makeMerkleTree(), for cross-checking."""
    hashed = sorted(enumerate(hs), key=lambda p: p[1])  # stable
    tree: list[bytes] = [b""] * (2 * len(hs) - 1)
    for i, (_, h) in enumerate(hashed):
        tree[len(tree) - 1 - i] = h
    for i in range(len(tree) - 1 - len(hs), -1, -1):
        a, b = sorted([tree[2 * i + 1], tree[2 * i + 2]])
        tree[i] = keccak256(a + b)
    ti = [0] * len(hs)
    for leaf_index, (value_index, _) in enumerate(hashed):
        ti[value_index] = len(tree) - leaf_index - 1
    return tree, ti


@settings(max_examples=150, deadline=None)
@given(st.lists(hashes32, min_size=1, max_size=40), st.data())
def test_matches_reference_and_every_proof_verifies(hs, data):
    if len(hs) > 2 and data.draw(st.booleans()):
        hs[1] = hs[-1]  # duplicates are allowed and keep their input order
    tree = build_tree(hs)
    ref, ti = _reference_tree(hs)
    assert tree.node_list() == ref and tree.nodes == b"".join(ref)
    assert list(tree.tree_indices) == ti
    assert len(tree) == tree.n_leaves == len(hs) and tree.n_nodes == 2 * len(hs) - 1
    for i, h in enumerate(hs):
        p = tree.tree_index(i)
        assert tree.node(p) == h == tree.leaf_hash_at(i)
        proof = tree.proof(p)
        assert proof == [tree.node(q) for q in proof_positions(p, tree.n_nodes)]
        assert len(proof) == (p + 1).bit_length() - 1
        verify_proof(h, proof, tree.root)
        assert process_proof(h, proof) == tree.root


@settings(max_examples=100, deadline=None)
@given(st.lists(leaves(), min_size=2, max_size=12), st.data())
def test_tampering_fails(batch, data):
    hs = leaf_hashes(batch)
    tree = build_tree(hs)
    i = data.draw(st.integers(0, len(batch) - 1))
    proof = tree.proof_for(i)
    # A changed leaf field.
    other = batch[i].with_index((batch[i].index + 1) % 2**32)
    with pytest.raises(InvalidProof):
        verify_proof(leaf_hash(other), proof, tree.root)
    # A flipped bit in any proof node.
    j = data.draw(st.integers(0, len(proof) - 1))
    bit = data.draw(st.integers(0, 255))
    bad = list(proof)
    bad[j] = (int.from_bytes(bad[j], "big") ^ (1 << bit)).to_bytes(32, "big")
    with pytest.raises(InvalidProof):
        verify_proof(hs[i], bad, tree.root)
    # A proof node dropped, or one too many.
    with pytest.raises(InvalidProof):
        verify_proof(hs[i], proof[:-1], tree.root)
    with pytest.raises(InvalidProof):
        verify_proof(hs[i], proof + [tree.root], tree.root)
    # An internal node passed off as a leaf (second-preimage): never the leaf hash of a real leaf.
    if tree.n_nodes > 3:
        with pytest.raises(InvalidProof):
            verify_proof(tree.node(1), tree.proof_for(i)[-1:], keccak256(tree.root))


def test_hash_pair_is_commutative_sorted():
    a, b = b"\x01" * 32, b"\x02" * 32
    assert hash_pair(a, b) == hash_pair(b, a) == keccak256(a + b)
    assert hash_pair(a, a) == keccak256(a + a)


def test_proof_positions():
    # 5 leaves: 9 nodes, leaves at 4..8.
    assert proof_positions(8, 9) == [7, 4, 2]
    assert proof_positions(7, 9) == [8, 4, 2]
    assert proof_positions(4, 9) == [3, 2]  # leaves 4, 5, 6 sit one level higher
    assert proof_positions(5, 9) == [6, 1]
    assert proof_positions(6, 9) == [5, 1]
    assert proof_positions(0, 1) == []
    for bad_pos, n in [(1, 9), (2, 9), (3, 9), (9, 9), (-1, 9), (0, 3), (True, 1)]:
        with pytest.raises(InvalidProof):
            proof_positions(bad_pos, n)
    for bad_n in [0, 2, -1]:
        with pytest.raises(InvalidProof):
            proof_positions(0, bad_n)


def test_single_leaf_tree():
    h = leaf_hash(kat_leaf(0))
    tree = build_tree([h])
    assert tree.root == h and tree.proof(0) == [] and tree.tree_index(0) == 0
    verify_proof(h, [], h)


def test_bad_inputs():
    with pytest.raises(InvalidTree):
        build_tree([])
    with pytest.raises(InvalidTree):
        build_tree([b"\x00" * 31])
    with pytest.raises(InvalidTree):
        build_tree([b"\x00" * 32, "00" * 32])
    assert build_tree([bytearray(32), memoryview(b"\x01" * 32)]).n_leaves == 2
    tree = build_tree([b"\x00" * 32, b"\x01" * 32])
    with pytest.raises(InvalidTree):
        tree.tree_index(2)
    with pytest.raises(InvalidTree):
        tree.node(3)
    with pytest.raises(InvalidProof):
        tree.proof(0)  # the root is no leaf
    with pytest.raises(InvalidProof):
        verify_proof(b"\x00" * 31, [], b"\x00" * 32)
    with pytest.raises(InvalidProof):
        verify_proof(b"\x00" * 32, ["00" * 32], b"\x00" * 32)
    with pytest.raises(InvalidProof):
        verify_proof(b"\x00" * 32, [], b"\x00" * 33)


def test_from_nodes_checks_everything():
    hs = [os.urandom(32) for _ in range(11)]
    tree = build_tree(hs)
    again = MerkleTree.from_nodes(tree.nodes, tree.tree_indices)
    assert again.nodes == tree.nodes and list(again.tree_indices) == list(tree.tree_indices)
    nodes = bytearray(tree.nodes)
    nodes[5 * 32] ^= 1  # an internal node
    with pytest.raises(InvalidTree):
        MerkleTree.from_nodes(bytes(nodes), tree.tree_indices)
    nodes = bytearray(tree.nodes)
    nodes[-1] ^= 1  # a leaf: the parents no longer recompute
    with pytest.raises(InvalidTree):
        MerkleTree.from_nodes(bytes(nodes), tree.tree_indices)
    ti = list(tree.tree_indices)
    with pytest.raises(InvalidTree):
        MerkleTree.from_nodes(tree.nodes, ti[:-1])
    with pytest.raises(InvalidTree):
        MerkleTree.from_nodes(tree.nodes, [ti[0]] + ti[:-1])  # duplicate position
    with pytest.raises(InvalidTree):
        MerkleTree.from_nodes(tree.nodes, [0] + ti[1:])  # the root as a leaf
    corrupt = MerkleTree(bytes(nodes), tree.tree_indices)  # unchecked constructor
    with pytest.raises(InvalidProof):
        corrupt.proof(tree.n_nodes - 1)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 9, 100, 1023, 1024, 1025, 3001])
def test_parallel_build_is_identical(n, monkeypatch):
    monkeypatch.setattr(merkle, "PARALLEL_MIN_LEAVES", 1)
    hs = [os.urandom(32) for _ in range(n)]
    if n > 3:
        hs[1] = hs[3]
    serial = build_tree(hs)
    parallel = build_tree(hs, workers=2)
    assert parallel.nodes == serial.nodes
    assert parallel.tree_indices == serial.tree_indices
    assert MerkleTree.from_nodes(serial.nodes, serial.tree_indices, workers=2).root == serial.root


def test_parallel_build_at_default_threshold():
    hs = [os.urandom(32) for _ in range(merkle.PARALLEL_MIN_LEAVES + 1)]
    assert build_tree(hs, workers=2).nodes == build_tree(hs).nodes


def test_subtree_ranges_partition_the_levels():
    for n in [2, 3, 4, 5, 7, 8, 9, 31, 32, 33, 100, 1000]:
        all_pos = {p for s, e in merkle._level_ranges(n) for p in range(s, e + 1)}
        assert all_pos == set(range(n - 1))
        if n >= 3:
            left = {p for s, e in merkle._subtree_ranges(1, n) for p in range(s, e + 1)}
            right = {p for s, e in merkle._subtree_ranges(2, n) for p in range(s, e + 1)}
            assert left | right | {0} == all_pos and not left & right
