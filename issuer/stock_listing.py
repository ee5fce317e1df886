"""The supplier's stock, card by card: how many cards of each batch and product are available, reserved for an
order, delivered, redeemed, revoked or expired (``cardproof stock``; the ERP API's ``/v1/erp/stock`` counts its
available cards with :func:`card_counts` too).

Every card is counted once, in the first state that holds for it, in this order:

* ``revoked``   – revoked in the database (or its whole batch is);
* ``redeemed``  – redeemed in the database;
* ``delivered`` – delivered in the escrow (``deliveredWord`` on chain; known only when an escrow is read);
* ``reserved``  – reserved for an order not yet delivered: a sealed delivery or a node pick
  (:func:`issuer.node.stock.reserved_ranges`, what the node's picker honours);
* ``expired``   – of a batch whose expiry has passed;
* ``available`` – what the node (or ``order deliver --auto``) may still give.

Without an escrow (``stock`` None) a delivered card is counted as reserved: its sealed delivery is in the database.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.orm import Session

from issuer.node.stock import BatchInfo, Stock, reserved_ranges
from issuer.storage.models import Batch, Card

__all__ = ["STATES", "BatchStock", "ProductStock", "card_counts", "stock_listing"]

#: The states a card is counted in, in order of precedence (the last one: what can still be sold).
STATES = ("revoked", "redeemed", "delivered", "reserved", "expired", "available")
_CODE = {name: i + 1 for i, name in enumerate(STATES[:-1])}  # 0: available


def card_counts(session: Session, batch_pk: int, batch_id: str, card_count: int, *,
                delivered_words: list[int] | None = None, batch_revoked: bool = False,
                expired: bool = False) -> dict[str, int]:
    """The cards of one batch per state (:data:`STATES`); the counts add up to ``card_count``."""
    state = bytearray(card_count)
    n = card_count

    def mark(start: int, length: int, code: int) -> None:
        """Cards start .. start + length - 1 not counted yet are in state ``code`` (marked in precedence order)."""
        start, stop = max(0, start), min(n, start + length)
        if stop > start:
            state[start:stop] = state[start:stop].replace(b"\x00", bytes((code,)))

    if batch_revoked:
        return {**dict.fromkeys(STATES, 0), "revoked": n}
    for index, revoked in session.execute(select(Card.index, Card.revoked).where(
            Card.batch_pk == batch_pk, sa.or_(Card.revoked.is_(True), Card.redeemed_at.is_not(None)))):
        if 0 <= index < n:
            state[index] = _CODE["revoked"] if revoked else _CODE["redeemed"]
    for w, word in enumerate(delivered_words or []):
        if word == (1 << 256) - 1:
            mark(w * 256, 256, _CODE["delivered"])
            continue
        while word:
            low = word & -word
            mark(w * 256 + low.bit_length() - 1, 1, _CODE["delivered"])
            word ^= low
    for start, length in reserved_ranges(session, batch_id):
        mark(start, length, _CODE["reserved"])
    counts = {name: state.count(code) for name, code in _CODE.items()}
    if expired:
        counts["expired"] = state.count(0)
        counts["available"] = 0
    else:
        counts["available"] = state.count(0)
    return {name: counts[name] for name in STATES}


@dataclass
class BatchStock:
    batch_id: str
    product_id: int | None
    expiry: int | None
    cards: int
    counts: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {"batch_id": self.batch_id, "product_id": self.product_id, "expiry": self.expiry,
                "cards": self.cards, **self.counts}


@dataclass
class ProductStock:
    sku: str
    face_value: int
    currency: str
    product_id: int | None
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATES, 0))
    batches: list[BatchStock] = field(default_factory=list)

    @property
    def cards(self) -> int:
        return sum(b.cards for b in self.batches)

    @property
    def face_value_text(self) -> str:
        """The face value in the currency's major unit ("25.00")."""
        from issuer.products import format_face_value

        try:
            return format_face_value(self.face_value, self.currency)
        except Exception:  # noqa: BLE001 - a currency babel does not know: minor units
            return str(self.face_value)

    def to_json(self) -> dict[str, Any]:
        return {"sku": self.sku, "face_value": self.face_value_text, "face_value_minor": self.face_value,
                "currency": self.currency, "product_id": self.product_id, "cards": self.cards, **self.counts,
                "batches": [b.to_json() for b in self.batches]}


def _revoked_on_chain(stock: Stock, batch_id: str) -> bool:
    return bool(stock.registry.batch(bytes.fromhex(batch_id[2:])).revoked)


def stock_listing(session: Session, supplier: str, stock: Stock | None = None, *,
                  now: int | None = None) -> list[ProductStock]:
    """The supplier's anchored batches, per product (SKU, face value, currency), each card counted in one state.
    With ``stock`` (an escrow and the registry read through :class:`issuer.node.stock.Stock`) the chain says which
    batches are live, their product ids, and which cards are delivered."""
    now = int(time.time()) if now is None else now
    live: dict[str, BatchInfo] = {b.batch_id: b for b in stock.batches(session)} if stock is not None else {}
    products: dict[tuple[str, int, str], ProductStock] = {}
    for row in session.scalars(select(Batch).where(sa.func.lower(Batch.issuer_address) == supplier.lower(),
                                                   Batch.state == "anchored").order_by(Batch.id)):
        info = live.get(row.batch_id)
        if stock is not None and info is None and not row.revoked and not _revoked_on_chain(stock, row.batch_id):
            continue  # not anchored on this chain
        revoked = bool(row.revoked) or (stock is not None and info is None)
        expiry = int(row.expiry or (info.expiry if info else 0) or 0) or None
        counts = card_counts(session, row.id, row.batch_id, int(row.card_count),
                             delivered_words=stock.delivered_words(info) if info is not None else None,
                             batch_revoked=revoked, expired=bool(expiry and expiry <= now))
        key = (row.sku, int(row.face_value), row.currency)
        product = products.get(key)
        if product is None:
            product = products[key] = ProductStock(row.sku, int(row.face_value), row.currency,
                                                   info.product_id if info else None)
        elif product.product_id is None and info is not None:
            product.product_id = info.product_id
        product.batches.append(BatchStock(row.batch_id, info.product_id if info else None, expiry,
                                          int(row.card_count), counts))
        for name, value in counts.items():
            product.counts[name] += value
    return sorted(products.values(), key=lambda p: (p.sku, p.currency, p.face_value))
