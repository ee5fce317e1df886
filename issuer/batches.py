"""Batch listings for the CLI and the API."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from issuer.products import format_face_value
from issuer.storage.models import Batch


def summary(batch: Batch) -> dict[str, Any]:
    return {
        "batch_id": batch.batch_id,
        "state": batch.state,
        "root": batch.root,
        "anchor_tx": batch.anchor_tx,
        "anchor_block": batch.anchor_block,
        "issuer": batch.issuer_address,
        "sku": batch.sku,
        "face_value": format_face_value(int(batch.face_value), batch.currency),
        "currency": batch.currency,
        "card_count": batch.card_count,
        "expiry": int(batch.expiry or 0),
        "revoked": bool(batch.revoked),
        "error": batch.error,
        "created_at": batch.created_at.isoformat() if batch.created_at else None,
    }


def list_batch_summaries(sessions: sessionmaker[Session], issuer: str | None = None) -> list[dict[str, Any]]:
    with sessions() as session:
        q = select(Batch).order_by(Batch.created_at, Batch.id)
        if issuer:
            q = q.where(Batch.issuer_address == issuer)
        return [summary(b) for b in session.scalars(q)]
