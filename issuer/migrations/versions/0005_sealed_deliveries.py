"""Sealed deliveries: the blob of each escrow delivery the supplier sealed (issuer/delivery_seal.py).

Revision ID: 0005_sealed_deliveries
Revises: 0004_chain_acts
Create Date: 2026-12-02

Written by hand. Model: ``issuer.storage.models.SealedDelivery``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_sealed_deliveries"
down_revision: str | None = "0004_chain_acts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sealed_deliveries",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("escrow", sa.String(42), nullable=False),
        sa.Column("order_id", sa.String(78), nullable=False),
        sa.Column("batch_id", sa.String(66), nullable=False),
        sa.Column("ranges", sa.Text(), nullable=False),
        sa.Column("sealed_hash", sa.String(66), nullable=False),
        sa.Column("blob", sa.LargeBinary(), nullable=False),
        sa.Column("uploaded_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sealed_deliveries"),
        sa.UniqueConstraint("chain_id", "escrow", "order_id", name="uq_sealed_deliveries_chain_id_escrow_order_id"),
    )


def downgrade() -> None:
    op.drop_table("sealed_deliveries")
