"""The supplier's stock, per registry product: cards of its anchored batches not yet given to anyone.

A card is available when its batch is anchored (in the database and on chain) and not revoked, and the card is

* not revoked nor redeemed in the database,
* not delivered in the escrow (``deliveredWord`` on chain, read once per 256-card word, cached ``word_ttl``
  seconds: the reservations below cover every delivery this database made, the chain covers the rest),
* not reserved for another order: by its sealed delivery (``sealed_deliveries``, any escrow) or by the pick of a
  ``node_orders`` row that is not closed.

:func:`Stock.pick` chooses the cards of one order: all from ONE batch (the escrow delivers from one batch), at most
``MAX_RANGES`` ranges, from the earliest-expiring eligible batch (no expiry last), contiguous runs first; ``None``
when no single batch can fill it (never a partial delivery). The caller holds :func:`pick_guard` from the pick to
the commit of its reservation, so two workers or two processes never reserve the same card.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.orm import Session

from issuer.storage.models import Batch, Card, NodeOrder, SealedDelivery

#: The escrow's MAX_RANGES (ranges of one delivery).
MAX_RANGES = 64
#: pg_advisory_xact_lock key of the node's picks ("cpnodepk").
PG_PICK_LOCK = int.from_bytes(b"cpnodepk", "big") & 0x7FFF_FFFF_FFFF_FFFF
_PROCESS_PICK_LOCK = threading.Lock()


@dataclass(frozen=True)
class BatchInfo:
    pk: int
    batch_id: str  # 0x + 64 hex
    product_id: int
    sku: str
    face_value: int
    currency: str
    expiry: int  # 0: none
    card_count: int

    @property
    def batch_bytes(self) -> bytes:
        return bytes.fromhex(self.batch_id[2:])


@dataclass(frozen=True)
class Pick:
    batch_id: bytes
    ranges: list[tuple[int, int]]

    @property
    def quantity(self) -> int:
        return sum(n for _, n in self.ranges)

    def ranges_text(self) -> str:
        return ranges_text(self.ranges)

    def __iter__(self) -> Iterator[Any]:  # (batch_id, ranges) = pick
        return iter((self.batch_id, self.ranges))


def ranges_text(ranges: Sequence[tuple[int, int]]) -> str:
    """The JSON text sealed_deliveries uses (``issuer.delivery_seal._ranges_text``)."""
    return json.dumps([[int(s), int(n)] for s, n in ranges])


def parse_ranges(text: str | None) -> list[tuple[int, int]]:
    return [(int(s), int(n)) for s, n in json.loads(text)] if text else []


def reserved_ranges(session: Session, batch_id: str, *, order: tuple[str, str] | None = None
                    ) -> Iterator[tuple[int, int]]:
    """The card ranges of batch ``batch_id`` (0x + 64 hex) reserved for an order (but ``order``, an (escrow, order
    id) pair): by a sealed delivery (any escrow), or by the pick of a ``node_orders`` row that is not closed."""
    for escrow, oid, text in session.execute(select(SealedDelivery.escrow, SealedDelivery.order_id,
                                                    SealedDelivery.ranges)
                                             .where(SealedDelivery.batch_id == batch_id)):
        if order is None or (escrow, oid) != order:
            yield from parse_ranges(text)
    for escrow, oid, text in session.execute(select(NodeOrder.escrow, NodeOrder.order_id, NodeOrder.ranges)
                                             .where(NodeOrder.batch_id == batch_id, NodeOrder.ranges.is_not(None),
                                                    NodeOrder.state != "closed")):
        if order is None or (escrow, oid) != order:
            yield from parse_ranges(text)


@contextmanager
def pick_guard(session: Session) -> Iterator[None]:
    """Serialize picks: a process-wide lock and a database-level one for the rest of ``session``'s transaction
    (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: ``pg_advisory_xact_lock``). The caller commits inside."""
    with _PROCESS_PICK_LOCK:
        conn = session.connection()
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_PICK_LOCK})
        try:
            yield
        except BaseException:
            session.rollback()
            raise


def runs(free: bytearray) -> list[tuple[int, int]]:
    """The runs (start, length) of zero bytes of ``free``."""
    out: list[tuple[int, int]] = []
    pos, n = 0, len(free)
    while pos < n:
        start = free.find(0, pos)
        if start < 0:
            break
        stop = free.find(1, start)
        stop = n if stop < 0 else stop
        out.append((start, stop - start))
        pos = stop
    return out


def choose(available: list[tuple[int, int]], quantity: int, max_ranges: int = MAX_RANGES
           ) -> list[tuple[int, int]] | None:
    """Ranges of ``quantity`` cards from the runs ``available``: the first run that holds them all; else the
    runs in order; else the longest runs first (at most ``max_ranges``); None when they cannot."""
    if quantity <= 0 or sum(n for _, n in available) < quantity:
        return None
    for start, length in available:
        if length >= quantity:
            return [(start, quantity)]
    for order in (available, sorted(available, key=lambda r: (-r[1], r[0]))):
        out, need = [], quantity
        for start, length in order:
            take = min(length, need)
            out.append((start, take))
            need -= take
            if need == 0 or len(out) == max_ranges:
                break
        if need == 0:
            return sorted(out)
    return None


class Stock:
    """The stock of one supplier (``supplier`` address) for deliveries through ``escrow``."""

    def __init__(self, escrow: Any, registry: Any, supplier: str, *, word_ttl: float = 2.0) -> None:
        self.escrow = escrow
        self.registry = registry
        self.supplier = supplier
        self.word_ttl = word_ttl
        self._onchain: dict[str, tuple[int, int, int]] = {}  # batch id -> (product id, expiry, card count)
        self._words: dict[str, tuple[float, list[int]]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ batches

    def _chain_batch(self, batch_id: str) -> tuple[int, int, int] | None:
        with self._lock:
            known = self._onchain.get(batch_id)
        if known is not None:
            return known
        b = self.registry.batch(bytes.fromhex(batch_id[2:]))
        if not b.anchored or b.revoked:
            return None
        info = (int(b.product_id), int(b.expiry), int(b.card_count))
        with self._lock:
            self._onchain[batch_id] = info
        return info

    def batches(self, session: Session, product_id: int | None = None) -> list[BatchInfo]:
        """The supplier's anchored, unrevoked batches (of ``product_id``), earliest expiry first (none last)."""
        rows = session.execute(
            select(Batch.id, Batch.batch_id, Batch.sku, Batch.face_value, Batch.currency, Batch.expiry,
                   Batch.card_count)
            .where(Batch.state == "anchored", Batch.revoked.is_(False),
                   sa.func.lower(Batch.issuer_address) == self.supplier.lower())
            .order_by(Batch.id)).all()
        out = []
        for pk, bid, sku, face, currency, expiry, count in rows:
            chain = self._chain_batch(bid)
            if chain is None or (product_id is not None and chain[0] != product_id):
                continue
            out.append(BatchInfo(pk, bid, chain[0], sku, int(face), currency, int(expiry or chain[1] or 0),
                                 min(int(count), chain[2])))
        return sorted(out, key=lambda b: (b.expiry == 0, b.expiry, b.pk))

    # ------------------------------------------------------------------ cards

    def delivered_words(self, batch: BatchInfo) -> list[int]:
        now = time.monotonic()
        with self._lock:
            cached = self._words.get(batch.batch_id)
        if cached is not None and now - cached[0] < self.word_ttl:
            return cached[1]
        words = [self.escrow.delivered_word(batch.batch_bytes, w) for w in range((batch.card_count + 255) // 256)]
        with self._lock:
            self._words[batch.batch_id] = (now, words)
        return words

    def forget_words(self, batch_id: str | None = None) -> None:
        with self._lock:
            if batch_id is None:
                self._words.clear()
            else:
                self._words.pop(batch_id, None)

    def taken(self, session: Session, batch: BatchInfo, *, order: tuple[str, str] | None = None) -> bytearray:
        """One byte per card of ``batch``: 1 when it is not available (to anyone but ``order``, an
        (escrow, order id) pair)."""
        taken = bytearray(batch.card_count)
        n = batch.card_count

        def mark(start: int, length: int) -> None:
            start, stop = max(0, start), min(n, start + length)
            if stop > start:
                taken[start:stop] = b"\x01" * (stop - start)

        for (index,) in session.execute(select(Card.index).where(
                Card.batch_pk == batch.pk, sa.or_(Card.revoked.is_(True), Card.redeemed_at.is_not(None)))):
            if 0 <= index < n:
                taken[index] = 1
        for w, word in enumerate(self.delivered_words(batch)):
            if word == 0:
                continue
            if word == (1 << 256) - 1:
                mark(w * 256, 256)
                continue
            for bit in range(256):
                if word >> bit & 1 and w * 256 + bit < n:
                    taken[w * 256 + bit] = 1
        for s, length in reserved_ranges(session, batch.batch_id, order=order):
            mark(s, length)
        return taken

    def available(self, session: Session, batch: BatchInfo, *, order: tuple[str, str] | None = None) -> int:
        return batch.card_count - sum(self.taken(session, batch, order=order))

    # ------------------------------------------------------------------ picking

    def pick(self, session: Session, product: int, min_expiry: int, quantity: int, *,
             order: tuple[str, str] | None = None, now: int | None = None,
             taken: dict[str, bytearray] | None = None, batches: list[BatchInfo] | None = None) -> Pick | None:
        """``quantity`` available cards of product ``product`` (registry id) valid until at least ``min_expiry``,
        from one batch; None when no single batch can fill the order.

        Several picks in one transaction (:meth:`Fulfiller.pick_many`) share ``taken`` (batch id -> the
        :meth:`taken` bytes, computed once, the cards picked here marked in it) and ``batches``; ``order`` must then
        be None (the orders picked that way have no reservation of their own yet)."""
        now = int(time.time()) if now is None else now
        for batch in (self.batches(session, product) if batches is None else
                      [b for b in batches if b.product_id == product]):
            if batch.expiry and (batch.expiry < min_expiry or batch.expiry <= now):
                continue
            if batch.card_count < quantity:
                continue
            if taken is None:
                used = self.taken(session, batch, order=order)
            else:
                used = taken.get(batch.batch_id)
                if used is None:
                    used = taken[batch.batch_id] = self.taken(session, batch, order=order)
            ranges = choose(runs(used), quantity)
            if ranges is not None:
                for start, length in ranges:
                    used[start:start + length] = b"\x01" * length
                return Pick(batch.batch_bytes, ranges)
        return None

    def stock_levels(self, session: Session, product: int | None = None, *, now: int | None = None
                     ) -> dict[int, dict[str, Any]]:
        """Per product id: its key (sku, face value, currency), the available cards, and the batches holding
        them (expired batches count for nothing)."""
        now = int(time.time()) if now is None else now
        out: dict[int, dict[str, Any]] = {}
        for batch in self.batches(session, product):
            level = out.setdefault(batch.product_id, {
                "product_id": batch.product_id, "sku": batch.sku, "face_value": batch.face_value,
                "currency": batch.currency, "available": 0, "batches": []})
            free = 0 if batch.expiry and batch.expiry <= now else self.available(session, batch)
            level["available"] += free
            level["batches"].append({"batch_id": batch.batch_id, "expiry": batch.expiry or None,
                                     "available": free})
        return out
