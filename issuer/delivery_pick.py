"""The cards of a manual delivery (``cardproof order deliver --serials ... | --auto``), chosen and reserved the way
the supplier's node does it (``issuer.node.stock``), so that a manual delivery and the node never give a card twice.

* By serials: each serial (normalized as everywhere, ``issuer.core.serial``) is mapped to its (batch, index) in the
  supplier's database, never through an exported ``cards.csv``. The escrow takes one batch per delivery and one
  delivery per order, so serials of two batches are refused, as are unknown serials, a serial given twice, and
  cards that are not available (revoked, redeemed, delivered on chain, reserved for another order).
* ``--auto``: :meth:`issuer.node.stock.Stock.pick`, the node's own picker (one batch, earliest expiry first).

:func:`reserve_delivery` chooses under :func:`issuer.node.stock.pick_guard` and seals the delivery in the same
transaction: the stored sealed delivery (``sealed_deliveries``) is the reservation the node honours. A rerun (or an
order the node already picked) reuses the cards chosen before. Nothing is sent here; ``deliver_sealed`` sends.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from issuer.core.errors import InvalidSerial
from issuer.core.serial import format_serial, parse_serial
from issuer.errors import IssuerError
from issuer.node.stock import MAX_RANGES, BatchInfo, Stock, parse_ranges, pick_guard
from issuer.storage.models import Batch, Card, NodeOrder, SealedDelivery

__all__ = ["PickRefused", "Selection", "SerialListError", "cards_of_serials", "index_runs", "read_serials",
           "reserve_delivery"]

#: Most serials one command takes (an order of more cards is delivered by --range or --auto).
MAX_SERIALS = 100_000


class SerialListError(IssuerError, ValueError):
    """The serials given are unreadable: a malformed serial, a serial twice, an unreadable file, none at all."""

    code = "invalid_serials"


class PickRefused(IssuerError, ValueError):
    """These cards cannot be delivered to this order (unknown, of two batches, not available); nothing was sent."""

    code = "pick_refused"
    http_status = 409


@dataclass(frozen=True)
class Selection:
    """The cards of one delivery: ``ranges`` of ``batch_id``; ``reused``: chosen earlier (a rerun, the node)."""

    batch_id: bytes
    ranges: list[tuple[int, int]]
    reused: bool = False

    @property
    def quantity(self) -> int:
        return sum(n for _, n in self.ranges)


# ------------------------------------------------------------------------------------------- serials


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]


def read_serials(listed: Iterable[str] = (), path: Path | None = None) -> list[str]:
    """Serials as given: comma-separated lists (``--serials``) and a file (``--serials-from``: one or more per
    line, ``#`` comments; or a CSV with a ``serial`` column, like an export's ``cards.csv``). Not yet checked."""
    out = [s for text in listed for s in _split(text)]
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise SerialListError(f"--serials-from: cannot read {str(path)!r} ({type(exc).__name__})") from None
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        header = [h.strip().lower() for h in lines[0].split(",")] if lines else []
        if "serial" in header:
            out.extend(row[header.index("serial")].strip() for row in csv.reader(io.StringIO("\n".join(lines[1:])))
                       if len(row) > header.index("serial") and row[header.index("serial")].strip())
        else:
            out.extend(s for ln in lines for s in _split(ln))
    if not out:
        raise SerialListError("no serial given (--serials S1,S2,... or --serials-from FILE)")
    if len(out) > MAX_SERIALS:
        raise SerialListError(f"{len(out)} serials given; at most {MAX_SERIALS} per delivery")
    return out


def _normalized(serials: Sequence[str]) -> list[str]:
    """The stored form of each serial (16 symbols and the check symbol, no dashes); a malformed or repeated
    serial is an error naming it."""
    seen: dict[str, int] = {}
    for pos, text in enumerate(serials, 1):
        try:
            key = format_serial(parse_serial(text)).replace("-", "")
        except InvalidSerial as exc:  # the text is not echoed: a file of codes given by mistake must not leak one
            raise SerialListError(f"serial #{pos} of those given is not a serial: {exc}") from None
        if key in seen:
            raise SerialListError(f"serial {format_serial(parse_serial(text))} is given twice (#{seen[key]} and "
                                  f"#{pos})")
        seen[key] = pos
    return list(seen)


def cards_of_serials(session: Session, serials: Sequence[str], supplier: str) -> tuple[Batch, list[int]]:
    """The batch and the card indices of ``serials`` (all of one batch of ``supplier``), in the order given."""
    keys = _normalized(serials)
    found: dict[str, tuple[int, int]] = {}
    for i in range(0, len(keys), 500):
        for serial, batch_pk, index in session.execute(select(Card.serial, Card.batch_pk, Card.index)
                                                       .where(Card.serial.in_(keys[i:i + 500]))):
            found[serial] = (batch_pk, index)
    missing = [k for k in keys if k not in found]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise PickRefused(f"no card with serial {format_serial(parse_serial(missing[0]))} in the supplier's "
                          f"database{more}; nothing was sent")
    per_batch: dict[int, int] = {}
    for batch_pk, _ in found.values():
        per_batch[batch_pk] = per_batch.get(batch_pk, 0) + 1
    batches = {b.id: b for b in session.scalars(select(Batch).where(Batch.id.in_(list(per_batch))))}
    if len(per_batch) > 1:
        listed = ", ".join(f"{batches[pk].batch_id}: {n}" for pk, n in sorted(per_batch.items()))
        raise PickRefused(f"the serials are cards of {len(per_batch)} batches ({listed}); an escrow delivery takes "
                          "cards of one batch: deliver an order from one batch; nothing was sent")
    batch = batches[next(iter(per_batch))]
    if batch.issuer_address.lower() != supplier.lower():
        raise PickRefused(f"the cards are of batch {batch.batch_id} of issuer {batch.issuer_address}, not of the "
                          f"supplier {supplier}; nothing was sent")
    return batch, [found[k][1] for k in keys]


def index_runs(indices: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted card indices as ranges (start, length) of consecutive cards."""
    out: list[tuple[int, int]] = []
    for i in sorted(set(indices)):
        if out and out[-1][0] + out[-1][1] == i:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((i, 1))
    return out


# ------------------------------------------------------------------------------------------- reserving


def _stored(session: Session, chain_id: int, escrow: str, order_id: int) -> SealedDelivery | None:
    return session.scalars(select(SealedDelivery).where(
        SealedDelivery.chain_id == chain_id, SealedDelivery.escrow == escrow,
        SealedDelivery.order_id == str(order_id))).one_or_none()


def _node_pick(session: Session, chain_id: int, escrow: str, order_id: int) -> NodeOrder | None:
    """The node's pick for the order, if it made one it may still deliver."""
    return session.scalars(select(NodeOrder).where(
        NodeOrder.chain_id == chain_id, NodeOrder.escrow == escrow, NodeOrder.order_id == str(order_id),
        NodeOrder.ranges.is_not(None), NodeOrder.state != "closed")).one_or_none()


def _unavailable(session: Session, stock: Stock, batch: BatchInfo, indices: list[int], key: tuple[str, str]
                 ) -> str | None:
    """Why one of ``indices`` cannot go to the order ``key`` (None: all can)."""
    taken = stock.taken(session, batch, order=key)
    bad = [i for i in indices if i >= batch.card_count or taken[i]]
    if not bad:
        return None
    card = session.scalars(select(Card).where(Card.batch_pk == batch.pk, Card.index == bad[0])).one_or_none()
    serial = format_serial(parse_serial(card.serial)) if card is not None else f"#{bad[0]}"
    why = ("revoked" if card is not None and card.revoked else
           "redeemed" if card is not None and card.redeemed_at is not None else
           "delivered or reserved for another order")
    more = f" (and {len(bad) - 1} more card(s) not available)" if len(bad) > 1 else ""
    return f"card {serial} (index {bad[0]} of batch {batch.batch_id}) is {why}{more}"


def _check_batch(stock: Stock, session: Session, batch: Batch, order: Any, order_id: int, min_expiry: int,
                 now: int) -> BatchInfo:
    info = next((b for b in stock.batches(session) if b.batch_id == batch.batch_id), None)
    if info is None:
        raise PickRefused(f"batch {batch.batch_id} is not anchored (or is revoked); nothing was sent")
    if info.product_id != order.product_id:
        raise PickRefused(f"order {order_id} is for product {order.product_id}; batch {batch.batch_id} holds "
                          f"product {info.product_id} ({info.sku}); nothing was sent")
    if info.expiry and info.expiry <= now:
        raise PickRefused(f"the cards of batch {batch.batch_id} expired; nothing was sent")
    if info.expiry and info.expiry < min_expiry:
        raise PickRefused(f"order {order_id} wants cards valid until at least {min_expiry}; the cards of batch "
                          f"{batch.batch_id} expire at {info.expiry}; nothing was sent")
    return info


def reserve_delivery(sessions: sessionmaker[Session], master_key: Any, escrow: Any, registry: Any, order_id: int,
                     *, serials: Sequence[str] | None = None, auto: bool = False,
                     now: int | None = None) -> Selection:
    """Choose the cards of order ``order_id`` (by ``serials``, or ``auto`` from stock), reserve them and seal them
    to the buyer (stored, not sent); a rerun returns the cards chosen before. Raises :class:`PickRefused` (or
    ``DeliveryRefused``) with nothing sent and nothing reserved."""
    import time

    from chain.escrow import OrderStatus
    from issuer.delivery_seal import DeliveryRefused, _delivery_in_flight, seal_order_delivery

    if (serials is None) == (not auto):
        raise PickRefused("give the cards by serials or pick them automatically, one of the two")
    now = int(time.time()) if now is None else now
    order = escrow.order(order_id)
    if order.status == OrderStatus.NONE:
        raise DeliveryRefused(f"there is no order {order_id} in the escrow")
    supplier = escrow.client.address
    if order.supplier.lower() != supplier.lower():
        raise PickRefused(f"order {order_id} is to supplier {order.supplier}, not to {supplier}")
    opened = escrow.opened_event(order_id)
    if opened is None:
        raise DeliveryRefused(f"no OrderOpened event of order {order_id} was found (is the node pruned?)")
    chain_id, key = escrow.client.chain_id, (escrow.address, str(order_id))
    min_expiry = int(opened.get("minExpiry", 0))
    stock = Stock(escrow, registry, supplier, word_ttl=0.0)
    funded = order.status == OrderStatus.FUNDED
    with sessions() as session, pick_guard(session):
        stored = _stored(session, chain_id, escrow.address, order_id)
        earlier = None if stored is None else ("0x" + bytes.fromhex(stored.batch_id[2:]).hex(),
                                               parse_ranges(stored.ranges))
        node = _node_pick(session, chain_id, escrow.address, order_id)
        node_pick = None if node is None else (node.batch_id, parse_ranges(node.ranges))
        wanted: tuple[str, list[tuple[int, int]]] | None = None
        if serials is not None:
            batch, indices = cards_of_serials(session, serials, supplier)
            wanted = (batch.batch_id, index_runs(indices))
        if not funded:
            if earlier is None or (wanted is not None and wanted != earlier):
                raise DeliveryRefused(f"order {order_id} is {order.status.name.lower()}, not waiting for a delivery")
            session.rollback()
            return Selection(bytes.fromhex(earlier[0][2:]), earlier[1], reused=True)
        if wanted is None:  # --auto: what was chosen before, else the node's picker
            wanted = earlier or node_pick
            if wanted is None:
                got = stock.pick(session, order.product_id, min_expiry, order.quantity, order=key, now=now)
                if got is None:
                    raise PickRefused(f"no single batch holds {order.quantity} available cards of product "
                                      f"{order.product_id} valid long enough for order {order_id}; nothing was sent")
                wanted = ("0x" + got.batch_id.hex(), got.ranges)
        else:
            if node_pick is not None and node_pick != wanted:
                picked = " ".join(f"{s}:{n}" for s, n in node_pick[1])
                raise PickRefused(f"the supplier's node already picked other cards for order {order_id} (batch "
                                  f"{node_pick[0]}, ranges {picked}) and delivers them; nothing was sent")
            info = _check_batch(stock, session, batch, order, order_id, min_expiry, now)
            if len(indices) != order.quantity:
                raise PickRefused(f"order {order_id} is for {order.quantity} cards; {len(indices)} serials given; "
                                  "nothing was sent")
            if len(wanted[1]) > MAX_RANGES:
                raise PickRefused(f"these cards make {len(wanted[1])} ranges of consecutive cards; a delivery takes "
                                  f"at most {MAX_RANGES}; nothing was sent")
            why = _unavailable(session, stock, info, indices, key)
            if why is not None:
                raise PickRefused(f"{why}; nothing was sent")
        if wanted == earlier:
            session.rollback()
            return Selection(bytes.fromhex(wanted[0][2:]), wanted[1], reused=True)
        replace = earlier is not None and not _delivery_in_flight(sessions, escrow.address, order_id)
        # Sealed in the guarded transaction: the stored sealed delivery is the reservation, committed with the pick.
        joined = sessionmaker(bind=session.connection(), expire_on_commit=False)
        seal_order_delivery(joined, master_key, chain_id=chain_id, escrow=escrow.address, order_id=order_id,
                            batch_id=bytes.fromhex(wanted[0][2:]), ranges=wanted[1], seal_key=bytes(opened["sealKey"]),
                            replace=replace)
        session.commit()
    return Selection(bytes.fromhex(wanted[0][2:]), wanted[1], reused=wanted == node_pick)
