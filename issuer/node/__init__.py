"""The supplier's node: watches the escrow for orders to this supplier and fulfils each one exactly once.

* :mod:`issuer.node.config`  – :class:`NodeConfig` (a TOML file or the environment).
* :mod:`issuer.node.stock`   – stock per product and :func:`pick` (cards of one batch, never a partial delivery).
* :mod:`issuer.node.fulfil`  – fulfil one order idempotently (pick, seal, deliver, publish).
* :mod:`issuer.node.events`  – the event hook (``on_event(kind, payload)``) and its kinds.
* :mod:`issuer.node.crash`   – the SIGKILL test hook (CARDPROOF_NODE_CRASH_AT), off by default.
* :mod:`issuer.node.watcher` – reads OrderOpened logs for this supplier into ``node_orders`` (follows reorgs).
* :mod:`issuer.node.runner`  – :class:`SupplierNode`: the watcher plus a thread pool of fulfilments.

The ``node_orders`` states::

    seen ──► picked ──► delivered ──► published
      │  ▲                  ▲
      ▼  │ (stock arrives)  │ (a delivery the chain lost is sent again)
    out_of_stock
    closed : no longer funded on chain and never delivered by us (cancelled, deadline passed, reorganised away)
    failed : cannot be delivered by the node (bad seal key, delivery conflict); reported
"""

from issuer.node.config import NodeConfig, load_config
from issuer.node.runner import SupplierNode

__all__ = ["NodeConfig", "SupplierNode", "load_config"]
