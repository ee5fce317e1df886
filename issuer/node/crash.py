"""Test hook: ``CARDPROOF_NODE_CRASH_AT=<step>`` makes the node SIGKILL itself at that step of a delivery, to test
that a restart delivers each order exactly once. Off by default (unset); read only by ``issuer.node``.

Steps, in order: ``picked`` (cards reserved in node_orders), ``sealed`` (sealed delivery stored), ``signed`` (the
deliver transaction's hash stored, not yet broadcast), ``broadcast`` (sent, no receipt yet), ``mined`` (delivered on
chain, node_orders not yet updated), ``uploaded`` (published everywhere, node_orders not yet updated).
"""

from __future__ import annotations

import os
import signal

STEPS = ("picked", "sealed", "signed", "broadcast", "mined", "uploaded")
ENV = "CARDPROOF_NODE_CRASH_AT"


def crash_step() -> str | None:
    step = os.environ.get(ENV, "").strip().lower()
    return step if step in STEPS else None


def crash_point(step: str) -> None:
    """SIGKILL this process if the test hook asks for it at ``step``."""
    if crash_step() == step:
        os.kill(os.getpid(), signal.SIGKILL)
