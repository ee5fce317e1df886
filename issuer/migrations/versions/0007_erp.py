"""The supplier's ERP API: API key roles, idempotency keys, mint jobs, webhook events and deliveries.

Revision ID: 0007_erp
Revises: 0006_node_orders
Create Date: 2026-12-02

Written by hand. Models: ``issuer.storage.models`` ApiKeyRole, IdempotencyKey, MintJob, WebhookEvent,
WebhookDelivery.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_erp"
down_revision: str | None = "0006_node_orders"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "api_key_roles",
        sa.Column("api_key_pk", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.CheckConstraint("role IN ('redeemer', 'erp')", name="ck_api_key_roles_role"),
        sa.ForeignKeyConstraint(["api_key_pk"], ["api_keys.id"], ondelete="CASCADE",
                                name="fk_api_key_roles_api_key_pk_api_keys"),
        sa.PrimaryKeyConstraint("api_key_pk", name="pk_api_key_roles"),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("api_key_id", sa.String(24), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("path", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("completed_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_idempotency_keys"),
        sa.UniqueConstraint("api_key_id", "method", "path", "key", name="uq_idempotency_keys_api_key_id_method_path_key"),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])
    op.create_table(
        "mint_jobs",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("issuer_address", sa.String(42), nullable=False),
        sa.Column("api_key_id", sa.String(24), nullable=True),
        sa.Column("sku", sa.String(32), nullable=False),
        sa.Column("face_value", sa.String(32), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("expires", sa.String(40), nullable=True),
        sa.Column("anchor", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("progress_done", sa.Integer(), nullable=False),
        sa.Column("progress_total", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.String(66), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint("state IN ('queued', 'minting', 'anchoring', 'done', 'failed')",
                           name="ck_mint_jobs_state"),
        sa.PrimaryKeyConstraint("id", name="pk_mint_jobs"),
    )
    op.create_index("ix_mint_jobs_state", "mint_jobs", ["state"])
    op.create_table(
        "webhook_events",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_events"),
        sa.UniqueConstraint("event_id", name="uq_webhook_events_event_id"),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("event_pk", BIGINT_PK, nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("delivered_at", TS, nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint("state IN ('pending', 'delivered', 'dead')", name="ck_webhook_deliveries_state"),
        sa.ForeignKeyConstraint(["event_pk"], ["webhook_events.id"], ondelete="CASCADE",
                                name="fk_webhook_deliveries_event_pk_webhook_events"),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_deliveries"),
    )
    op.create_index("ix_webhook_deliveries_event_pk", "webhook_deliveries", ["event_pk"])
    op.create_index("ix_webhook_deliveries_state_next", "webhook_deliveries", ["state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_state_next", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_event_pk", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_events")
    op.drop_index("ix_mint_jobs_state", table_name="mint_jobs")
    op.drop_table("mint_jobs")
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    op.drop_table("api_key_roles")
