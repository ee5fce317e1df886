"""What the node tells the outside: ``on_event(kind, payload)``, a callable the operator (ERP, webhooks) plugs in.

Kinds: ``order.delivered``, ``order.published``, ``order.out_of_stock``, ``order.failed``, ``order.closed``,
``stock.low``. Payloads are JSON-able dicts; they never hold a code. A hook that raises is logged and ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("cardproof.node")

ORDER_DELIVERED = "order.delivered"
ORDER_PUBLISHED = "order.published"
ORDER_OUT_OF_STOCK = "order.out_of_stock"
ORDER_FAILED = "order.failed"
ORDER_CLOSED = "order.closed"
STOCK_LOW = "stock.low"
KINDS = (ORDER_DELIVERED, ORDER_PUBLISHED, ORDER_OUT_OF_STOCK, ORDER_FAILED, ORDER_CLOSED, STOCK_LOW)

EventHook = Callable[[str, dict[str, Any]], None]


def emit(hook: EventHook | None, kind: str, payload: dict[str, Any]) -> None:
    if hook is None:
        return
    try:
        hook(kind, payload)
    except Exception as exc:  # noqa: BLE001 - an operator's hook must not stop the node
        log.warning("event hook failed on %s: %s", kind, " ".join(str(exc).split())[:200])
