"""Node orders: the escrow orders the supplier's node fulfils (issuer/node/).

Revision ID: 0006_node_orders
Revises: 0005_sealed_deliveries
Create Date: 2026-12-02

Written by hand. Model: ``issuer.storage.models.NodeOrder``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_node_orders"
down_revision: str | None = "0005_sealed_deliveries"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "node_orders",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("escrow", sa.String(42), nullable=False),
        sa.Column("order_id", sa.String(78), nullable=False),
        sa.Column("buyer", sa.String(42), nullable=False),
        sa.Column("product_id", sa.BigInteger(), nullable=False),
        sa.Column("min_expiry", sa.BigInteger(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("delivery_deadline", sa.BigInteger(), nullable=False),
        sa.Column("opened_block", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("batch_id", sa.String(66), nullable=True),
        sa.Column("ranges", sa.Text(), nullable=True),
        sa.Column("deliver_tx", sa.String(66), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint("state IN ('seen', 'picked', 'delivered', 'published', 'out_of_stock', 'closed', "
                           "'failed')", name="ck_node_orders_state"),
        sa.PrimaryKeyConstraint("id", name="pk_node_orders"),
        sa.UniqueConstraint("chain_id", "escrow", "order_id", name="uq_node_orders_chain_id_escrow_order_id"),
    )
    op.create_index("ix_node_orders_state", "node_orders", ["state"])


def downgrade() -> None:
    op.drop_index("ix_node_orders_state", table_name="node_orders")
    op.drop_table("node_orders")
