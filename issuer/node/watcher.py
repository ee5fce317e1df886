"""Reads the escrow's OrderOpened events for this supplier into ``node_orders``.

Each pass reads from the cursor (``meta`` key ``node.cursor.<chain id>.<escrow>``: the last block read) minus
``reorg_depth`` blocks up to the head minus ``confirmations``, so an order whose event moved or vanished in a reorg
is read again. A row whose event now says something else (another order under the same id after a reorg) is reset
to ``seen`` unless it was delivered; a row whose order is no longer on chain is closed by the fulfilment
(``issuer.node.fulfil``) when it next looks at it.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from issuer.node.config import NodeConfig
from issuer.storage import repository as repo
from issuer.storage.models import NodeOrder, SealedDelivery

log = logging.getLogger("cardproof.node")

#: Blocks per get_logs call.
LOG_CHUNK = 5_000
#: Events remembered as written (far more than a reorg window holds).
MAX_WRITTEN = 10_000


def _where(entry: Any) -> tuple[str, int]:
    return "0x" + bytes(entry["blockHash"]).hex(), int(entry["logIndex"])


class OrderWatcher:
    def __init__(self, sessions: sessionmaker[Session], escrow: Any, config: NodeConfig) -> None:
        self.sessions = sessions
        self.escrow = escrow
        self.config = config
        self.client = escrow.client
        self.supplier = escrow.client.address
        self.chain_id = escrow.client.chain_id
        # meta keys are at most 64 characters: the chain, escrow and supplier hashed.
        self.cursor_key = "node.cursor." + hashlib.sha256(
            f"{self.chain_id}/{escrow.address.lower()}/{self.supplier.lower()}".encode()).hexdigest()[:40]
        #: The head the last pass read up to; a pass with no new block reads nothing.
        self._scanned_head: int | None = None
        #: order id -> (block hash, log index) of its event as this process last wrote it: an event read again
        #: unchanged (the reorg window is read every block) is not written again.
        self._written: dict[str, tuple[str, int]] = {}
        #: order id -> its OrderOpened arguments as last read (the seal key among them), for the delivery.
        self.opened: dict[int, dict[str, Any]] = {}

    def cursor(self) -> int | None:
        with self.sessions() as session:
            value = repo.get_meta(session, self.cursor_key)
        return int(value) if value is not None else None

    def _logs(self, start: int, stop: int) -> list[Any]:
        out: list[Any] = []
        event = self.escrow.contract.events.OrderOpened()
        for lo in range(start, stop + 1, LOG_CHUNK):
            hi = min(stop, lo + LOG_CHUNK - 1)
            out.extend(event.get_logs(from_block=lo, to_block=hi, argument_filters={"supplier": self.supplier}))
        return out

    def scan(self) -> list[int]:
        """Read new OrderOpened events; returns the ids of rows added or reset."""
        head = self.client.block_number() - self.config.confirmations
        if head == self._scanned_head:
            return []  # no new block since the last pass
        cursor = self.cursor()
        start = self.config.start_block if cursor is None else max(self.config.start_block,
                                                                   cursor + 1 - self.config.reorg_depth)
        if head < start:
            return []
        logs = self._logs(start, head)
        for attempt in range(5):
            touched: list[int] = []
            try:
                written: dict[str, tuple[str, int]] = {}
                with self.sessions.begin() as session:
                    for entry in logs:
                        oid, where = str(int(entry["args"]["orderId"])), _where(entry)
                        self.opened[int(oid)] = dict(entry["args"])
                        if self._written.get(oid) == where:
                            continue  # read before, unchanged
                        row_id = self._upsert(session, entry)
                        if row_id is not None:
                            touched.append(row_id)
                        written[oid] = where
                    repo.set_meta(session, self.cursor_key, str(head))
                self._written.update(written)
                self._scanned_head = head
                if len(self._written) > 4 * MAX_WRITTEN:  # forget the oldest (dicts keep insertion order)
                    for oid in list(self._written)[: len(self._written) - MAX_WRITTEN]:
                        del self._written[oid]
                        self.opened.pop(int(oid), None)
                return touched
            except IntegrityError:
                # Another node process inserted the same rows (or the cursor) first: read them, go on.
                if attempt == 4:
                    raise
        return []

    def _upsert(self, session: Session, entry: Any) -> int | None:
        a = entry["args"]
        oid = str(int(a["orderId"]))
        fields = {"buyer": a["buyer"], "product_id": int(a["productId"]), "min_expiry": int(a["minExpiry"]),
                  "quantity": int(a["quantity"]), "delivery_deadline": int(a["deliveryDeadline"]),
                  "opened_block": int(entry["blockNumber"])}
        row = session.scalars(select(NodeOrder).where(
            NodeOrder.chain_id == self.chain_id, NodeOrder.escrow == self.escrow.address,
            NodeOrder.order_id == oid)).one_or_none()
        if row is None:
            session.add(NodeOrder(chain_id=self.chain_id, escrow=self.escrow.address, order_id=oid, state="seen",
                                  **fields))
            session.flush()
            return session.scalars(select(NodeOrder.id).where(
                NodeOrder.chain_id == self.chain_id, NodeOrder.escrow == self.escrow.address,
                NodeOrder.order_id == oid)).one()
        same = all(getattr(row, k) == v for k, v in fields.items() if k not in ("opened_block", "buyer")) \
            and row.buyer.lower() == fields["buyer"].lower()
        if same:
            row.opened_block = fields["opened_block"]
            if row.state == "closed" and (row.error or "").startswith("the order is not on chain"):
                row.state, row.error = "seen", None  # back on chain after a reorg: handle it again
                return row.id
            return None
        if row.state in ("delivered", "published"):
            log.warning("order %s: its OrderOpened changed after our delivery (reorg); left as %s", oid, row.state)
            return None
        # Another order under the same id (a reorg replaced it): forget the old pick, unless it may be on its way.
        from issuer.delivery_seal import _delivery_in_flight

        if not _delivery_in_flight(self.sessions, self.escrow.address, int(oid)):
            session.execute(delete(SealedDelivery).where(
                SealedDelivery.chain_id == self.chain_id, SealedDelivery.escrow == self.escrow.address,
                SealedDelivery.order_id == oid))
        for k, v in fields.items():
            setattr(row, k, v)
        row.state, row.batch_id, row.ranges, row.deliver_tx, row.error = "seen", None, None, None, None
        log.info("order %s: replaced on chain by another order (reorg); handled afresh", oid)
        return row.id
