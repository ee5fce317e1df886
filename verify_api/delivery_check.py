"""Check an opened sealed delivery against the chain, card by card: what the buyer's ``order receive`` and the
arbiter's ``order review`` show.

Nothing here trusts the supplier or the public service. The sealed blob's keccak256 must be the hash the escrow
recorded with the delivery; then, for every card:

* ``in_root``: its leaf is in the root the registry anchored for the order's batch (the delivery's multiproof,
  folded here with :func:`issuer.core.multiproof.process_multiproof`, must reach that root; the payload's own
  root is ignored);
* ``opens``: its code and opening open the leaf's code commitment;
* ``product``: the leaf's SKU, face value and currency are the order's product, its expiry the batch's and no
  sooner than the order's minimum expiry;
* ``in_order``: its index is one of the cards the escrow delivered in this order (so it was delivered in no other:
  the escrow sells a card once), and it appears once;
* ``unique_code``: no other card of the delivery carries the same code;
* ``not_revoked`` / ``not_redeemed``: the registry's bitmaps, now.

Every card the escrow delivered must be in the sealed delivery (a missing one is a failure of its own).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from issuer.core.commitment import canonical_code
from issuer.core.errors import CoreError
from issuer.core.leaf import leaf_hash
from issuer.core.multiproof import process_multiproof
from issuer.core.sealed import DeliveryPayload
from issuer.core.serial import format_serial

__all__ = ["CHECKS", "CardCheck", "DeliveryReport", "check_delivery"]

#: The checks of every card, in the order they are shown.
CHECKS = ("in_root", "opens", "product", "in_order", "unique_code", "not_revoked", "not_redeemed")


@dataclass(frozen=True)
class CardCheck:
    index: int
    serial: str
    results: dict[str, bool]

    @property
    def ok(self) -> bool:
        return all(self.results.values())

    @property
    def failed(self) -> list[str]:
        return [k for k in CHECKS if not self.results.get(k, False)]

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "serial": self.serial, "ok": self.ok, "checks": dict(self.results),
                "failed": self.failed}


@dataclass(frozen=True)
class DeliveryReport:
    order_id: int
    batch_id: str
    root: str
    cards: list[CardCheck]
    missing: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.problems and all(c.ok for c in self.cards)

    @property
    def failed_cards(self) -> list[CardCheck]:
        return [c for c in self.cards if not c.ok]

    def to_json(self) -> dict[str, Any]:
        return {"order_id": str(self.order_id), "batch_id": self.batch_id, "root": self.root, "ok": self.ok,
                "cards": len(self.cards), "passed": sum(c.ok for c in self.cards),
                "failed": [c.to_json() for c in self.failed_cards], "missing": self.missing,
                "problems": self.problems}


def _bits(read_word: Any, batch_id: bytes, indices: list[int]) -> dict[int, bool]:
    words: dict[int, int] = {}
    out = {}
    for i in indices:
        w = i >> 8
        if w not in words:
            words[w] = read_word(batch_id, w)
        out[i] = bool(words[w] >> (i & 0xFF) & 1)
    return out


def check_delivery(payload: DeliveryPayload, *, order: Any, ranges: list[Any], escrow_address: str, chain_id: int,
                   registry: Any, min_expiry: int = 0) -> DeliveryReport:
    """The card-by-card report of an opened delivery of ``order`` (a :class:`chain.escrow.Order`, with the escrow's
    delivered ``ranges``), checked against ``registry`` (a :class:`chain.registry.Registry`) now."""
    problems: list[str] = []
    if payload.chain_id != chain_id or payload.escrow.lower() != escrow_address.lower() \
            or payload.order_id != order.order_id:
        problems.append(f"the delivery is addressed to order {payload.order_id} of escrow {payload.escrow} on chain "
                        f"{payload.chain_id}, not to this order")
    if payload.batch_id != order.batch_id:
        problems.append(f"the delivery is of batch 0x{payload.batch_id.hex()}, the escrow delivered batch "
                        f"0x{order.batch_id.hex()}")
    batch = registry.batch(order.batch_id)
    product = registry.product(order.product_id)
    delivered = [i for r in ranges for i in range(r.start, r.start + r.length)]
    delivered_set = set(delivered)

    leaves = [c.leaf for c in payload.cards]
    try:
        in_root = process_multiproof([leaf_hash(x) for x in leaves], payload.proof, payload.flags) == batch.root
    except CoreError:
        in_root = False
    if not in_root:
        problems.append("the delivery's multiproof does not reach the root the registry anchored for the batch")

    index_counts = Counter(x.index for x in leaves)
    codes = []
    for c in payload.cards:
        try:
            codes.append(canonical_code(c.code, c.leaf.code_form))
        except CoreError:
            codes.append(None)
    code_counts = Counter(x for x in codes if x is not None)
    indices = [x.index for x in leaves if x.index < batch.card_count]
    revoked = _bits(registry.revoked_word, order.batch_id, indices)
    redeemed = _bits(registry.redeemed_word, order.batch_id, indices)

    cards = []
    for c, code in zip(payload.cards, codes):
        leaf = c.leaf
        is_product = (product is not None and leaf.sku == product.sku and leaf.face_value == product.face_value
                      and leaf.currency == product.currency and leaf.expiry == batch.expiry
                      and (leaf.expiry == 0 or leaf.expiry >= min_expiry))
        results = {
            "in_root": in_root and leaf.batch_id == order.batch_id,
            "opens": code is not None and c.opens(),
            "product": is_product,
            "in_order": leaf.index in delivered_set and index_counts[leaf.index] == 1,
            "unique_code": code is not None and code_counts[code] == 1,
            "not_revoked": not revoked.get(leaf.index, True),
            "not_redeemed": not redeemed.get(leaf.index, True),
        }
        cards.append(CardCheck(leaf.index, format_serial(leaf.serial), results))
    missing = sorted(delivered_set - set(index_counts))
    return DeliveryReport(order.order_id, "0x" + order.batch_id.hex(), "0x" + batch.root.hex(), cards, missing,
                          problems)
