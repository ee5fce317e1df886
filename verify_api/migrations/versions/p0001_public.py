"""The public database: published batches, cards, tree tiles, meta; scans; the event indexer's tables.

Revision ID: p0001
Revises:
Create Date: 2026-12-01

Written by hand. Models: verify_api/storage/models.py, verify_api/models.py, verify_api/storage/index_models.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "p0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "pub_batches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.String(66), nullable=False),
        sa.Column("issuer_address", sa.String(42), nullable=False),
        sa.Column("sku", sa.String(32), nullable=False),
        sa.Column("face_value", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("expiry", sa.BigInteger(), nullable=False),
        sa.Column("code_form", sa.Integer(), nullable=False),
        sa.Column("card_count", sa.Integer(), nullable=False),
        sa.Column("root", sa.String(66), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("registry_address", sa.String(42), nullable=False),
        sa.Column("anchor_tx", sa.String(66), nullable=True),
        sa.Column("anchor_block", sa.BigInteger(), nullable=True),
        sa.Column("anchored_at", sa.BigInteger(), nullable=False),
        sa.Column("published_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_pub_batches"),
        sa.UniqueConstraint("batch_id", name="uq_pub_batches_batch_id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_pub_batches_issuer_address", "pub_batches", ["issuer_address"])

    op.create_table(
        "pub_cards",
        sa.Column("serial", sa.String(17), nullable=False),
        sa.Column("batch_pk", sa.Integer(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("code_commitment", sa.LargeBinary(32), nullable=False),
        sa.Column("tree_pos", sa.Integer(), nullable=False),
        sa.Column("tile", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["batch_pk"], ["pub_batches.id"], name="fk_pub_cards_batch_pk_pub_batches",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("serial", name="pk_pub_cards"),
        sa.UniqueConstraint("batch_pk", "index", name="uq_pub_cards_batch_pk_index"),
    )

    op.create_table(
        "pub_tiles",
        sa.Column("batch_pk", sa.Integer(), nullable=False),
        sa.Column("tile", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["batch_pk"], ["pub_batches.id"], name="fk_pub_tiles_batch_pk_pub_batches",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("batch_pk", "tile", name="pk_pub_tiles"),
    )

    op.create_table(
        "pub_meta",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_pub_meta"),
    )

    op.create_table(
        "api_scans",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("serial", sa.String(17), nullable=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("verdict", sa.String(20), nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=True),
        sa.Column("client", sa.String(16), nullable=False),
        sa.Column("ua_family", sa.String(24), nullable=False),
        sa.Column("country", sa.String(2), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_scans"),
    )
    op.create_index("ix_api_scans_serial_at", "api_scans", ["serial", "at"])
    op.create_index("ix_api_scans_at", "api_scans", ["at"])

    op.create_table(
        "api_card_stats",
        sa.Column("serial", sa.String(17), nullable=False),
        sa.Column("scans", sa.BigInteger(), nullable=False),
        sa.Column("checks", sa.BigInteger(), nullable=False),
        sa.Column("failed_checks", sa.BigInteger(), nullable=False),
        sa.Column("first_scan_at", TS, nullable=True),
        sa.Column("first_check_at", TS, nullable=True),
        sa.Column("last_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("serial", name="pk_api_card_stats"),
    )

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
    op.drop_table("api_card_stats")
    op.drop_index("ix_api_scans_at", table_name="api_scans")
    op.drop_index("ix_api_scans_serial_at", table_name="api_scans")
    op.drop_table("api_scans")
    op.drop_table("pub_meta")
    op.drop_table("pub_tiles")
    op.drop_table("pub_cards")
    op.drop_index("ix_pub_batches_issuer_address", table_name="pub_batches")
    op.drop_table("pub_batches")
