"""Chain acts: every on-chain act of the supplier's side recorded as an intent (issuer/acts.py).

Revision ID: 0004_chain_acts
Revises: 0003_two_sides
Create Date: 2026-12-01

Written by hand. Model: ``issuer.storage.models.ChainAct``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_chain_acts"
down_revision: str | None = "0003_two_sides"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "chain_acts",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(66), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=True),
        sa.Column("contract", sa.String(42), nullable=True),
        sa.Column("account", sa.String(42), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("tx_hash", sa.String(66), nullable=True),
        sa.Column("nonce", sa.BigInteger(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=True),
        sa.Column("block_hash", sa.String(66), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("lease_until", TS, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint("state IN ('pending', 'broadcast', 'mined', 'final', 'lost', 'failed')",
                           name="ck_chain_acts_state"),
        sa.PrimaryKeyConstraint("id", name="pk_chain_acts"),
    )
    op.create_index("ix_chain_acts_kind_subject", "chain_acts", ["kind", "subject"])
    op.create_index("ix_chain_acts_tx_hash", "chain_acts", ["tx_hash"])
    op.create_index("ix_chain_acts_state", "chain_acts", ["state"])


def downgrade() -> None:
    op.drop_index("ix_chain_acts_state", table_name="chain_acts")
    op.drop_index("ix_chain_acts_tx_hash", table_name="chain_acts")
    op.drop_index("ix_chain_acts_kind_subject", table_name="chain_acts")
    op.drop_table("chain_acts")
