"""Publish a batch: send its public dump (leaves and tree; no code, no opening) to public services.

The public service stores it only if the chain holds the same root for the batch (``verify_api.publish``);
so does every mirror. Publishing again is harmless (the service answers that it has the batch already).
"""

from __future__ import annotations

import gzip
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from issuer.errors import IssuerError
from issuer.export import batch_dump, dump_bytes
from issuer.storage import repository as repo

__all__ = ["PublishFailed", "publish_batch"]


class PublishFailed(IssuerError):
    """A public service did not take the dump."""

    code = "publish_failed"


def publish_batch(sessions: sessionmaker[Session], batch_id: str, api: str, *, timeout: float = 300.0
                  ) -> dict[str, Any]:
    """PUT the batch's dump to ``{api}/v1/batches/{batch_id}/dump`` (gzip); the service's answer."""
    import httpx

    with sessions() as session:
        batch = repo.get_batch(session, batch_id)
        if batch.state != "anchored":
            raise PublishFailed(f"batch {batch.batch_id} is {batch.state}: anchor it first (cardproof anchor)")
        bid = batch.batch_id
    body = gzip.compress(dump_bytes(batch_dump(sessions, bid)), compresslevel=5)
    url = f"{api.rstrip('/')}/v1/batches/{bid}/dump"
    try:
        r = httpx.put(url, content=body, timeout=timeout,
                      headers={"Content-Type": "application/json", "Content-Encoding": "gzip",
                               "User-Agent": "cardproof-publish/1"})
    except httpx.HTTPError as exc:
        raise PublishFailed(f"cannot reach the public service at {api} ({type(exc).__name__})") from None
    try:
        answer = r.json()
    except ValueError:
        raise PublishFailed(f"{url} answered {r.status_code} without JSON") from None
    if r.status_code != 200:
        err = answer.get("error", {}) if isinstance(answer, dict) else {}
        raise PublishFailed(f"{api} refused the dump: {err.get('code', r.status_code)}: {err.get('message', '')}")
    return {**answer, "api": api.rstrip("/")}
