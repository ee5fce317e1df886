"""OpenZeppelin StandardMerkleTree, bytes in and bytes out.

Same tree as ``@openzeppelin/merkle-tree`` 1.0.x ``StandardMerkleTree.of(values, leafEncoding)``
given the leaf hashes of ``values``:

* leaves are sorted ascending by hash (a stable sort: equal hashes keep their input order);
* the tree is a heap array of ``2n - 1`` nodes; sorted leaf ``i`` sits at ``tree[2n - 2 - i]``;
* internal node ``i`` is ``hash_pair(tree[2i + 1], tree[2i + 2])`` and
  ``hash_pair(a, b) = keccak256(min(a, b) || max(a, b))`` (OpenZeppelin's ``commutativeKeccak256``);
* a proof of the leaf at heap position ``p`` is its siblings' hashes bottom-up, which
  ``MerkleProof.verify`` in Solidity and :func:`verify_proof` fold back to the root.

The nodes are kept as one contiguous ``bytes`` of ``32 * (2n - 1)`` (node ``i`` at ``32*i``).
Levels of the heap are hashed one after the other with list comprehensions, and with
``workers=2`` the two subtrees under the root are hashed in two processes (fork).
"""

from __future__ import annotations

from array import array
from typing import Iterable, Sequence

from .errors import InvalidProof, InvalidTree
from .keccak import keccak256_factory

__all__ = [
    "MerkleTree",
    "PARALLEL_MIN_LEAVES",
    "build_tree",
    "hash_pair",
    "is_leaf_position",
    "process_proof",
    "proof_positions",
    "verify_proof",
]

PARALLEL_MIN_LEAVES = 1 << 16
"""Below this many leaves ``workers > 1`` is ignored: forking costs more than it saves."""


def hash_pair(a: bytes, b: bytes) -> bytes:
    """keccak256 of the two 32-byte nodes in ascending order."""
    a, b = _node32(a, "node"), _node32(b, "node")
    return keccak256_factory(a + b if a < b else b + a).digest()


def process_proof(leaf_hash: bytes, proof: Iterable[bytes]) -> bytes:
    """Fold ``proof`` onto ``leaf_hash``; the root it leads to. Raises InvalidProof on a malformed node."""
    k = keccak256_factory
    node = _node32(leaf_hash, "leaf hash")
    for sib in proof:
        sib = _node32(sib, "proof node")
        node = k(node + sib if node < sib else sib + node).digest()
    return node


def verify_proof(leaf_hash: bytes, proof: Iterable[bytes], root: bytes) -> None:
    """Return if ``proof`` proves ``leaf_hash`` under ``root``; raise InvalidProof otherwise."""
    root = _node32(root, "root")
    if process_proof(leaf_hash, proof) != root:
        raise InvalidProof("proof does not lead to the root")


def _node32(v: object, what: str) -> bytes:
    if type(v) is not bytes:
        if isinstance(v, (bytearray, memoryview)):
            v = bytes(v)
        else:
            raise InvalidProof(f"{what} must be 32 bytes")
    if len(v) != 32:
        raise InvalidProof(f"{what} must be 32 bytes, got {len(v)}")
    return v


def is_leaf_position(tree_pos: int, n_nodes: int) -> bool:
    """Whether heap position ``tree_pos`` is a leaf of a tree of ``n_nodes`` nodes."""
    return type(tree_pos) is int and 2 * tree_pos + 1 >= n_nodes and tree_pos < n_nodes


def proof_positions(tree_pos: int, n_nodes: int) -> list[int]:
    """Heap positions of the proof nodes of the leaf at ``tree_pos`` (bottom-up), for a store
    that keeps nodes by position and fetches only those. Raises InvalidProof unless a leaf."""
    if type(n_nodes) is not int or n_nodes < 1 or n_nodes % 2 == 0:
        raise InvalidProof("a tree has an odd, positive number of nodes")
    if not is_leaf_position(tree_pos, n_nodes):
        raise InvalidProof(f"position {tree_pos} is not a leaf of a tree of {n_nodes} nodes")
    out = []
    i = tree_pos
    while i > 0:
        out.append(i + 1 if i & 1 else i - 1)
        i = (i - 1) >> 1
    return out


class MerkleTree:
    """A built StandardMerkleTree: its nodes and where each input leaf went."""

    __slots__ = ("_nodes", "_n", "_tree_index", "_order")

    def __init__(
        self, nodes: bytes, tree_index: Sequence[int] | None = None, *, order: list[int] | None = None
    ) -> None:
        """Wrap ``nodes`` (``32 * (2n - 1)`` bytes) and either ``tree_index`` (heap position of each
        input leaf, in input order) or ``order`` (input indices in sorted-leaf order, from which the
        positions are derived on first use). Not validated: use :func:`build_tree` or :meth:`from_nodes`."""
        self._nodes = nodes
        self._n = (len(nodes) // 32 + 1) // 2
        self._tree_index = None if tree_index is None else array("q", tree_index)
        self._order = order
        if (tree_index is None) == (order is None):
            raise InvalidTree("give exactly one of tree_index and order")
        if len(tree_index if tree_index is not None else order) != self._n or len(nodes) != 32 * (2 * self._n - 1):
            raise InvalidTree("nodes and leaf positions disagree in size")

    def _positions(self) -> array:
        ti = self._tree_index
        if ti is None:
            ti = self._tree_index = _tree_positions(self._order)
            self._order = None
        return ti

    @classmethod
    def from_nodes(cls, nodes: bytes, tree_indices: Sequence[int], *, workers: int = 1) -> "MerkleTree":
        """A tree from stored nodes and tree indices, checked: internal nodes are recomputed from
        the leaves and must match, and ``tree_indices`` must be distinct leaf positions."""
        nodes = bytes(nodes)
        n = len(tree_indices)
        if n == 0 or len(nodes) != 32 * (2 * n - 1):
            raise InvalidTree(f"{len(tree_indices)} leaves need {32 * (2 * n - 1)} bytes of nodes, got {len(nodes)}")
        ti = array("q", tree_indices)
        lo, hi = n - 1, 2 * n - 2
        if len(set(ti)) != n or min(ti) < lo or max(ti) > hi:
            raise InvalidTree("tree indices must be distinct leaf positions")
        if _build_nodes(nodes[32 * lo :], n, workers) != nodes:
            raise InvalidTree("internal nodes do not recompute from the leaves")
        return cls(nodes, ti)

    # -- shape ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._n

    @property
    def n_leaves(self) -> int:
        return self._n

    @property
    def n_nodes(self) -> int:
        return 2 * self._n - 1

    @property
    def root(self) -> bytes:
        return self._nodes[:32]

    @property
    def nodes(self) -> bytes:
        """All nodes, heap order, 32 bytes each, contiguous."""
        return self._nodes

    def node(self, tree_pos: int) -> bytes:
        if type(tree_pos) is not int or not 0 <= tree_pos < 2 * self._n - 1:
            raise InvalidTree(f"no node at position {tree_pos!r}")
        return self._nodes[32 * tree_pos : 32 * tree_pos + 32]

    def node_list(self) -> list[bytes]:
        """All nodes as a list (as the dump's ``tree``, before hex)."""
        b = self._nodes
        return [b[j : j + 32] for j in range(0, len(b), 32)]

    def tree_index(self, value_index: int) -> int:
        """Heap position of the leaf that was ``leaf_hashes[value_index]`` in :func:`build_tree`."""
        if type(value_index) is not int or not 0 <= value_index < self._n:
            raise InvalidTree(f"no leaf {value_index!r} in a tree of {self._n}")
        return self._positions()[value_index]

    @property
    def tree_indices(self) -> array:
        """A copy of the heap positions of all input leaves, in input order (``array('q')``)."""
        return array("q", self._positions())

    def leaf_hash_at(self, value_index: int) -> bytes:
        return self.node(self.tree_index(value_index))

    # -- proofs --------------------------------------------------------------------------------

    proof_positions = staticmethod(proof_positions)

    def proof(self, tree_pos: int) -> list[bytes]:
        """Proof of the leaf at heap position ``tree_pos``, checked against the root before return."""
        b = self._nodes
        proof = [b[32 * p : 32 * p + 32] for p in proof_positions(tree_pos, 2 * self._n - 1)]
        if process_proof(b[32 * tree_pos : 32 * tree_pos + 32], proof) != b[:32]:
            raise InvalidProof("unable to prove the leaf: the tree is corrupt")
        return proof

    def proof_for(self, value_index: int) -> list[bytes]:
        """Proof of input leaf ``value_index`` (OZ ``getProof(i)``)."""
        return self.proof(self.tree_index(value_index))

    def __repr__(self) -> str:
        return f"MerkleTree(n_leaves={self._n}, root=0x{self.root.hex()})"


def build_tree(leaf_hashes: Sequence[bytes], *, workers: int = 1) -> MerkleTree:
    """StandardMerkleTree over ``leaf_hashes`` (32-byte leaf hashes, any order, duplicates allowed).

    ``workers=2`` hashes the root's two subtrees in two processes (fork) for big trees; the
    result is the same bytes. Keep ``workers=1`` in a multi-threaded process.
    """
    hs = leaf_hashes if isinstance(leaf_hashes, list) else list(leaf_hashes)
    n = len(hs)
    if n == 0:
        raise InvalidTree("a tree needs at least one leaf")
    if not all(type(h) is bytes for h in hs):
        hs = [bytes(h) if isinstance(h, (bytearray, memoryview)) else h for h in hs]
        if not all(type(h) is bytes for h in hs):
            raise InvalidTree("leaf hashes must be bytes")
    if set(map(len, hs)) != {32}:
        raise InvalidTree("leaf hashes must be 32 bytes each")
    # Stable sort by hash, as Array.prototype.sort in OZ's prepare(): equal hashes keep input order.
    order = sorted(range(n), key=hs.__getitem__)
    # Heap order of the leaves: sorted leaf i at 2n-2-i, i.e. descending from position n-1.
    leafbuf = b"".join([hs[vi] for vi in reversed(order)])
    return MerkleTree(_build_nodes(leafbuf, n, workers), order=order)


def _tree_positions(order: Sequence[int]) -> array:
    """Heap position of each input leaf from the sorted order of the inputs."""
    n = len(order)
    last = 2 * n - 2
    ti = [0] * n
    for rank, vi in enumerate(order):
        ti[vi] = last - rank
    return array("q", ti)


def _level_ranges(n: int) -> list[tuple[int, int]]:
    """``(start, end)`` inclusive heap positions of the internal nodes of each level, deepest first."""
    out = []
    last_internal = n - 2
    level_start = 0
    while level_start <= last_internal:
        out.append((level_start, min(2 * level_start, last_internal)))
        level_start = 2 * level_start + 1
    out.reverse()
    return out


def _subtree_ranges(root: int, n: int) -> list[tuple[int, int]]:
    """The part of each level's internal nodes that lies under heap position ``root``, deepest first."""
    depth = (root + 1).bit_length() - 1
    out = []
    for level_start, _ in _level_ranges(n):
        level = (level_start + 1).bit_length() - 1
        if level < depth:
            continue
        s = (root + 1) * (1 << (level - depth)) - 1
        e = min(s + (1 << (level - depth)) - 1, n - 2)
        if s <= e:
            out.append((s, e))
    return out


def _hash_level(children: list[bytes]) -> list[bytes]:
    k = keccak256_factory
    return [
        k(a + b).digest() if a < b else k(b + a).digest()
        for a, b in zip(children[0::2], children[1::2])
    ]


def _fill(internal: list, leafbuf: bytes, n: int, ranges: list[tuple[int, int]]) -> None:
    """Hash the internal nodes of ``ranges`` (deepest first) into ``internal`` (positions 0 .. n-2);
    leaf children (positions n-1 ..) are read from ``leafbuf``."""
    first_leaf = n - 1
    for s, e in ranges:
        a, b = 2 * s + 1, 2 * e + 2  # children, inclusive
        if b < first_leaf:
            children = internal[a : b + 1]
        else:
            lo = 32 * (max(a, first_leaf) - first_leaf)
            hi = 32 * (b - first_leaf + 1)
            children = [leafbuf[j : j + 32] for j in range(lo, hi, 32)]
            if a < first_leaf:
                children = internal[a:first_leaf] + children
        internal[s : e + 1] = _hash_level(children)


def _build_nodes(leafbuf: bytes, n: int, workers: int = 1) -> bytes:
    """All ``2n - 1`` nodes, contiguous, from the leaves in heap order (positions n-1 .. 2n-2)."""
    internal: list = [b""] * (n - 1)
    if workers > 1 and n >= max(PARALLEL_MIN_LEAVES, 3):
        from ._fork import run_forked

        right_ranges = _subtree_ranges(2, n)

        def child() -> bytes:
            mine: list = [b""] * (n - 1)
            _fill(mine, leafbuf, n, right_ranges)
            return b"".join([b"".join(mine[s : e + 1]) for s, e in right_ranges])

        right, _ = run_forked(child, lambda: _fill(internal, leafbuf, n, _subtree_ranges(1, n)))
        off = 0
        for s, e in right_ranges:
            m = 32 * (e - s + 1)
            internal[s : e + 1] = [right[j : j + 32] for j in range(off, off + m, 32)]
            off += m
        if off != len(right):
            raise InvalidTree("worker returned a malformed subtree")

        def node(p: int) -> bytes:
            return internal[p] if p < n - 1 else leafbuf[32 * (p - n + 1) : 32 * (p - n + 2)]

        internal[0] = hash_pair(node(1), node(2))
    else:
        _fill(internal, leafbuf, n, _level_ranges(n))
    internal.append(leafbuf)
    return b"".join(internal)
