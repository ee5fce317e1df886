"""Sealed deliveries of escrow orders, kept for their buyers (verify_api/sealed_store.py).

Revision ID: p0002
Revises: p0001
Create Date: 2026-12-02

Written by hand. Model: verify_api/storage/models.py PubSealedDelivery.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "p0002"
down_revision: str | None = "p0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "pub_sealed_deliveries",
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("escrow", sa.String(42), nullable=False),
        sa.Column("order_id", sa.String(78), nullable=False),
        sa.Column("sealed_hash", sa.String(66), nullable=False),
        sa.Column("blob", sa.LargeBinary(), nullable=False),
        sa.Column("stored_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("chain_id", "escrow", "order_id", name="pk_pub_sealed_deliveries"),
    )


def downgrade() -> None:
    op.drop_table("pub_sealed_deliveries")
