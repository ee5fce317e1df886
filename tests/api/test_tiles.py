"""The tiles of a published tree: the hot path's one-pass walk reads the same leaf and proof as reading each
proof position on its own, for every leaf of trees of every shape, and a missing tile is said as such."""

from __future__ import annotations

import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from issuer.core.errors import InvalidProof
from issuer.core.merkle import process_proof, proof_positions
from verify_api.storage.tiles import MissingTile, make_tiles, node_from_tiles, tile_of, walk


def _tree(n_leaves: int) -> tuple[bytes, dict[int, bytes]]:
    n_nodes = 2 * n_leaves - 1
    nodes = b"".join(secrets.token_bytes(32) for _ in range(n_nodes))
    return nodes, dict(make_tiles(nodes))


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=1, max_value=3000), st.data())
def test_walk_reads_what_the_positions_read(n_leaves, data):
    nodes, tiles = _tree(n_leaves)
    n_nodes = 2 * n_leaves - 1
    for _ in range(5):
        pos = data.draw(st.integers(min_value=n_leaves - 1, max_value=n_nodes - 1))
        node, proof = walk(tiles.get, pos)
        assert proof == [node_from_tiles(tiles, p) for p in proof_positions(pos, n_nodes)]
        assert node == (node_from_tiles(tiles, pos) if pos else None)
        assert node is None or node == nodes[pos * 32: pos * 32 + 32]


def test_walk_over_a_million_leaf_tree_and_a_missing_tile():
    n_leaves = 1_000_000
    pos = 2 * n_leaves - 2  # the last leaf, deepest level
    positions = proof_positions(pos, 2 * n_leaves - 1)
    fake = {tile_of(p): secrets.token_bytes(62 * 32) for p in positions}  # tiles of 62 nodes
    node, proof = walk(fake.get, pos)
    assert len(proof) == len(positions) and all(len(x) == 32 for x in proof)
    assert proof == [node_from_tiles(fake, p) for p in positions]
    top = tile_of(positions[-1])
    del fake[top]
    with pytest.raises(MissingTile) as err:
        walk(fake.get, pos)
    assert err.value.tile == top


def test_a_short_tile_gives_short_nodes_that_no_proof_accepts():
    nodes, tiles = _tree(64)
    for pos in (2 * 64 - 2, 2 * 64 - 3):  # the leaf's slot is cut off; then its sibling's
        cut = dict(tiles)
        cut[tile_of(pos)] = tiles[tile_of(pos)][:40]
        node, proof = walk(cut.get, pos)
        if len(node) == 32:
            with pytest.raises(InvalidProof):
                process_proof(node, proof)
        else:
            assert node != nodes[pos * 32: pos * 32 + 32]  # the card reader's leaf check refuses it
