"""Event indexer: chain events of the registry and the escrow, recent block hashes, per-chain cursors.

Revision ID: 0002_index
Revises: api_0001
Create Date: 2025-01-03

Written by hand. Models: issuer/storage/index_models.py (same Base and naming convention as
issuer.storage.models).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_index"
down_revision: str | None = "api_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "chain_events",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.String(66), nullable=False),
        sa.Column("block_time", sa.BigInteger(), nullable=True),
        sa.Column("tx_hash", sa.String(66), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("contract", sa.String(32), nullable=False),
        sa.Column("address", sa.String(42), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("order_id", sa.BigInteger(), nullable=True),
        sa.Column("batch_id", sa.String(66), nullable=True),
        sa.Column("args", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_chain_events"),
        sa.UniqueConstraint("chain_id", "tx_hash", "log_index", name="uq_chain_events_chain_id_tx_hash_log_index"),
    )
    op.create_index("ix_chain_events_chain_id_block_number", "chain_events", ["chain_id", "block_number"])
    op.create_index("ix_chain_events_order_id", "chain_events", ["order_id"])
    op.create_index("ix_chain_events_batch_id", "chain_events", ["batch_id"])

    op.create_table(
        "indexed_blocks",
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.String(66), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", "block_number", name="pk_indexed_blocks"),
    )

    op.create_table(
        "index_cursors",
        sa.Column("chain_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.String(66), nullable=True),
        sa.Column("contracts", sa.Text(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("chain_id", name="pk_index_cursors"),
    )


def downgrade() -> None:
    op.drop_table("index_cursors")
    op.drop_table("indexed_blocks")
    op.drop_index("ix_chain_events_batch_id", table_name="chain_events")
    op.drop_index("ix_chain_events_order_id", table_name="chain_events")
    op.drop_index("ix_chain_events_chain_id_block_number", table_name="chain_events")
    op.drop_table("chain_events")
