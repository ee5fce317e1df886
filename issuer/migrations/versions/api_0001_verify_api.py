"""Verification API: scans, per-card scan statistics, redeemers' API keys.

Revision ID: api_0001
Revises: 0001
Create Date: 2025-01-02

Models: verify_api/models.py (same Base and naming convention as issuer.storage.models).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "api_0001"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
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
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(24), nullable=False),
        sa.Column("key_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("issuer_address", sa.String(42), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.Column("last_used_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_id", name="uq_api_keys_key_id"),
    )
    op.create_index("ix_api_keys_issuer_address", "api_keys", ["issuer_address"])


def downgrade() -> None:
    op.drop_index("ix_api_keys_issuer_address", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("api_card_stats")
    op.drop_index("ix_api_scans_at", table_name="api_scans")
    op.drop_index("ix_api_scans_serial_at", table_name="api_scans")
    op.drop_table("api_scans")
