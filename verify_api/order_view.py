"""What the API shows of an escrow order: its state read from the chain (cached) and its timeline from the
events the indexer (verify_api/indexer.py) stored.

The order itself (``CardEscrow.order`` and ``deliveryOf``) is read from the chain and cached like the card
statuses of :mod:`verify_api.chain_view`: an open order for ``ttl`` seconds, a settled one (it can no longer
change) for ``max_age``. When the chain stops answering, the last value read is served with
``chain.state = "stale"``; an order never read then is a 503.

The timeline (opened, funded, delivered, disputed, confirmed / released / resolved, refunded) comes from the
``chain_events`` rows of the escrow for that order. The chain's state says which steps must exist; when some
are missing, or the indexer is behind the chain, the answer says so (``indexer.complete = false``).

After the delivery the timeline also shows the issuer's acts on the order's cards, from the registry's rows
(:mod:`verify_api.registry_acts`): steps "revoked" and "redeemed" with the number of the order's cards touched
and whether the order was still open or already settled. They are informational (``informational: true``):
the completeness check looks at the escrow's steps only.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from chain.errors import CardproofError, ChainUnreachable
from chain.escrow_view import STATUS_NAMES, TokenMeta, format_duration, order_json, token_meta
from verify_api.errors import ApiError
from verify_api.registry_acts import ACT_EVENTS, SETTLEMENT_EVENTS, WHILE_ORDER_OPEN, order_acts

log = logging.getLogger("cardproof.api.orders")

__all__ = ["EXPECTED_STEPS", "OrderView", "install", "parse_order_id"]

_ORDER_ID = re.compile(r"^[0-9]{1,78}$")
UINT256_MAX = 2**256 - 1
_MAX_BIGINT = 2**63 - 1

#: Timeline steps the chain's status implies.
EXPECTED_STEPS: dict[str, tuple[str, ...]] = {
    "funded": ("opened", "funded"),
    "delivered": ("opened", "funded", "delivered"),
    "disputed": ("opened", "funded", "delivered", "disputed"),
    "confirmed": ("opened", "funded", "delivered", "confirmed"),
    "released": ("opened", "funded", "delivered", "released"),
    "resolved": ("opened", "funded", "delivered", "disputed", "resolved"),
    "cancelled": ("opened", "funded", "refunded"),
}
_FINAL = frozenset({"confirmed", "released", "resolved", "cancelled"})


def parse_order_id(text: str) -> int:
    """A decimal order id (0 .. 2**256-1), else a 422 ``invalid_order_id``."""
    raw = (text or "").strip()
    if not _ORDER_ID.match(raw) or int(raw) > UINT256_MAX:
        raise ApiError(422, "invalid_order_id", "an order id is a whole number, like 42")
    return int(raw)


def order_not_found(order_id: int) -> ApiError:
    return ApiError(404, "order_not_found", f"there is no order {order_id} in the escrow")


@dataclass
class _Entry:
    order: Any
    ranges: list[Any]
    block: int
    read_at: float


class OrderView:
    """Orders of one CardEscrow for the API. Thread-safe."""

    def __init__(self, connector: Callable[[], Any] | Any, sessions: Any, *, ttl: float = 2.0,
                 max_age: float = 300.0, explorer_url: str | None = None, public_url: str = "",
                 clock: Callable[[], float] = time.monotonic, max_entries: int = 10_000) -> None:
        if callable(connector) and not hasattr(connector, "order"):
            self._connector: Callable[[], Any] = connector
            self._escrow = None
        else:
            self._connector = lambda: connector
            self._escrow = connector
        self.sessions = sessions
        self.ttl = ttl
        self.max_age = max_age
        self.explorer_url = explorer_url.rstrip("/") if explorer_url else None
        self.public_url = (public_url or "").rstrip("/")
        self._clock = clock
        self._lock = threading.Lock()
        self._orders: OrderedDict[int, _Entry] = OrderedDict()
        self._tokens: dict[str, TokenMeta] = {}
        self._products: dict[int, dict[str, Any]] = {}
        self.max_entries = max_entries
        #: Chain reads made (for tests).
        self.reads = 0

    @classmethod
    def from_deps(cls, deps: Any) -> OrderView:
        def connect() -> Any:
            from chain.deployments import find
            from chain.escrow import ESCROW, Escrow

            client = deps.chain._ensure_registry().client  # noqa: SLF001 - the API's one chain connection
            return Escrow(client, find(client, deps.settings.home, ESCROW).address)

        return cls(connect, deps.sessions, ttl=deps.api.chain_ttl, max_age=deps.api.chain_max_age,
                   explorer_url=deps.settings.explorer_url, public_url=deps.settings.public_url)

    # -------------------------------------------------------------- chain

    def escrow(self) -> Any:
        esc = self._escrow
        if esc is None:
            esc = self._connector()  # NotDeployed etc. propagate (503); tried again on the next request
            with self._lock:
                if self._escrow is None:
                    self._escrow = esc
                esc = self._escrow
        return esc

    def product(self, product_id: int) -> dict[str, Any] | None:
        """The registry's product ``product_id`` (immutable, cached): SKU, face value in minor units, currency."""
        if not product_id:
            return None
        cached = self._products.get(product_id)
        if cached is None:
            from chain.registry import Registry

            esc = self.escrow()
            spec = Registry(esc.client, esc.registry_address).product(product_id)
            if spec is None:
                return None
            cached = {"id": product_id, "sku": spec.sku_text, "face_value": spec.face_value,
                      "currency": spec.currency_text}
            self._products[product_id] = cached
        return cached

    def token(self, address: str) -> TokenMeta:
        meta = self._tokens.get(address)
        if meta is None:
            meta = token_meta(self.escrow().client, address)
            self._tokens[address] = meta
        return meta

    def _fresh(self, entry: _Entry) -> bool:
        final = STATUS_NAMES[int(entry.order.status)] in _FINAL
        return self._clock() - entry.read_at <= (self.max_age if final else self.ttl)

    def read(self, order_id: int) -> tuple[Any, list[Any], int, str]:
        """(order, delivery ranges, block read at, "live" | "stale")."""
        with self._lock:
            entry = self._orders.get(order_id)
        if entry is not None and self._fresh(entry):
            return entry.order, entry.ranges, entry.block, "live"
        try:
            esc = self.escrow()
            block = int(esc.client.block_number())
            self.reads += 1
            order = esc.order(order_id, block)
            ranges = esc.delivery(order_id)[1] if order.delivered_at else []
        except Exception as exc:  # noqa: BLE001 - serve the last value read while the chain is away
            if entry is not None:
                log.debug("order %s: chain read failed (%s); serving block %s", order_id, type(exc).__name__,
                          entry.block)
                return entry.order, entry.ranges, entry.block, "stale"
            if isinstance(exc, CardproofError):
                raise
            raise ChainUnreachable(f"the chain does not answer ({type(exc).__name__})") from None
        with self._lock:
            self._orders[order_id] = _Entry(order, list(ranges), block, self._clock())
            self._orders.move_to_end(order_id)
            while len(self._orders) > self.max_entries:
                self._orders.popitem(last=False)
        return order, list(ranges), block, "live"

    def forget(self, order_id: int | None = None) -> None:
        with self._lock:
            if order_id is None:
                self._orders.clear()
            else:
                self._orders.pop(order_id, None)

    # -------------------------------------------------------------- database

    def _indexed(self, chain_id: int, escrow: str, order_id: int) -> tuple[list[Any], list[dict[str, Any]], int | None]:
        """The escrow's rows of the order, the registry's acts on its delivered cards, the indexed block."""
        from verify_api.storage.index_models import ChainEventRow, IndexCursor

        with self.sessions() as s:
            cursor = s.get(IndexCursor, chain_id)
            rows: list[Any] = []
            if order_id <= _MAX_BIGINT:
                rows = list(s.execute(
                    sa.select(ChainEventRow)
                    .where(ChainEventRow.chain_id == chain_id, ChainEventRow.address == escrow,
                           ChainEventRow.order_id == order_id)
                    .order_by(ChainEventRow.block_number, ChainEventRow.log_index)).scalars())
            delivered = next((r for r in rows if r.event == "OrderDelivered"), None)
            settled = next((r for r in rows if r.event in SETTLEMENT_EVENTS), None)
            acts = order_acts(s, chain_id, delivered, settled) if delivered is not None else []
            return rows, acts, (int(cursor.block_number) if cursor is not None else None)

    def _tx_url(self, tx: str) -> str | None:
        return f"{self.explorer_url}/tx/{tx}" if self.explorer_url else None

    def _base(self, row: Any) -> dict[str, Any]:
        return {"event": row.event, "contract": row.contract, "block": row.block_number, "time": row.block_time,
                "tx": row.tx_hash, "tx_url": self._tx_url(row.tx_hash), "log_index": row.log_index,
                "informational": row.event in ACT_EVENTS}

    def _act_step(self, act: dict[str, Any]) -> dict[str, Any]:
        """A "revoked" / "redeemed" step: an act of the issuer on the order's cards (verify_api.registry_acts)."""
        details = {"batch_id": act["row"].batch_id, "cards": act["cards"], "indices": act["indices"],
                   "whole_batch": act["whole_batch"], "phase": act["phase"],
                   "while_order_open": act["phase"] == WHILE_ORDER_OPEN}
        if act["kind"] == "revoked":
            details.update(reason=act["reason"], reason_name=act["reason_name"])
        else:
            details["by"] = act["by"]
        return {"step": act["kind"], **self._base(act["row"]), "amounts": {}, "details": details}

    def _steps(self, row: Any, token: TokenMeta) -> list[dict[str, Any]]:
        args = json.loads(row.args)
        base = self._base(row)

        def step(name: str, amounts: dict[str, int] | None = None, **details: Any) -> dict[str, Any]:
            return {"step": name, **base, "amounts": {k: token.money(v) for k, v in (amounts or {}).items()},
                    "details": details}

        ev = row.event
        if ev == "OrderOpened":
            return [step("opened", {"unit_price": int(args["unitPrice"])}, product_id=int(args.get("productId", 0)),
                         min_expiry=int(args.get("minExpiry", 0)) or None,
                         quantity=int(args["quantity"]), buyer=args.get("buyer"), supplier=args.get("supplier"),
                         delivery_deadline=int(args["deliveryDeadline"]), dispute_window=int(args["disputeWindow"])),
                    step("funded", {"amount": int(args["amount"])}, buyer=args.get("buyer"))]
        if ev == "OrderDelivered":
            ranges = [{"start": int(r["start"]), "length": int(r["length"])} if isinstance(r, dict)
                      else {"start": int(r[0]), "length": int(r[1])} for r in args.get("ranges", [])]
            return [step("delivered", batch_id=args.get("batchId"), ranges=ranges,
                         cards=sum(r["length"] for r in ranges), sealed_hash=args.get("sealedHash"))]
        if ev == "OrderDisputed":
            deadline = args.get("deadline")
            return [step("disputed", deadline=int(deadline) if deadline is not None else None)]
        if ev == "DisputeWithdrawn":
            return [step("dispute_withdrawn", settled=bool(args.get("settled")))]
        if ev == "DisputeExpired":
            return [step("dispute_expired", deadline=int(args["deadline"]))]
        if ev in ("OrderConfirmed", "OrderReleased"):
            extra = {"caller": args.get("caller")} if ev == "OrderReleased" else {}
            return [step("confirmed" if ev == "OrderConfirmed" else "released",
                         {"to_supplier": int(args["supplierAmount"]), "fee": int(args["fee"]),
                          "to_buyer": int(args["buyerRefund"])},
                         revoked_cards=int(args["revokedCards"]), **extra)]
        if ev == "OrderResolved":
            fee = int(args["fee"])
            return [step("resolved", {"to_buyer": int(args["buyerAmount"]),
                                      "to_supplier": int(args["supplierAmount"]) - fee, "fee": fee},
                         arbiter=args.get("arbiter"))]
        if ev == "OrderCancelled":
            return [step("refunded", {"to_buyer": int(args["refund"])})]
        return []

    # -------------------------------------------------------------- the answer

    def answer(self, order_id: int) -> dict[str, Any]:
        """The JSON of GET /v1/orders/{id}; ApiError 404 for an order that does not exist."""
        order, ranges, block, state = self.read(order_id)
        if not order.exists:
            raise order_not_found(order_id)
        esc = self.escrow()
        token = self.token(order.token)
        body = order_json(order, token, ranges)
        chain_id = esc.client.chain_id
        rows, acts, indexed = self._indexed(chain_id, esc.address, order_id)
        timeline: list[dict[str, Any]] = []
        for row in rows:
            timeline.extend(self._steps(row, token))
        have = {s["step"] for s in timeline}
        if acts:
            timeline.extend(self._act_step(a) for a in acts)
            timeline.sort(key=lambda s: (s["block"], s["log_index"]))  # stable: opened before funded
        missing = [s for s in EXPECTED_STEPS.get(body["status"], ()) if s not in have]
        opened = next((s for s in timeline if s["step"] == "opened"), None)
        product = self.product(order.product_id)
        body["product"] = product
        body["sku"] = product["sku"] if product else None
        body["dispute_window_text"] = format_duration(order.dispute_window)
        body["timeline"] = timeline
        body["indexer"] = {"indexed_block": indexed, "chain_block": block,
                           "behind": None if indexed is None else max(0, block - indexed),
                           "complete": not missing, "missing": missing}
        body["chain"] = {"state": state, "block": block, "chain_id": chain_id, "escrow": esc.address}
        body["links"] = {"self": f"/v1/orders/{order_id}", "page": f"{self.public_url}/o/{order_id}"}
        return body


def install(app: Any, deps: Any) -> None:
    """The lifespan hook: the app's OrderView, unless the caller set one on ``app.state.orders``."""
    if getattr(app.state, "orders", None) is None:
        app.state.orders = OrderView.from_deps(deps)
