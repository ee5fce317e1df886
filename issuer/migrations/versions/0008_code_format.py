"""Batches record the format of their generated codes, so that a typed code is read by its batch's rule.

Revision ID: 0008_code_format
Revises: 0007_erp
Create Date: 2026-12-02

Written by hand. Model: ``issuer.storage.models.Batch.code_format`` (``issuer.codes.CodeFormat.to_json``; NULL for
imported codes). Batches minted before have the default format when their codes were committed folded (only
generated codes were: ``cardproof mint --codes-from`` imported them exactly), and NULL otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_code_format"
down_revision: str | None = "0007_erp"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: ``issuer.codes.DEFAULT_FORMAT.to_json()`` when this migration was written (kept literal: migrations do not move).
DEFAULT_FORMAT_JSON = '{"alphabet":"0123456789ABCDEFGHJKMNPQRSTVWXYZ","group_size":5,"length":20,"separator":"-"}'


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("code_format", sa.Text(), nullable=True))
    batches = sa.table("batches", sa.column("code_form", sa.Integer()), sa.column("code_format", sa.Text()))
    op.execute(batches.update().where(batches.c.code_form == 1).values(code_format=DEFAULT_FORMAT_JSON))


def downgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("code_format")
