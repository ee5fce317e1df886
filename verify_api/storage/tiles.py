"""The Merkle heap array cut into tiles, so that a proof reads a few small rows instead of whole chunks.

A tile is named by the heap position of its root ``r``, a node at a depth that is a multiple of
``TILE_HEIGHT``; it holds the ``TILE_HEIGHT`` levels of nodes *below* ``r`` (relative depths 1 .. k), each
level a contiguous run of the heap array (the descendants of ``r`` at relative depth ``j`` are the positions
``(r+1)·2^j - 1 .. (r+1)·2^j + 2^j - 2``), padded with zero nodes past the end of the tree. Every node but the
root is in exactly one tile, and a node and its sibling are always in the same tile, so the proof of a leaf
of a tree of depth ``d`` touches ``ceil(d / k)`` tiles: 5 rows of 2 KiB for a million cards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

__all__ = ["NODE", "TILE_HEIGHT", "MissingTile", "depth", "make_tiles", "node_from_tiles", "tile_of", "tiles_for",
           "walk"]

NODE = 32
TILE_HEIGHT = 5
_ZERO = bytes(NODE)


def depth(pos: int) -> int:
    return (pos + 1).bit_length() - 1


def tile_of(pos: int) -> int:
    """The tile (its root's heap position) that holds node ``pos`` (``pos >= 1``)."""
    d = depth(pos)
    if d < 1:
        raise ValueError("the root is in no tile")
    up = d - ((d - 1) // TILE_HEIGHT) * TILE_HEIGHT
    return ((pos + 1) >> up) - 1


def _slot(root: int, pos: int) -> int:
    j = depth(pos) - depth(root)
    return (1 << j) - 2 + pos - (((root + 1) << j) - 1)


def make_tiles(nodes: bytes) -> Iterator[tuple[int, bytes]]:
    """``(tile root, data)`` of every tile of a heap array (``32 * (2n - 1)`` bytes)."""
    view = memoryview(nodes)
    n_nodes = len(view) // NODE
    if n_nodes * NODE != len(view) or n_nodes % 2 == 0:
        raise ValueError("a heap array has an odd number of 32-byte nodes")
    band = 0
    while True:
        first = (1 << band) - 1  # the first position at depth `band`
        if 2 * first + 1 >= n_nodes:  # no node at this depth has children
            return
        for r in range(first, min(2 * first + 1, n_nodes)):
            if 2 * r + 1 >= n_nodes:
                break
            parts = []
            for j in range(1, TILE_HEIGHT + 1):
                lo = ((r + 1) << j) - 1
                hi = lo + (1 << j)
                if lo >= n_nodes:
                    break
                parts.append(bytes(view[lo * NODE: min(hi, n_nodes) * NODE]))
                if hi > n_nodes:
                    parts.append(_ZERO * (hi - n_nodes))
            yield r, b"".join(parts)
        band += TILE_HEIGHT


def node_from_tiles(tiles: dict[int, bytes], pos: int) -> bytes | None:
    """Node ``pos`` out of fetched ``tiles`` (None if its tile is missing or too short)."""
    root = tile_of(pos)
    data = tiles.get(root)
    if data is None:
        return None
    off = _slot(root, pos) * NODE
    node = data[off: off + NODE]
    return node if len(node) == NODE else None


def tiles_for(positions: Iterable[int]) -> set[int]:
    return {tile_of(p) for p in positions}


class MissingTile(KeyError):
    """A tile a walk needed is not at hand (its root's heap position is ``tile``)."""

    def __init__(self, tile: int) -> None:
        super().__init__(tile)
        self.tile = tile


def walk(get: Callable[[int], bytes | None], tree_pos: int) -> tuple[bytes | None, list[bytes]]:
    """(the node at ``tree_pos``, its proof: the siblings bottom-up), read out of the tiles ``get`` returns, in one
    pass up the tree (the hot path's version of :func:`node_from_tiles` over ``proof_positions``). The node is
    None for the root (a one-card tree). Raises MissingTile for a tile ``get`` does not have; a short tile gives
    short nodes, which the caller's proof check refuses."""
    proof: list[bytes] = []
    node = None
    p = tree_pos
    d = (p + 1).bit_length() - 1
    while p > 0:
        up = d - ((d - 1) // TILE_HEIGHT) * TILE_HEIGHT  # levels from p up to its tile's root
        root = ((p + 1) >> up) - 1
        data = get(root)
        if data is None:
            raise MissingTile(root)
        base = (1 << up) - 2 - (((root + 1) << up) - 1)  # slot = base + position, within this tile
        if node is None and p == tree_pos:
            off = (base + p) * NODE
            node = data[off: off + NODE]
        sib = p + 1 if p & 1 else p - 1
        off = (base + sib) * NODE
        proof.append(data[off: off + NODE])
        p = (p - 1) >> 1
        d -= 1
    return node, proof
