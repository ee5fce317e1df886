"""The supplier's node: :class:`SupplierNode` watches the escrow and fulfils its supplier's orders, many at once.

``start()`` settles what a previous process left (``settle_escrow_acts``: deliveries the chain lost are sent
again) and runs a loop thread calling :meth:`SupplierNode.run_once` every ``poll_interval``; each pass reads new
OrderOpened events (``issuer.node.watcher``) and submits every order that needs something (seen, out of stock,
picked, delivered but not yet published) to a pool of ``workers`` threads, never the same order twice at once.
Deliveries made in the last ``reorg_depth`` blocks are checked again each pass: one the chain lost is sent again.
``stop()`` ends the loop and waits for the orders in hand.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from sqlalchemy import select

from chain.client import guard
from chain.escrow import OrderStatus
from issuer.node import events
from issuer.node.config import NodeConfig
from issuer.node.crash import crash_point, crash_step
from issuer.node.fulfil import Fulfiller, Outcome
from issuer.node.stock import Stock
from issuer.node.watcher import OrderWatcher
from issuer.storage.models import NodeOrder

log = logging.getLogger("cardproof.node")

ACTIVE = ("seen", "out_of_stock", "picked", "delivered")
#: Seconds before an out-of-stock order is tried again, and the bounds of the upload retry back-off.
OUT_OF_STOCK_RETRY = 2.0
UPLOAD_RETRY = (2.0, 300.0)
#: Lowest interval between two receipt polls of one delivery.
RECEIPT_POLL = 0.1


def install_crash_hooks(escrow: Any) -> None:
    """The SIGKILL test hook (``issuer.node.crash``) at the steps inside ``deliver_sealed``: after the sealed
    delivery is stored, after the transaction's hash is stored (before broadcast), after broadcast."""
    step = crash_step()
    if step is None:
        return
    if step == "sealed":
        import issuer.delivery_seal as ds

        original_seal = ds.seal_order_delivery

        def seal_then_crash(*args: Any, **kwargs: Any) -> Any:
            out = original_seal(*args, **kwargs)
            crash_point("sealed")
            return out

        ds.seal_order_delivery = seal_then_crash
    if step in ("signed", "broadcast"):
        client = escrow.client
        original_send = client.send

        def send(fn: Any, *, before_broadcast: Any = None, **kwargs: Any) -> Any:
            def hook(sent: Any) -> None:
                if before_broadcast is not None:
                    before_broadcast(sent)
                crash_point("signed")

            sent = original_send(fn, before_broadcast=hook, **kwargs)
            crash_point("broadcast")
            return sent

        client.send = send  # type: ignore[method-assign]


class SupplierNode:
    def __init__(self, runtime: Any, escrow: Any, registry: Any, config: NodeConfig,
                 on_event: events.EventHook | None = None) -> None:
        self.runtime = runtime
        self.sessions = runtime.sessions
        # The node's own client (same account, same nonce store): receipts polled every RECEIPT_POLL seconds at
        # most, so that many orders waiting at once do not flood the chain's node with requests.
        client = escrow.client.with_account(escrow.client.account)
        client.poll_interval = max(client.poll_interval, RECEIPT_POLL)
        escrow = escrow.as_account(client)
        self.escrow = escrow
        self.registry = registry
        self.config = config
        self.on_event = on_event
        self.stock = Stock(escrow, registry, escrow.client.address)
        self.fulfiller = Fulfiller(self.sessions, runtime.master_key, escrow, registry, config, stock=self.stock,
                                   on_event=on_event)
        self.watcher = OrderWatcher(self.sessions, escrow, config)
        self.fulfiller.opened = self.watcher.opened  # the OrderOpened arguments the watcher read
        self._pool: ThreadPoolExecutor | None = None
        self._inflight: dict[int, Future[Outcome]] = {}
        self._not_before: dict[int, float] = {}
        self._backoff: dict[int, float] = {}
        #: row id -> (block number, block hash) of its delivery, rechecked until ``reorg_depth`` deep
        self._recent: dict[int, tuple[int, str | None]] = {}
        self._maintaining = threading.Lock()  # one maintenance task (stock alerts) at a time
        self._rechecked_at = -1  # the head block of the last recheck
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._recovered = False
        self.last_error: str | None = None
        install_crash_hooks(escrow)

    # ------------------------------------------------------------------ lifecycle

    def _ensure_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.config.workers, thread_name_prefix="cardproof-node")
        return self._pool

    def recover(self) -> list[tuple[str, str, str]]:
        """Settle the deliveries a previous process left (sent again when the chain lost them)."""
        from issuer.escrow_acts import settle_escrow_acts

        out = settle_escrow_acts(self.sessions, self.escrow)
        self._recovered = True
        for kind, status, detail in out:
            log.info("recovery: %s %s: %s", kind, status, detail)
        return out

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._ensure_pool()
        self._thread = threading.Thread(target=self._loop, name="cardproof-node-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> SupplierNode:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                if not self._recovered:
                    self.recover()
                self.run_once(wait_for_orders=False)
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - the node keeps going; the error is logged once per change
                text = " ".join(str(exc).split())[:300] or type(exc).__name__
                if text != self.last_error:
                    log.warning("node pass failed (%s); retrying every %.1fs", text, self.config.poll_interval)
                self.last_error = text
            self._stop.wait(max(0.0, self.config.poll_interval - (time.monotonic() - started)))

    # ------------------------------------------------------------------ one pass

    def run_once(self, *, wait_for_orders: bool = True, timeout: float | None = None) -> dict[str, Any]:
        """One pass: read new orders, recheck recent deliveries, submit what needs doing. With
        ``wait_for_orders``, waits for the submitted orders (``--once``, tests) and returns a summary."""
        if not self._recovered:
            self.recover()
        touched = self.watcher.scan()
        for row_id in touched:
            self._not_before.pop(row_id, None)
        now = time.monotonic()
        with self.sessions() as session:
            todo = list(session.scalars(select(NodeOrder.id).where(
                NodeOrder.chain_id == self.escrow.client.chain_id, NodeOrder.escrow == self.escrow.address,
                NodeOrder.state.in_(ACTIVE)).order_by(NodeOrder.id)))
        with self._lock:
            free = [r for r in todo if r not in self._inflight and self._not_before.get(r, 0.0) <= now]
        with self.sessions() as session:
            to_pick = list(session.scalars(select(NodeOrder.id).where(
                NodeOrder.id.in_(free), NodeOrder.state.in_(("seen", "out_of_stock"))))) if free else []
        for row_id, state in self.fulfiller.pick_many(to_pick).items():
            if state == "out_of_stock":
                self._not_before[row_id] = now + OUT_OF_STOCK_RETRY
        pool = self._ensure_pool()
        submitted: list[Future[Outcome]] = []
        with self._lock:
            for row_id in todo:
                if row_id in self._inflight or self._not_before.get(row_id, 0.0) > now:
                    continue
                if self._not_before.get(row_id, 0.0) > time.monotonic():  # out of stock just now
                    continue
                fut = pool.submit(self._drive, row_id)
                self._inflight[row_id] = fut
                submitted.append(fut)
        # New orders are in the workers' hands first; then what can wait: deliveries a reorg may have undone
        # (checked once per block), and the low-stock alerts (off this thread: they read every batch's stock).
        self._recheck_recent()
        if wait_for_orders:
            self.fulfiller.check_dirty_stock()
        elif self.fulfiller.dirty_products and self._maintaining.acquire(blocking=False):
            def maintain() -> None:
                try:
                    self.fulfiller.check_dirty_stock()
                finally:
                    self._maintaining.release()

            pool.submit(maintain)
        if wait_for_orders and submitted:
            wait(submitted, timeout=timeout)
            self.fulfiller.check_dirty_stock()
        return self.summary() | {"submitted": len(submitted)}

    def _drive(self, row_id: int) -> Outcome:
        try:
            out = self.fulfiller.fulfil(row_id)
        except Exception as exc:  # noqa: BLE001 - one order's trouble must not stop the others
            log.warning("order row %s: %s; will retry", row_id, " ".join(str(exc).split())[:300])
            out = Outcome("?", retry=True, detail=str(exc))
        finally:
            with self._lock:
                self._inflight.pop(row_id, None)
        now = time.monotonic()
        if out.state == "delivered" and out.retry:
            delay = min(UPLOAD_RETRY[1], self._backoff.get(row_id, UPLOAD_RETRY[0] / 2) * 2)
            self._backoff[row_id] = delay
            self._not_before[row_id] = now + delay
        elif out.state == "out_of_stock":
            self._not_before[row_id] = now + OUT_OF_STOCK_RETRY
        elif out.retry:
            self._not_before[row_id] = now + max(self.config.poll_interval, 1.0)
        else:
            self._not_before.pop(row_id, None)
            self._backoff.pop(row_id, None)
        if out.state in ("delivered", "published") and row_id not in self._recent:
            self._recent[row_id] = self._delivery_block(row_id)
        return out

    def _delivery_block(self, row_id: int) -> tuple[int, str | None]:
        """The block (number, hash) that mined the row's delivery, from its recorded act; else the head now
        (with no hash: the recheck then reads the order itself)."""
        from issuer.storage.models import ChainAct

        with self.sessions() as session:
            row = session.get(NodeOrder, row_id)
            act = session.scalars(select(ChainAct).where(ChainAct.kind == "deliver",
                                                         ChainAct.tx_hash == row.deliver_tx)).first() \
                if row is not None and row.deliver_tx else None
            if act is not None and act.block_number is not None and act.block_hash:
                return int(act.block_number), str(act.block_hash)
        return self.escrow.client.block_number(), None

    def _recheck_recent(self) -> None:
        """Deliveries not yet ``reorg_depth`` deep: one the chain lost (the order funded again) is driven again;
        one whose order vanished is closed.

        Once per new head: the hash of each block that mined a recent delivery is read once (a few blocks, not
        one request per order); only the orders of a block that changed (or of unknown block) are read again."""
        if not self._recent:
            return
        head = self.escrow.client.block_number()
        if head == self._rechecked_at:
            return  # nothing new on chain since the last recheck: once per block is enough
        self._rechecked_at = head
        hashes: dict[int, str | None] = {}
        w3 = self.escrow.client.w3
        for row_id, (block, known) in list(self._recent.items()):
            if head - block > self.config.reorg_depth:
                self._recent.pop(row_id, None)
                continue
            if row_id in self._inflight:
                continue
            if known is not None:
                if block not in hashes:
                    got = guard(lambda block=block: w3.eth.get_block(block)) if block <= head else None
                    hashes[block] = "0x" + bytes(got["hash"]).hex() if got is not None else None
                if hashes[block] is not None and hashes[block].lower() == known.lower():
                    continue  # the block that mined it is still on the chain
            self._recheck_order(row_id)

    def _recheck_order(self, row_id: int) -> None:
        with self.sessions() as session:
            row = session.get(NodeOrder, row_id)
            if row is None or row.state not in ("delivered", "published"):
                self._recent.pop(row_id, None)
                return
            oid = int(row.order_id)
        status = self.escrow.order(oid).status
        if status == OrderStatus.FUNDED:
            log.warning("order %s: the chain lost our delivery (reorg); delivering it again", oid)
            self._recent.pop(row_id, None)
            self.fulfiller._set(row_id, "picked", error="delivery lost in a reorg")
        elif status == OrderStatus.NONE:
            self._recent.pop(row_id, None)
            self.fulfiller._close(self.fulfiller._reload(row_id), "the order is not on chain (reorganised away?)")
        else:
            # Delivered still (the same transaction mined again in a new block): follow that block from now on.
            self._recent[row_id] = self._delivery_block(row_id)

    def wait_idle(self, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                futures = list(self._inflight.values())
            if not futures:
                return True
            wait(futures, timeout=max(0.0, deadline - time.monotonic()))
        return False

    def summary(self) -> dict[str, Any]:
        from sqlalchemy import func

        with self.sessions() as session:
            counts = dict(session.execute(select(NodeOrder.state, func.count()).where(
                NodeOrder.chain_id == self.escrow.client.chain_id, NodeOrder.escrow == self.escrow.address)
                .group_by(NodeOrder.state)).all())
        return {"orders": {k: int(v) for k, v in sorted(counts.items())}, "in_flight": len(self._inflight)}
