"""Real batches for the escrow's membership disputes: CardLeaf values, their OpenZeppelin tree and multiproofs.

`real_leaves` makes the leaves of one batch (one product and expiry, as the registry anchors a batch with),
`RealBatch.anchor` anchors their root, and `RealBatch.proven(indices)` gives proveDelivery's arguments: the
cards' public leaf fields in the multiproof's leaf order, the proof and the flags (issuer.core.multiproof).
Commitments are random 32-byte values: the escrow only rebuilds and hashes the leaves, it never opens them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from chain.escrow import ProvenCard
from chain.registry import ProductSpec, Registry
from issuer.core.leaf import CODE_FORM_EXACT, CODE_FORM_FOLDED, LEAF_VERSION, CardLeaf, leaf_hashes
from issuer.core.merkle import MerkleTree, build_tree
from issuer.core.multiproof import multiproof

MANIFEST = b"\x5a" * 32


def real_leaves(batch_id: bytes, count: int, product: ProductSpec, expiry: int = 0, *,
                seed: int = 0) -> list[CardLeaf]:
    """`count` version-2 leaves of batch `batch_id`, cards 0 .. count-1 of `product` expiring at `expiry`."""
    rng = random.Random(seed)
    forms = (CODE_FORM_EXACT, CODE_FORM_FOLDED)
    return [CardLeaf(LEAF_VERSION, batch_id, i, rng.getrandbits(80), product.sku, product.face_value,
                     product.currency, expiry, forms[i & 1], rng.randbytes(32)) for i in range(count)]


def proven_card(leaf: CardLeaf) -> ProvenCard:
    """The public fields of `leaf` that proveDelivery takes (the rest the escrow takes from the batch)."""
    return ProvenCard(leaf.index, leaf.serial, leaf.code_form, leaf.code_commitment)


@dataclass
class RealBatch:
    batch_id: bytes
    product: ProductSpec
    expiry: int
    leaves: list[CardLeaf]
    tree: MerkleTree

    @classmethod
    def make(cls, batch_id: bytes, count: int, product: ProductSpec, expiry: int = 0, *, seed: int = 0,
             leaves: list[CardLeaf] | None = None) -> RealBatch:
        leaves = leaves if leaves is not None else real_leaves(batch_id, count, product, expiry, seed=seed)
        return cls(batch_id, product, expiry, leaves, build_tree(leaf_hashes(leaves)))

    @property
    def root(self) -> bytes:
        return self.tree.root

    def anchor(self, registry: Registry, *, card_count: int | None = None) -> RealBatch:
        """Anchor the root with the batch's product and expiry (the issuer of `registry` owns the batch id)."""
        registry.anchor_batch(self.batch_id, self.root, card_count or len(self.leaves), MANIFEST, self.product,
                              self.expiry)
        return self

    def proven(self, indices: Sequence[int], leaves: Sequence[CardLeaf] | None = None
               ) -> tuple[list[ProvenCard], list[bytes], list[bool]]:
        """proveDelivery's (cards, proof, flags) for cards `indices`. `leaves` (default: the batch's) are the
        leaves handed over as the cards' fields, by card index: a forger passes others than the tree's."""
        mp = multiproof(self.tree, list(indices))
        source = leaves if leaves is not None else self.leaves
        return [proven_card(source[i]) for i in mp.value_indices], list(mp.proof), list(mp.flags)


def forged(leaf: CardLeaf, **changes: object) -> CardLeaf:
    return replace(leaf, **changes)
