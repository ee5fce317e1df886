"""OpenZeppelin Merkle multiproofs over a :class:`~issuer.core.merkle.MerkleTree`.

A multiproof proves several leaves of one tree at once, with fewer nodes than their single proofs.
It is ``(leaves, proof, flags)``, the arguments of OpenZeppelin's Solidity
``MerkleProof.multiProofVerify(proof, proofFlags, root, leaves)``:

* :func:`multiproof` is ``@openzeppelin/merkle-tree`` 1.0.x ``getMultiProof`` (``dist/core.js``): the heap
  positions of the leaves are sorted descending (deepest, right-most first) and walked as a queue; each
  step takes the next position ``j``, and if its sibling is the next one in the queue, both are merged
  (flag ``True``), else the sibling's hash joins ``proof`` (flag ``False``); the parent goes to the end
  of the queue. ``leaves`` are the leaf hashes in that descending-position order, the order in which
  ``processMultiProof`` consumes them; ``MultiProof.value_indices`` names their input leaves.
* :func:`process_multiproof` is Solidity ``MerkleProof.processMultiProof``: a queue that starts with
  ``leaves`` and receives each new hash; for each flag it hashes (``hash_pair``) the next queue item with
  either the next queue item (``True``) or the next ``proof`` node (``False``); the root is the last hash,
  or with no flags ``leaves[0]`` (else ``proof[0]``). It fails (Solidity reverts) unless
  ``len(leaves) + len(proof) == len(flags) + 1`` and ``proof`` is consumed exactly.

CAUTION (as OpenZeppelin's): with no leaves, ``proof == [root]`` verifies; callers check the leaves
they expect independently. Both functions are linear in the number of leaves proven (a list and a
read pointer stand for the queues), so proving all 65,535 leaves of a batch takes a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .errors import InvalidProof
from .keccak import keccak256_factory
from .merkle import MerkleTree, _node32

__all__ = ["MultiProof", "multiproof", "process_multiproof", "verify_multiproof"]


@dataclass(frozen=True)
class MultiProof:
    """A multiproof of some leaves of one tree, in the order ``processMultiProof`` consumes them."""

    leaves: tuple[bytes, ...]
    """Leaf hashes, by descending heap position."""
    value_indices: tuple[int, ...]
    """The input index (``build_tree`` order) of each of ``leaves``, same order."""
    proof: tuple[bytes, ...]
    flags: tuple[bool, ...]


def multiproof(tree: MerkleTree, value_indices: Sequence[int]) -> MultiProof:
    """OZ ``getMultiProof`` of the input leaves ``value_indices`` (any order), checked against the root.

    InvalidTree for an index that is not a leaf of ``tree`` (as :meth:`MerkleTree.tree_index`),
    InvalidProof for a repeated index. No index gives ``proof == (root,)`` as OpenZeppelin does.
    """
    pairs = sorted(((tree.tree_index(vi), vi) for vi in value_indices), reverse=True)
    positions = [p for p, _ in pairs]
    if any(a == b for a, b in zip(positions, positions[1:])):
        raise InvalidProof("cannot prove the same leaf twice")
    nodes = tree.nodes
    queue = list(positions)
    proof: list[bytes] = []
    flags: list[bool] = []
    head = 0
    # JS's ``stack.shift()`` is ``queue[head]; head += 1``: the same steps, without the quadratic shifts.
    while head < len(queue) and queue[head] > 0:
        j = queue[head]
        head += 1
        s = j + 1 if j & 1 else j - 1
        if head < len(queue) and queue[head] == s:
            flags.append(True)
            head += 1
        else:
            flags.append(False)
            proof.append(nodes[32 * s : 32 * s + 32])
        queue.append((j - 1) >> 1)
    if not positions:
        proof.append(tree.root)
    out = MultiProof(
        leaves=tuple(nodes[32 * p : 32 * p + 32] for p in positions),
        value_indices=tuple(vi for _, vi in pairs),
        proof=tuple(proof),
        flags=tuple(flags),
    )
    if process_multiproof(out.leaves, out.proof, out.flags) != tree.root:
        raise InvalidProof("unable to prove the leaves: the tree is corrupt")
    return out


def process_multiproof(leaves: Sequence[bytes], proof: Sequence[bytes], flags: Sequence[bool]) -> bytes:
    """The root that ``(leaves, proof, flags)`` lead to, as Solidity ``processMultiProof``.

    Raises InvalidProof where Solidity reverts (counts that do not add up, ``proof`` not consumed
    exactly) and for a node that is not 32 bytes or a flag that is not a ``bool``.
    """
    queue = [_node32(x, "leaf hash") for x in leaves]
    proof = [_node32(x, "proof node") for x in proof]
    flags = list(flags)
    if not all(type(f) is bool for f in flags):
        raise InvalidProof("proof flags must be bools")
    n_leaves = len(queue)
    if n_leaves + len(proof) != len(flags) + 1:
        raise InvalidProof("invalid multiproof: leaves + proof != flags + 1")
    if not flags:
        return queue[0] if n_leaves else proof[0]
    if flags.count(False) != len(proof):
        # Solidity either reads past the end of ``proof`` or finds it not fully consumed: a revert.
        # With these counts the queue never runs dry, so the loop below cannot fail.
        raise InvalidProof("invalid multiproof: the flags do not consume the proof exactly")
    k = keccak256_factory
    head = 0
    pi = 0
    append = queue.append
    for flag in flags:
        a = queue[head]
        if flag:
            b = queue[head + 1]
            head += 2
        else:
            b = proof[pi]
            pi += 1
            head += 1
        append(k(a + b if a < b else b + a).digest())
    return queue[-1]


def verify_multiproof(
    leaves: Sequence[bytes], proof: Sequence[bytes], flags: Sequence[bool], root: bytes
) -> None:
    """Return if the multiproof leads to ``root`` (Solidity ``multiProofVerify``); raise InvalidProof otherwise."""
    root = _node32(root, "root")
    if process_multiproof(leaves, proof, flags) != root:
        raise InvalidProof("multiproof does not lead to the root")
