"""`cardproof keeper`: settle what nobody else will.

A delivered order whose dispute window has passed, or a disputed order whose dispute deadline has passed, waits
for someone to call ``release`` (the contract settles it with the default outcome). The keeper does that for
everyone: anyone may run it, and several may run at once.

* It finds open orders cheaply: it follows the escrow's life-cycle events (OrderDelivered, OrderDisputed,
  DisputeWithdrawn, DeliveryProven, OrderConfirmed, OrderReleased, OrderResolved, OrderCancelled, DisputeExpired)
  from a cursor, re-reading the last few blocks each pass (reorgs). Every order an event names is re-read from the
  chain (``order()``), and kept as a candidate while it is DELIVERED or DISPUTED, with when it becomes releasable
  (:meth:`chain.escrow.Order.releasable_at`).
* It acts only on candidates whose ``releasable_at`` is at most the chain's time (the latest block's timestamp),
  after re-reading the order once more.
* Several keepers: a release that another keeper (or the buyer, or an arbiter) got in first is a skip, not an
  error: the client simulates before it sends, so the loser sees InvalidOrderStatus before spending gas, or its
  transaction reverts; either way the order, read again, is settled. Any other failure is logged and the order is
  tried again next pass.

An idle pass costs two JSON-RPC requests (the latest block, the logs since the cursor).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hexbytes import HexBytes
from web3.logs import DISCARD

from chain.errors import CardproofError, ChainError, DisputeDeadlineNotPassed, DisputeWindowOpen
from chain.escrow import OrderStatus
from chain.events import read_events

__all__ = ["EVENTS", "Keeper", "KeeperAction", "run_forever"]

log = logging.getLogger("cardproof.keeper")

#: The escrow events after which an order may have become (or stopped being) releasable.
EVENTS = ("OrderDelivered", "OrderDisputed", "DisputeWithdrawn", "DeliveryProven", "DisputeExpired",
          "OrderConfirmed", "OrderReleased", "OrderResolved", "OrderCancelled")
OPEN = (OrderStatus.DELIVERED, OrderStatus.DISPUTED)


@dataclass(frozen=True)
class KeeperAction:
    """What the keeper did about one order: ``released`` (a delivered order after its window),
    ``dispute_expired`` (a disputed order after its deadline), ``skipped`` (someone settled it first, or it is not
    releasable yet after all; ``reason`` says which) or ``error`` (logged; tried again next pass)."""

    order_id: int
    what: str
    tx: str | None = None
    reason: str | None = None

    @property
    def settled(self) -> bool:
        return self.what in ("released", "dispute_expired")

    def to_json(self) -> dict[str, Any]:
        return {"order_id": self.order_id, "what": self.what, "tx": self.tx, "reason": self.reason}

    def summary(self) -> str:
        if self.what == "released":
            return f"order {self.order_id} released: its dispute window had passed (tx {self.tx})"
        if self.what == "dispute_expired":
            return f"order {self.order_id} released: its dispute deadline had passed unresolved (tx {self.tx})"
        return f"order {self.order_id} {self.what}: {self.reason}"


class Keeper:
    """Releases the escrow's orders whose dispute window or dispute deadline has passed.

    ``escrow``: a :class:`chain.escrow.Escrow` whose account pays the gas. ``from_block``: where to start
    following the escrow's events (its deployment block is enough). ``max_per_pass``: at most this many releases
    are tried per pass (the rest wait for the next). ``reorg_depth``: blocks re-read every pass."""

    def __init__(self, escrow: Any, *, from_block: int = 0, max_per_pass: int = 200, reorg_depth: int = 6) -> None:
        self.escrow = escrow
        self.client = escrow.client
        self.max_per_pass = max_per_pass
        self.reorg_depth = reorg_depth
        self._from_block = max(0, int(from_block))
        self._cursor = self._from_block  # the next block never read
        self._abi = escrow.contract.abi
        #: order id -> when it becomes releasable (chain time); orders that are DELIVERED or DISPUTED.
        self.candidates: dict[int, int] = {}
        self._seen: dict[tuple[str, str, int], int] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ following the chain

    def _head(self) -> tuple[int, int]:
        from chain.client import guard

        block = guard(lambda: self.client.w3.eth.get_block("latest"))
        return int(block["number"]), int(block["timestamp"])

    def _touched(self, head: int) -> set[int]:
        """Order ids named by the escrow's life-cycle events since the cursor (and the last few blocks again)."""
        start = max(self._from_block, self._cursor - self.reorg_depth)
        if head < start:
            return set()
        events = read_events(self.client, [(self.escrow.address, self._abi)], start, head, names=EVENTS)
        self._cursor = head + 1
        # An event read again (the reorg margin) is not news; one in a block that replaced another is.
        touched = set()
        for e in events:
            key = (e.block_hash, e.tx_hash, e.log_index)
            if key not in self._seen:
                self._seen[key] = e.block_number
                touched.add(int(e.args["orderId"]))
        floor = start - 1
        self._seen = {k: n for k, n in self._seen.items() if n >= floor}
        return touched

    def _refresh(self, order_id: int) -> Any:
        """Read the order again and keep the candidate set in step with it."""
        order = self.escrow.order(order_id)
        at = order.releasable_at() if order.status in OPEN else None
        if at is None:
            self.candidates.pop(order_id, None)
        else:
            self.candidates[order_id] = at
        return order

    # ------------------------------------------------------------------ one pass

    def run_once(self, now: int | None = None) -> list[KeeperAction]:
        """Follow the events since the last pass, then release every candidate releasable at ``now`` (default: the
        latest block's timestamp). Returns what was done (nothing when nothing was due)."""
        with self._lock:
            head, chain_now = self._head()
            now = chain_now if now is None else int(now)
            for order_id in sorted(self._touched(head)):
                self._refresh(order_id)
            due = sorted(oid for oid, at in self.candidates.items() if at <= now)[: self.max_per_pass]
            actions: list[KeeperAction] = []
            # Every release is simulated and broadcast first, then their receipts are awaited together: a pass
            # over many due orders takes about one block, not one block per order.
            sent = []
            for order_id in due:
                action, tx = self._send_release(order_id, now)
                if action is not None:
                    actions.append(action)
                if tx is not None:
                    sent.append((order_id, tx))
            for order_id, tx in sent:
                actions.append(self._settled(order_id, tx))
            return actions

    def _send_release(self, order_id: int, now: int) -> tuple[KeeperAction | None, Any]:
        try:
            order = self._refresh(order_id)
        except CardproofError as exc:
            log.warning("keeper: cannot read order %d: %s", order_id, exc)
            return KeeperAction(order_id, "error", reason=f"cannot read the order: {exc}"), None
        if order.status not in OPEN:
            return KeeperAction(order_id, "skipped", reason=f"already settled ({order.status.name.lower()})"), None
        at = order.releasable_at()
        if at is None or at > now:
            return None, None  # e.g. a dispute withdrawn or raised since: its new time is recorded
        try:
            # The gas of Escrow.release (the delivery's bitmap words); the client simulates before it signs.
            gas = self.escrow.settle_gas(order_id)  # noqa: SLF001 - the escrow wrapper's own gas rule
            return None, self.client.send(self.escrow.fn.release(order_id), gas=gas)
        except ChainError as exc:
            return self._failed(order_id, exc), None

    def _settled(self, order_id: int, sent: Any) -> KeeperAction:
        try:
            receipt = self.client.wait(sent.tx_hash)
        except ChainError as exc:
            return self._failed(order_id, exc)
        expired = bool(self.escrow.contract.events.DisputeExpired().process_receipt(receipt, errors=DISCARD))
        what = "dispute_expired" if expired else "released"
        self.candidates.pop(order_id, None)
        tx = HexBytes(receipt["transactionHash"]).to_0x_hex()
        log.info("keeper: order %d %s (tx %s)", order_id, what, tx)
        return KeeperAction(order_id, what, tx=tx)

    def _settle(self, order_id: int, now: int) -> KeeperAction | None:
        """Release one order now if it is due (what a pass does for each due order)."""
        action, tx = self._send_release(order_id, now)
        return self._settled(order_id, tx) if tx is not None else action

    def _failed(self, order_id: int, exc: ChainError) -> KeeperAction:
        """A release that failed: settled by someone else first (a skip), not yet due (a skip, kept), or an error
        (logged, kept for the next pass)."""
        try:
            order = self._refresh(order_id)
        except CardproofError:
            order = None
        if order is not None and order.status not in OPEN:
            self.candidates.pop(order_id, None)
            return KeeperAction(order_id, "skipped", reason=f"already settled ({order.status.name.lower()}) by "
                                                            "someone else")
        if isinstance(exc, DisputeWindowOpen | DisputeDeadlineNotPassed):
            return KeeperAction(order_id, "skipped", reason=f"not releasable yet ({exc})")
        log.warning("keeper: release of order %d failed, trying again next pass: %s", order_id, exc)
        return KeeperAction(order_id, "error", reason=str(exc))

    # ------------------------------------------------------------------ forever

    def run_forever(self, interval: float = 0.5, stop_event: threading.Event | None = None,
                    on_actions: Callable[[list[KeeperAction]], None] | None = None) -> None:
        run_forever(self, interval, stop_event or threading.Event(), on_actions=on_actions)


def run_forever(keeper: Keeper, interval: float, stop_event: threading.Event,
                on_actions: Callable[[list[KeeperAction]], None] | None = None) -> None:
    """Pass after pass until ``stop_event`` is set; a failing pass (the node down, ...) is logged, never fatal."""
    while not stop_event.is_set():
        started = time.monotonic()
        try:
            actions = keeper.run_once()
        except CardproofError as exc:
            log.warning("keeper: pass failed, trying again: %s", exc)
            actions = []
        except Exception:  # noqa: BLE001 - a keeper keeps going; the next pass starts afresh
            log.exception("keeper: pass failed, trying again")
            actions = []
        if actions and on_actions is not None:
            on_actions(actions)
        stop_event.wait(max(0.0, interval - (time.monotonic() - started)))
