"""The issuer's acts on cards it sold in escrow orders: revocations and redemptions, from the indexed events.

The issuer runs redemption, so it can mark a sold card redeemed or revoke it at any time. This module makes
every such act visible, from the ``chain_events`` rows the indexer (verify_api/indexer.py) stores for the
CardRegistry (``CardsRevoked``, ``BatchRevoked``, ``CardsRedeemed``) and the CardEscrow (``OrderDelivered``
and the settlements ``OrderConfirmed`` / ``OrderReleased`` / ``OrderResolved``):

* :func:`order_acts` – the acts touching one order's delivered cards, for its timeline;
* :func:`track_record` – per issuer, the cards delivered in escrow orders and then revoked or marked redeemed,
  split by phase.

An act on a delivered card happened

* ``while_order_open`` – after the delivery and before the order settled (the buyer has not confirmed, no
  release, no ruling): a revocation is refunded at settlement; a redemption now is suspicious (the buyer had
  not accepted the cards yet and the escrow pays the supplier for redeemed cards);
* ``after_sale`` – after the settlement: a redemption is the card's normal use (by the buyer or whoever it
  was given to); a revocation is a refund risk (the supplier was paid already).

Events are read by name and by the fields ``orderId``, ``batchId``, ``ranges``, ``wordIndex``, ``mask``,
``reason`` and ``by`` only, so that new parameters of the contracts' functions do not matter here.
A card is ``wordIndex * 256 + bit`` of an event's ``mask``; a batch's issuer is the first 20 bytes of its id
(the registry only lets an issuer anchor ids it owns, and the escrow only takes deliveries from the batch's
issuer).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

__all__ = [
    "ACT_EVENTS",
    "AFTER_SALE",
    "REASONS",
    "SETTLEMENT_EVENTS",
    "WHILE_ORDER_OPEN",
    "Act",
    "Delivery",
    "order_acts",
    "parse_ranges",
    "track_record",
    "word_bits",
]

REGISTRY = "CardRegistry"
ESCROW = "CardEscrow"
#: Registry events that act on cards: event name -> timeline step.
ACT_EVENTS: dict[str, str] = {"CardsRevoked": "revoked", "BatchRevoked": "revoked", "CardsRedeemed": "redeemed"}
#: Escrow events that settle a delivered order.
SETTLEMENT_EVENTS = ("OrderConfirmed", "OrderReleased", "OrderResolved")
WHILE_ORDER_OPEN = "while_order_open"
AFTER_SALE = "after_sale"
BEFORE_DELIVERY = "before_delivery"
#: Revocation reason codes (issuer/revocation.py ``RevokeReason``) by name.
REASONS = {0: "unspecified", 1: "leaked", 2: "fraud", 3: "recalled", 4: "damaged"}

_WORD = (1 << 256) - 1
_CHUNK = 500

Position = tuple[int, int]  # (block number, log index): the chain's order of events


def parse_ranges(raw: Iterable[Any]) -> list[tuple[int, int]]:
    """``ranges`` of an OrderDelivered event (objects ``{"start", "length"}`` or pairs) as (start, length)."""
    out = []
    for r in raw or ():
        start, length = (r["start"], r["length"]) if isinstance(r, dict) else (r[0], r[1])
        out.append((int(start), int(length)))
    return out


def word_bits(ranges: Sequence[tuple[int, int]], word: int) -> int:
    """The cards of `ranges` that lie in bitmap word `word`, as a 256-bit mask (bit i = card word*256 + i)."""
    lo_word, bits = word * 256, 0
    for start, length in ranges:
        lo, hi = max(start, lo_word), min(start + length, lo_word + 256)
        if lo < hi:
            bits |= ((1 << (hi - lo)) - 1) << (lo - lo_word)
    return bits


@dataclass(frozen=True)
class Act:
    """One registry event acting on cards, from its ``chain_events`` row."""

    row: Any
    kind: str  # "revoked" | "redeemed"
    word: int | None  # None: the whole batch (BatchRevoked)
    mask: int
    args: dict[str, Any]

    @classmethod
    def of(cls, row: Any) -> Act:
        args = json.loads(row.args)
        whole = row.event == "BatchRevoked"
        return cls(row, ACT_EVENTS[row.event], None if whole else int(args["wordIndex"]),
                   0 if whole else int(args["mask"]) & _WORD, args)

    @property
    def position(self) -> Position:
        return (int(self.row.block_number), int(self.row.log_index))


@dataclass
class Delivery:
    """The cards an order received (one OrderDelivered) and when it settled; tallies the acts on them."""

    escrow: str
    order_id: int
    batch_id: str
    ranges: list[tuple[int, int]]
    delivered: Position
    settled: Position | None = None
    #: Cards already counted, per kind: bitmap word -> mask, and whether the whole batch was revoked.
    _seen: dict[str, dict[int, int]] = field(default_factory=lambda: {"revoked": {}, "redeemed": {}})
    _batch_revoked: bool = False

    @classmethod
    def of(cls, row: Any) -> Delivery:
        args = json.loads(row.args)
        return cls(row.address, int(args["orderId"]), (args.get("batchId") or row.batch_id or "").lower(),
                   parse_ranges(args.get("ranges", [])), (int(row.block_number), int(row.log_index)))

    @property
    def cards(self) -> int:
        return sum(length for _start, length in self.ranges)

    def phase(self, at: Position) -> str:
        if at < self.delivered:
            return BEFORE_DELIVERY
        if self.settled is None or at < self.settled:
            return WHILE_ORDER_OPEN
        return AFTER_SALE

    def touched(self, act: Act) -> list[int] | None:
        """The order's cards `act` names (card indices); None for a whole-batch act (then: all of them)."""
        if act.word is None:
            return None
        hit = act.mask & word_bits(self.ranges, act.word)
        return [act.word * 256 + i for i in range(256) if hit >> i & 1]

    def count(self, act: Act) -> int:
        """How many of the order's cards `act` names."""
        cards = self.touched(act)
        return self.cards if cards is None else len(cards)

    def tally(self, act: Act) -> int:
        """How many of the order's cards `act` newly made revoked / redeemed (each card counted once per kind;
        acts must come in chain order)."""
        seen = self._seen[act.kind]
        if act.kind == "revoked" and self._batch_revoked:
            return 0
        if act.word is None:
            self._batch_revoked = True
            return self.cards - sum(m.bit_count() for m in seen.values())
        new = act.mask & word_bits(self.ranges, act.word) & ~seen.get(act.word, 0)
        seen[act.word] = seen.get(act.word, 0) | new
        return new.bit_count()


# ------------------------------------------------------------------------------------------ queries


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i:i + _CHUNK]


def _act_rows(session: Any, chain_id: int, batch_ids: Sequence[str], from_block: int = 0) -> list[Act]:
    from verify_api.storage.index_models import ChainEventRow as E

    acts: list[Act] = []
    for part in _chunks(sorted(set(batch_ids))):
        acts.extend(Act.of(r) for r in session.execute(
            sa.select(E).where(E.chain_id == chain_id, E.contract == REGISTRY, E.event.in_(list(ACT_EVENTS)),
                               E.batch_id.in_(list(part)), E.block_number >= from_block)).scalars())
    acts.sort(key=lambda a: a.position)
    return acts


def order_acts(session: Any, chain_id: int, delivered_row: Any, settled_row: Any | None) -> list[dict[str, Any]]:
    """The registry acts on the cards of one order, in chain order: for each, its row (``row``), ``kind``,
    the number of the order's cards it touched (``cards``), their indices (``indices``, None for a whole
    batch), the ``phase`` and the event's ``reason`` (revocations) or ``by`` (redemptions)."""
    d = Delivery.of(delivered_row)
    if settled_row is not None:
        d.settled = (int(settled_row.block_number), int(settled_row.log_index))
    out = []
    for act in _act_rows(session, chain_id, [d.batch_id], d.delivered[0]):
        phase = d.phase(act.position)
        n = d.count(act)
        if phase == BEFORE_DELIVERY or not n:
            continue
        item: dict[str, Any] = {"row": act.row, "kind": act.kind, "cards": n, "indices": d.touched(act),
                                "whole_batch": act.word is None, "phase": phase}
        if act.kind == "revoked":
            reason = act.args.get("reason")
            item["reason"] = None if reason is None else int(reason)
            item["reason_name"] = REASONS.get(item["reason"]) if reason is not None else None
        else:
            item["by"] = act.args.get("by")
        out.append(item)
    return out


def _deliveries(session: Any, chain_id: int, issuer: str) -> list[Delivery]:
    from verify_api.storage.index_models import ChainEventRow as E

    prefix = "0x" + issuer[2:].lower()
    rows = session.execute(sa.select(E).where(
        E.chain_id == chain_id, E.contract == ESCROW, E.event == "OrderDelivered",
        E.batch_id.like(prefix + "%"))).scalars()
    deliveries = [Delivery.of(r) for r in rows]
    by_order = {(d.escrow, d.order_id): d for d in deliveries}
    ids = sorted({d.order_id for d in deliveries})
    settlements = []
    for part in _chunks(ids):
        settlements.extend(session.execute(sa.select(E).where(
            E.chain_id == chain_id, E.contract == ESCROW, E.event.in_(SETTLEMENT_EVENTS),
            E.order_id.in_(list(part)))).scalars())
    if any(d.order_id > 2**63 - 1 for d in deliveries):  # ids beyond BIGINT are stored with order_id NULL
        settlements.extend(session.execute(sa.select(E).where(
            E.chain_id == chain_id, E.contract == ESCROW, E.event.in_(SETTLEMENT_EVENTS),
            E.order_id.is_(None))).scalars())
    for s in settlements:
        d = by_order.get((s.address, int(json.loads(s.args)["orderId"])))
        at = (int(s.block_number), int(s.log_index))
        if d is not None and (d.settled is None or at < d.settled):
            d.settled = at
    return deliveries


def track_record(session: Any, chain_id: int | None, issuer: str) -> dict[str, Any]:
    """The ``track_record`` of GET /v1/issuers/{address}: the issuer's cards delivered in escrow orders and
    then revoked or marked redeemed, while the order was open and after the sale. Counts are None when
    nothing is indexed for the chain."""
    from verify_api.storage.index_models import IndexCursor

    record: dict[str, Any] = {"orders": None, "cards_sold": None, "revoked_in_open_orders": None,
                              "redeemed_in_open_orders": None, "revoked_after_sale": None,
                              "redeemed_after_sale": None, "source": "chain events", "chain_id": chain_id,
                              "indexed_to_block": None}
    cursor = session.get(IndexCursor, chain_id) if chain_id is not None else None
    if cursor is None or int(cursor.block_number) < 0:
        return record
    deliveries = _deliveries(session, chain_id, issuer)
    counts = {(k, p): 0 for k in ("revoked", "redeemed") for p in (WHILE_ORDER_OPEN, AFTER_SALE)}
    by_batch: dict[str, list[Delivery]] = {}
    for d in deliveries:
        by_batch.setdefault(d.batch_id, []).append(d)
    for act in _act_rows(session, chain_id, list(by_batch)):
        for d in by_batch[act.row.batch_id]:
            phase = d.phase(act.position)
            if phase != BEFORE_DELIVERY:
                counts[(act.kind, phase)] += d.tally(act)
    record.update({
        "orders": len({(d.escrow, d.order_id) for d in deliveries}),
        "cards_sold": sum(d.cards for d in deliveries),
        "revoked_in_open_orders": counts[("revoked", WHILE_ORDER_OPEN)],
        "redeemed_in_open_orders": counts[("redeemed", WHILE_ORDER_OPEN)],
        "revoked_after_sale": counts[("revoked", AFTER_SALE)],
        "redeemed_after_sale": counts[("redeemed", AFTER_SALE)],
        "indexed_to_block": int(cursor.block_number)})
    return record
