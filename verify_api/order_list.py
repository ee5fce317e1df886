"""The escrow's orders as a list (``cardproof order list``), read from the chain alone: no database, no secret.

The buyer, the supplier and the platform see the same list: every ``OrderOpened`` event of the escrow (filtered by
its indexed ``buyer`` and ``supplier`` on the node, from the block the escrow was deployed in), each with the order
as the escrow holds it now (``order(id)``: status, quantity, amount). Amounts are in token units (the token's
``decimals()``), the product is the registry's (SKU, face value, currency) and the delivery deadline a UTC date.
Events are read in chunks of :data:`LOG_CHUNK` blocks (public RPC nodes cap a ``getLogs`` range).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from chain.errors import ChainError
from chain.escrow_view import STATUS_NAMES, TokenMeta, token_meta

__all__ = ["LOG_CHUNK", "ORDER_STATUSES", "OrderFilterError", "OrderRow", "list_orders", "parse_status"]

LOG_CHUNK = 10_000
#: The statuses an order can be listed with (``none`` is no order).
ORDER_STATUSES = STATUS_NAMES[1:]


class OrderFilterError(ChainError, ValueError):
    """A filter of ``order list`` that names no status or no address."""

    code = "invalid_filter"


def parse_status(text: str | None) -> str | None:
    if text is None:
        return None
    name = text.strip().lower()
    if name not in ORDER_STATUSES:
        raise OrderFilterError(f"--status: {text!r} is not an order status ({', '.join(ORDER_STATUSES)})")
    return name


@dataclass(frozen=True)
class OrderRow:
    order_id: int
    buyer: str
    supplier: str
    product_id: int
    product: dict[str, Any] | None
    quantity: int
    amount: dict[str, Any]
    status: str
    delivery_deadline: int
    opened_block: int

    @property
    def deadline_date(self) -> str:
        return dt.datetime.fromtimestamp(self.delivery_deadline, dt.UTC).strftime("%Y-%m-%d")

    def to_json(self) -> dict[str, Any]:
        return {"order_id": self.order_id, "buyer": self.buyer, "supplier": self.supplier,
                "product_id": self.product_id, "product": self.product, "quantity": self.quantity,
                "amount": self.amount, "status": self.status, "delivery_deadline": self.delivery_deadline,
                "deadline_date": self.deadline_date, "opened_block": self.opened_block}

    def line(self) -> str:
        p = self.product
        what = f"{p['sku']} {p['face_value']} {p['currency']}" if p else f"product {self.product_id}"
        return (f"{self.order_id:>6}  {self.status:9}  {self.quantity:>6} x {what:24}  "
                f"{self.amount['amount']:>12} {self.amount['symbol']:6}  by {self.deadline_date}  "
                f"buyer {self.buyer}  supplier {self.supplier}")


def _face_value(minor: int, currency: str) -> str:
    try:
        from babel.numbers import get_currency_precision

        digits = get_currency_precision(currency)
    except Exception:  # noqa: BLE001 - a currency babel does not know: minor units as they are
        return str(minor)
    return f"{Decimal(minor).scaleb(-digits):.{digits}f}"


def _opened_logs(escrow: Any, from_block: int, filters: dict[str, str]) -> list[Any]:
    head = escrow.client.block_number()
    event = escrow.contract.events.OrderOpened()
    out: list[Any] = []
    for lo in range(max(0, from_block), head + 1, LOG_CHUNK):
        out.extend(event.get_logs(from_block=lo, to_block=min(head, lo + LOG_CHUNK - 1), argument_filters=filters))
    return out


def list_orders(escrow: Any, registry: Any, *, buyer: str | None = None, supplier: str | None = None,
                status: str | None = None, from_block: int = 0) -> list[OrderRow]:
    """The escrow's orders (of ``buyer``, to ``supplier``, in ``status``), oldest first."""
    status = parse_status(status)
    filters = {k: v for k, v in (("buyer", buyer), ("supplier", supplier)) if v is not None}
    tokens: dict[str, TokenMeta] = {}
    products: dict[int, dict[str, Any] | None] = {}
    rows: dict[int, OrderRow] = {}
    for entry in _opened_logs(escrow, from_block, filters):
        oid = int(entry["args"]["orderId"])
        order = escrow.order(oid)
        name = STATUS_NAMES[int(order.status)]
        if name == "none" or (status is not None and name != status):
            continue  # reorganised away, or filtered out
        token = tokens.get(order.token)
        if token is None:
            token = tokens[order.token] = token_meta(escrow.client, order.token)
        product_id = int(entry["args"]["productId"])
        if product_id not in products:
            spec = registry.product(product_id) if registry is not None else None
            products[product_id] = None if spec is None else {
                "sku": spec.sku_text, "face_value": _face_value(spec.face_value, spec.currency_text),
                "currency": spec.currency_text}
        rows[oid] = OrderRow(oid, order.buyer, order.supplier, product_id, products[product_id], order.quantity,
                             token.money(order.amount), name, order.delivery_deadline, int(entry["blockNumber"]))
    return [rows[k] for k in sorted(rows)]
