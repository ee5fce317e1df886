"""Fulfil one escrow order, idempotently: pick (reserve cards), seal and deliver (``deliver_sealed``, a recorded
act), publish the sealed delivery to every configured public service.

Every step is recorded before the next one starts, so a rerun after a crash at any point resumes it:

* ``seen`` / ``out_of_stock``: the pick is made under :func:`issuer.node.stock.pick_guard` and committed with the
  row (state ``picked``); a sealed delivery stored earlier for the order (``cardproof order deliver``) is reused.
* ``picked``: ``deliver_sealed`` with the recorded pick (it reuses the stored sealed blob, settles a delivery
  already sent, sends one the chain lost); then ``delivered``.
* ``delivered``: upload to every public URL (keep going on failure; the runner retries later); then
  ``published``.

An order that no single batch can fill is ``out_of_stock`` (reported once; retried until its deadline, never half
delivered). An order no longer funded on chain and not delivered by us is ``closed``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from chain.errors import ChainError, ContractRevert
from chain.escrow import OrderStatus
from issuer.errors import IssuerError
from issuer.node import events
from issuer.node.config import NodeConfig
from issuer.node.crash import crash_point
from issuer.node.stock import Stock, parse_ranges, pick_guard, ranges_text
from issuer.storage import repository as repo
from issuer.storage.models import NodeOrder, SealedDelivery

log = logging.getLogger("cardproof.node")

TERMINAL = ("published", "closed", "failed")
#: Orders worked on at once up to their broadcast (reading, sealing, signing: the CPU-bound part). Any number of
#: the node's workers may wait for receipts or upload meanwhile; more than a few at the CPU-bound part would only
#: make each one slower on a machine of a few cores (one interpreter lock), and hold new orders back.
ACTIVE_SLOTS = 4


class _Slot:
    """One of the :data:`ACTIVE_SLOTS`, held from the start of a fulfilment to its broadcast (released once)."""

    def __init__(self, slots: threading.Semaphore) -> None:
        self._slots = slots
        self._lock = threading.Lock()
        self._held = False
        slots.acquire()
        self._held = True

    def release(self) -> None:
        with self._lock:
            if self._held:
                self._held = False
                self._slots.release()


@dataclass(frozen=True)
class Outcome:
    """What one call of :meth:`Fulfiller.fulfil` left: the row's state, and whether it wants another try later
    (``retry``: a transient chain error, an upload that failed, no stock yet)."""

    state: str
    retry: bool = False
    detail: str = ""


def _one_line(exc: BaseException | str) -> str:
    return " ".join(str(exc).split())[:500]


class _AnchoredBatches:
    """The registry as a delivery reads it: ``batch()`` remembered once anchored (what the delivery checks read of
    an anchored batch, its product, expiry and card count, never changes); everything else passed through."""

    def __init__(self, registry: Any) -> None:
        self._registry = registry
        self._batches: dict[bytes, Any] = {}

    def batch(self, batch_id: bytes) -> Any:
        got = self._batches.get(bytes(batch_id))
        if got is None:
            got = self._registry.batch(batch_id)
            if got.anchored:
                self._batches[bytes(batch_id)] = got
        return got

    def __getattr__(self, name: str) -> Any:
        return getattr(self._registry, name)


class Fulfiller:
    def __init__(self, sessions: sessionmaker[Session], master_key: Any, escrow: Any, registry: Any,
                 config: NodeConfig, *, stock: Stock | None = None, on_event: events.EventHook | None = None) -> None:
        self.sessions = sessions
        self.master_key = master_key
        self.escrow = escrow
        self.registry = registry
        self.config = config
        self.stock = stock or Stock(escrow, registry, escrow.client.address)
        self.on_event = on_event
        self.chain_id = escrow.client.chain_id
        self._low_lock = threading.Lock()
        self._check_lock = threading.Lock()
        self._active = threading.Semaphore(ACTIVE_SLOTS)
        self._delivery_registry = _AnchoredBatches(registry)
        #: order id -> OrderOpened arguments, as the node's watcher read them (saves reading the event again).
        self.opened: dict[int, dict[str, Any]] = {}
        #: Products delivered from since the last low-stock check (:meth:`check_dirty_stock`).
        self.dirty_products: set[int] = set()

    # ------------------------------------------------------------------ helpers

    def _payload(self, row: NodeOrder, **extra: Any) -> dict[str, Any]:
        return {"order_id": int(row.order_id), "escrow": row.escrow, "chain_id": row.chain_id, "buyer": row.buyer,
                "product_id": row.product_id, "quantity": row.quantity, "state": row.state, **extra}

    def _set(self, row_id: int, state: str, **fields: Any) -> NodeOrder:
        with self.sessions.begin() as session:
            row = session.get(NodeOrder, row_id)
            row.state = state
            for k, v in fields.items():
                setattr(row, k, v)
            session.flush()
            session.expunge(row)
            return row

    def _close(self, row: NodeOrder, why: str) -> Outcome:
        row = self._set(row.id, "closed", error=why[:2000])
        log.info("order %s: closed (%s)", row.order_id, why)
        events.emit(self.on_event, events.ORDER_CLOSED, self._payload(row, reason=why))
        return Outcome("closed", detail=why)

    def _fail(self, row: NodeOrder, why: str) -> Outcome:
        row = self._set(row.id, "failed", error=why[:2000])
        log.warning("order %s: failed (%s)", row.order_id, why)
        events.emit(self.on_event, events.ORDER_FAILED, self._payload(row, error=why))
        return Outcome("failed", detail=why)

    def _ours_on_chain(self, row: NodeOrder, order: Any) -> bool:
        """Whether the chain holds the order delivered with the cards we picked for it."""
        if order.status in (OrderStatus.NONE, OrderStatus.FUNDED, OrderStatus.CANCELLED) or not row.batch_id:
            return False
        batch_id, ranges = self.escrow.delivery(int(row.order_id))
        return "0x" + batch_id.hex() == row.batch_id and [(r.start, r.length) for r in ranges] == \
            parse_ranges(row.ranges)

    # ------------------------------------------------------------------ the steps

    def fulfil(self, row_id: int) -> Outcome:
        """Drive the order of ``node_orders`` row ``row_id`` as far as it goes now."""
        slot = _Slot(self._active)
        try:
            return self._fulfil(row_id, slot)
        finally:
            slot.release()

    def _fulfil(self, row_id: int, slot: _Slot) -> Outcome:
        with self.sessions() as session:
            row = session.get(NodeOrder, row_id)
            if row is None:
                return Outcome("gone")
            session.expunge(row)
        if row.state in TERMINAL:
            return Outcome(row.state)
        oid = int(row.order_id)
        try:
            order = self.escrow.order(oid)
            if order.status == OrderStatus.NONE:
                return self._close(row, "the order is not on chain (reorganised away?)")
            if order.buyer.lower() != row.buyer.lower() or order.quantity != row.quantity:
                return Outcome(row.state, retry=True, detail="the chain's order differs from the event read; re-read")
            if order.status != OrderStatus.FUNDED:
                if row.state in ("picked", "delivered") and self._ours_on_chain(row, order):
                    pass  # delivered by us (perhaps by a process that died before recording it): settle below
                elif row.state == "delivered":
                    return self._fail(row, f"the order is {order.status.name.lower()} on chain, not delivered "
                                           "with our cards")
                else:
                    return self._close(row, f"the order is {order.status.name.lower()} on chain")
            if row.state in ("seen", "out_of_stock"):
                if order.status == OrderStatus.FUNDED and row.delivery_deadline and time.time() > row.delivery_deadline:
                    return self._close(row, "the delivery deadline passed: left for the buyer to cancel")
                out = self._pick(row)
                if out is not None:
                    return out
                row = self._reload(row_id)
            if row.state == "picked":
                out = self._deliver(row, order if order.status == OrderStatus.FUNDED else None, slot)
                if out is not None:
                    return out
                row = self._reload(row_id)
            if row.state == "delivered":
                slot.release()
                return self._publish(row)
            return Outcome(row.state)
        except ChainError as exc:  # the node, the network: try again on a later pass
            log.warning("order %s: chain error, will retry (%s)", oid, _one_line(exc))
            return Outcome(row.state, retry=True, detail=_one_line(exc))

    def _reload(self, row_id: int) -> NodeOrder:
        with self.sessions() as session:
            row = session.get(NodeOrder, row_id)
            session.expunge(row)
            return row

    def _pick(self, row: NodeOrder) -> Outcome | None:
        key = (row.escrow, row.order_id)
        with self.sessions() as session, pick_guard(session):
            current = session.get(NodeOrder, row.id)
            if current.state not in ("seen", "out_of_stock"):
                session.rollback()
                return None  # picked meanwhile (another process): go on from its state
            sealed = session.scalars(select(SealedDelivery).where(
                SealedDelivery.chain_id == row.chain_id, SealedDelivery.escrow == row.escrow,
                SealedDelivery.order_id == row.order_id)).one_or_none()
            if sealed is not None:  # sealed (and maybe sent) earlier: that is the pick
                batch_id, ranges = sealed.batch_id, parse_ranges(sealed.ranges)
            else:
                got = self.stock.pick(session, row.product_id, row.min_expiry, row.quantity, order=key)
                if got is None:
                    report = self._out_of_stock(current)
                    session.commit()
                    if report:
                        self._report_out_of_stock(current)
                    return Outcome("out_of_stock", retry=True)
                batch_id, ranges = "0x" + got.batch_id.hex(), got.ranges
            current.batch_id = batch_id
            current.ranges = ranges_text(ranges)
            current.state = "picked"
            current.error = None
            session.commit()
        crash_point("picked")
        return None

    @staticmethod
    def _out_of_stock(row: NodeOrder) -> bool:
        """Mark the row out of stock; whether it is news (to report)."""
        was = row.state
        row.state = "out_of_stock"
        row.error = "no single batch holds enough available cards"
        return was != "out_of_stock"

    def _report_out_of_stock(self, row: NodeOrder) -> None:
        log.warning("order %s: out of stock (product %s, %s cards, valid until >= %s): left for the buyer to "
                    "cancel unless stock arrives before the deadline", row.order_id, row.product_id, row.quantity,
                    row.min_expiry or "any")
        events.emit(self.on_event, events.ORDER_OUT_OF_STOCK,
                    self._payload(row, min_expiry=row.min_expiry, delivery_deadline=row.delivery_deadline))

    def pick_many(self, row_ids: list[int]) -> dict[int, str]:
        """Pick the cards of many orders (rows seen or out of stock) in one guarded transaction, as the runner
        does for every new order of a pass before handing them to the workers; returns row id -> new state."""
        if not row_ids:
            return {}
        out: dict[int, str] = {}
        news: list[NodeOrder] = []
        now = time.time()
        with self.sessions() as session, pick_guard(session):
            rows = list(session.scalars(select(NodeOrder).where(
                NodeOrder.id.in_(row_ids), NodeOrder.state.in_(("seen", "out_of_stock"))).order_by(NodeOrder.id)))
            if not rows:
                session.rollback()
                return out
            sealed = {(e, o): (b, r) for e, o, b, r in session.execute(
                select(SealedDelivery.escrow, SealedDelivery.order_id, SealedDelivery.batch_id, SealedDelivery.ranges)
                .where(SealedDelivery.chain_id == self.chain_id, SealedDelivery.order_id.in_([r.order_id for r in rows])))}
            taken: dict[str, bytearray] = {}
            batches = self.stock.batches(session)
            for row in rows:
                if row.delivery_deadline and now > row.delivery_deadline:
                    continue  # closed by its fulfilment
                if (row.escrow, row.order_id) in sealed:
                    batch_id, text = sealed[(row.escrow, row.order_id)]
                    row.batch_id, row.ranges = batch_id, ranges_text(parse_ranges(text))
                else:
                    got = self.stock.pick(session, row.product_id, row.min_expiry, row.quantity, now=int(now),
                                          taken=taken, batches=batches)
                    if got is None:
                        if self._out_of_stock(row):
                            news.append(row)
                        out[row.id] = row.state
                        continue
                    row.batch_id, row.ranges = "0x" + got.batch_id.hex(), got.ranges_text()
                row.state, row.error = "picked", None
                out[row.id] = row.state
            session.commit()
            for row in news:
                session.expunge(row)
        for row in news:
            self._report_out_of_stock(row)
        if any(state == "picked" for state in out.values()):
            crash_point("picked")
        return out

    def _deliver(self, row: NodeOrder, order: Any = None, slot: _Slot | None = None) -> Outcome | None:
        from issuer.delivery_seal import BadSealKey, DeliveryRefused, deliver_sealed
        from issuer.escrow_acts import DeliveryConflict

        oid = int(row.order_id)
        ranges = parse_ranges(row.ranges)
        for attempt in range(2):
            try:
                opened = self.opened.get(oid) if attempt == 0 else None
                if opened is not None and (str(opened.get("buyer", "")).lower() != row.buyer.lower()
                                           or int(opened.get("quantity", -1)) != row.quantity):
                    opened = None  # another event than the row's (a reorg): read it again
                result = deliver_sealed(self.sessions, self.master_key, self.escrow, self._delivery_registry, oid,
                                        bytes.fromhex(row.batch_id[2:]), ranges, public_url=None,
                                        order=order if attempt == 0 else None,
                                        opened_from=max(0, int(row.opened_block or 0) - self.config.reorg_depth),
                                        opened=opened,
                                        after_broadcast=slot.release if slot is not None else None)
                break
            except (BadSealKey, DeliveryRefused, DeliveryConflict, ContractRevert, IssuerError) as exc:
                if isinstance(exc, ChainError) and not isinstance(exc, ContractRevert):
                    raise
                order = self.escrow.order(oid)
                if attempt == 0 and self._ours_on_chain(row, order):
                    # Delivered with our cards meanwhile (another node process on this database sent it, or our
                    # own earlier attempt landed): run again, it records the delivery from the chain.
                    continue
                if order.status in (OrderStatus.NONE, OrderStatus.CANCELLED):
                    return self._close(row, f"the order is {order.status.name.lower()} on chain")
                return self._fail(row, _one_line(exc))
        crash_point("mined")
        row = self._set(row.id, "delivered", deliver_tx=result.act.tx_hash, error=None)
        cards = sum(n for _, n in ranges)
        log.debug("order %s: delivered %s cards of batch %s (tx %s)", oid, cards, row.batch_id, result.act.tx_hash)
        events.emit(self.on_event, events.ORDER_DELIVERED,
                    self._payload(row, batch_id=row.batch_id, ranges=[list(r) for r in ranges],
                                  tx=result.act.tx_hash, sealed_hash="0x" + result.sealed_hash.hex()))
        with self._low_lock:
            self.dirty_products.add(row.product_id)
        return None

    def _publish(self, row: NodeOrder) -> Outcome:
        from issuer.delivery_seal import upload_sealed

        errors = []
        for url in self.config.public_urls:
            try:
                upload_sealed(self.sessions, url, chain_id=row.chain_id, escrow=row.escrow, order_id=int(row.order_id))
            except (IssuerError, OSError) as exc:
                errors.append(f"{url}: {_one_line(exc)}")
        if errors:
            why = "; ".join(errors)
            self._set(row.id, "delivered", error=why[:2000])
            log.warning("order %s: not yet published (%s); will retry", row.order_id, why)
            return Outcome("delivered", retry=True, detail=why)
        crash_point("uploaded")
        row = self._set(row.id, "published", error=None)
        log.info("order %s: delivered %s cards of batch %s (tx %s), published to %s public service(s)",
                 row.order_id, row.quantity, row.batch_id, row.deliver_tx, len(self.config.public_urls))
        events.emit(self.on_event, events.ORDER_PUBLISHED, self._payload(row, public_urls=list(self.config.public_urls)))
        return Outcome("published")

    # ------------------------------------------------------------------ low stock

    def check_dirty_stock(self) -> None:
        """Check the stock of every product delivered from since the last call (the runner, once a pass)."""
        with self._low_lock:
            products, self.dirty_products = self.dirty_products, set()
        for product_id in sorted(products):
            self.check_low_stock(product_id)

    def check_low_stock(self, product_id: int) -> None:
        """Fire ``stock.low`` once when the product's available cards cross below ``low_stock`` (recorded in
        ``meta``; re-armed when it is back at or above)."""
        key = "node.low_stock." + hashlib.sha256(
            f"{self.chain_id}/{self.escrow.client.address.lower()}/{product_id}".encode()).hexdigest()[:40]
        with self._check_lock, self.sessions() as session:
            level = self.stock.stock_levels(session, product_id).get(product_id)
            available = level["available"] if level else 0
            below = available < self.config.low_stock
            was = repo.get_meta(session, key) == "1"
            if below == was:
                return
            repo.set_meta(session, key, "1" if below else "0")
            try:
                session.commit()
            except IntegrityError:  # another node process recorded (and reported) the crossing first
                session.rollback()
                return
        if below:
            log.warning("stock of product %s is low: %s cards available (threshold %s)", product_id, available,
                        self.config.low_stock)
            events.emit(self.on_event, events.STOCK_LOW, {
                "product_id": product_id, "available": available, "threshold": self.config.low_stock,
                "sku": level["sku"] if level else None, "face_value": level["face_value"] if level else None,
                "currency": level["currency"] if level else None,
                "batches": level["batches"] if level else []})
