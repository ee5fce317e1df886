"""One pooled HTTP client per process, for the HTTP both sides speak besides JSON-RPC (sealed deliveries uploaded by
the supplier, fetched by buyers). A client per request would build a TLS context each time: most of a busy node's
CPU once. Knows no product: it is plain httpx.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["pooled_http_client"]

_client: Any = None
_lock = threading.Lock()


def pooled_http_client() -> Any:
    """The process's shared ``httpx.Client`` (no redirects followed; give each request its own timeout)."""
    global _client
    if _client is None:
        import httpx

        with _lock:
            if _client is None:
                _client = httpx.Client(follow_redirects=False)
    return _client
